package notices

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/authd/authd/domain"
)

// account is what a notice needs of the account its event belongs to.
type account struct {
	exists   bool   // verified and not gone (expired, erased): there is someone to tell
	email    string // the address the account has now
	locale   string // the language of its mails; empty: English
	passkeys map[uuid.UUID]string
	farewell *farewell // a deleted account's: what its notice needs
}

// farewell is a deleted account as its farewell notice sees it: the address
// and locale it had, kept sealed for the notice (Farewells), or none to
// tell when there is none kept.
func (c *Consumer) farewell(ctx context.Context, user uuid.UUID) (account, error) {
	if c.d.Farewells == nil {
		return account{}, nil
	}
	fw, found, err := c.d.Farewells.open(ctx, c.d.Pool, user)
	if err != nil || !found {
		return account{}, err
	}
	return account{exists: true, email: fw.Email, locale: fw.Locale, farewell: &fw}, nil
}

// loadAccount reads the account from its own stream (public parts only), the
// write side: a notice then never waits for the users projection, and goes
// to the address the account has when it is sent.
func (c *Consumer) loadAccount(ctx context.Context, user uuid.UUID) (account, error) {
	events, err := c.d.Store.ReadStream(ctx, domain.UserStream(user))
	if err != nil {
		return account{}, err
	}
	u := &domain.User{}
	acc := account{passkeys: make(map[uuid.UUID]string)}
	for _, e := range events {
		d, err := decode(e)
		if err != nil {
			return account{}, fmt.Errorf("account %s: %w", user, err)
		}
		u.Apply(d, e.OccurredAt)
		switch d := d.(type) {
		case *domain.PasskeyAdded:
			acc.passkeys[d.PasskeyID] = d.Name
		case *domain.PasskeyRenamed:
			acc.passkeys[d.PasskeyID] = d.Name
		}
	}
	// An erased account reads with no address (its personal fields are
	// gone): there is nobody to tell, and nowhere to send.
	acc.exists, acc.email, acc.locale = u.Exists() && u.EmailVerified && u.Email != "", u.Email, u.Locale
	return acc, nil
}
