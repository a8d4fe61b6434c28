package commands

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/notices"
	"github.com/authd/authd/internal/ratelimit"
	"github.com/authd/authd/internal/tokens"
	"github.com/authd/authd/projections"
)

// Farewells keeps a deleted account's address, sealed, for its farewell
// notice (notices.Farewells): the account's events can no longer be read
// once it is erased.
type Farewells interface {
	Keep(user uuid.UUID, email, locale, device, ip string) (eventstore.Statement, error)
}

// eraser gives the statements that erase what the write side keeps of a
// person, committed with the event that ends the account (AccountDeleted,
// SignupExpired), so that nothing of it outlives the commit however the
// process fares after it (README: "Erasure").
type eraser struct {
	throttle Throttle
}

// statements erase the account u: its data key (every personal field of its
// events), its messages in the stream (once the relay has published this
// commit), and its rows in the write-side tables that name it or its
// addresses. Its unique keys are released by the caller (Change.Releases).
func (e eraser) statements(u *domain.User) []eventstore.Statement {
	emails := []string{u.Email}
	if u.PendingEmail != "" {
		emails = append(emails, u.PendingEmail)
	}
	var keys []string
	for _, class := range []ratelimit.Class{ratelimit.Known, ratelimit.Unknown} {
		keys = append(keys, secondFactorKey(u.ID, class))
		for _, email := range emails {
			keys = append(keys, loginKey(email, class), codesKey(email, class), emailCodeKey(email, class))
		}
	}
	return append([]eventstore.Statement{
		eventstore.Shred(u.ID),
		eventstore.QueueStreamErasure(u.ID),
		// The codes of its addresses, and those of any new address it asked
		// to move to (a payload of its id), an earlier one too.
		{SQL: `WITH codes AS (DELETE FROM email_codes WHERE email = ANY($2) OR (purpose = $3 AND payload = $4)),
			networks AS (DELETE FROM known_networks WHERE user_id = $1),
			guessing AS (DELETE FROM code_guessing WHERE user_id = $1),
			challenges AS (DELETE FROM two_factor_challenges WHERE user_id = $1)
			DELETE FROM webauthn_ceremonies WHERE user_id = $1`, Args: []any{u.ID, emails, PurposeEmailChange, u.ID[:]}},
		e.throttle.Forget(keys...),
	}, notices.ForgetDevices(u.ID)...)
}

// erasable is an account as its erasure needs it: the user, the Google
// account it is linked to and its passkeys, whose keys it releases.
type erasable struct {
	google   *domain.GoogleUser
	passkeys *domain.UserPasskeys
}

func (a erasable) Apply(e domain.Event, at time.Time) {
	a.google.Apply(e, at)
	a.passkeys.Apply(e, at)
}

// StreamVersion is the version of the user's stream, which both count.
func (a erasable) StreamVersion() int64 { return a.passkeys.Version }

// releases are the unique keys the account holds: its address, its Google
// subject and its passkeys' credential ids, free again once it is gone.
func (a erasable) releases() []eventstore.Claim {
	owner := a.google.ID.String()
	out := []eventstore.Claim{{Scope: emailScope, Key: a.google.Email, Owner: owner}}
	if a.google.GoogleSubject != "" {
		out = append(out, eventstore.Claim{Scope: googleScope, Key: a.google.GoogleSubject, Owner: owner})
	}
	for _, k := range a.passkeys.Passkeys {
		out = append(out, eventstore.Claim{Scope: passkeyScope, Key: passkeyCredentialKey(k.Credential.ID), Owner: owner})
	}
	return out
}

// DeleteAccount erases the caller's account (API.md: DELETE /me) in one
// commit: every session revoked, AccountDeleted, every unique key released,
// the data key shredded, the stream's copies queued for deletion and the
// write-side rows deleted. The account's tokens are refused here at once,
// and on other instances when the revocation feed brings AccountDeleted.
// AccountDeleted carries no IP or user agent: it is what outside consumers
// keep.
func (a *Accounts) DeleteAccount(ctx context.Context, caller tokens.Claims, r Request) error {
	var revoked []uuid.UUID
	committed, err := retry(ctx, func() (eventstore.Committed, error) {
		acc := erasable{google: &domain.GoogleUser{}, passkeys: &domain.UserPasskeys{UserID: caller.UserID}}
		if err := a.load(ctx, domain.UserStream(caller.UserID), acc); err != nil {
			return eventstore.Committed{}, err
		}
		u := &acc.google.User
		events, err := u.Delete()
		if err != nil {
			return eventstore.Committed{}, ErrSessionEnded
		}
		c := a.newChange(Request{RequestID: r.RequestID})
		if revoked, err = a.sessions.revokeIn(ctx, c, u.ID, uuid.Nil, domain.RevokedByErasure); err != nil {
			return eventstore.Committed{}, err
		}
		email, locale := u.Email, u.Locale
		if err := c.record(acc, domain.UserStream(u.ID), u.TenantID, u.ID, events...); err != nil {
			return eventstore.Committed{}, err
		}
		c.write.Releases = acc.releases()
		c.also(a.erase.statements(u)...)
		if a.farewells != nil {
			st, err := a.farewells.Keep(u.ID, email, locale, r.Device, r.IP)
			if err != nil {
				return eventstore.Committed{}, err
			}
			c.also(st)
		}
		return a.commit(ctx, c)
	})
	if err != nil {
		return err
	}
	a.revoked.EraseUser(caller.UserID)
	a.sessions.revokedHere(revoked)
	a.waitFor(ctx, committed, projections.Users{}, projections.Sessions{})
	return nil
}
