package projections

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/authd/authd/eventstore"
)

// TwoFactor is a read model still to be built.
type TwoFactor struct{}

func (TwoFactor) Name() string     { return "twofactor" }
func (TwoFactor) Tables() []string { return nil }

func (TwoFactor) Apply(context.Context, pgx.Tx, []eventstore.Event) error { return nil }
