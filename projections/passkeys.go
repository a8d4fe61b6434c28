package projections

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/authd/authd/eventstore"
)

// Passkeys is a read model still to be built.
type Passkeys struct{}

func (Passkeys) Name() string     { return "passkeys" }
func (Passkeys) Tables() []string { return nil }

func (Passkeys) Apply(context.Context, pgx.Tx, []eventstore.Event) error { return nil }
