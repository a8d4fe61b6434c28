package commands

import (
	"context"

	"github.com/authd/authd/domain"
)

// challenge decides whether a first-factor login of u needs a second factor.
// When it does, it commits c (the login may have changed the account, e.g. a
// rehashed password) and returns the challenge; otherwise it returns nil and
// leaves c to the caller.
func (a *App) challenge(ctx context.Context, c *change, u *domain.User, amr []string, r Request) (*Challenge, error) {
	return nil, nil
}

// TwoFactorConfig is what the two-factor commands need beyond Deps.
type TwoFactorConfig struct{}

func twoFactorEvents(string) (domain.Event, bool) { return nil, false }
