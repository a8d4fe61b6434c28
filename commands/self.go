package commands

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"golang.org/x/text/language"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/codes"
	"github.com/authd/authd/internal/mail"
	"github.com/authd/authd/internal/ratelimit"
	"github.com/authd/authd/internal/tokens"
	"github.com/authd/authd/projections"
)

// PurposeEmailChange is the code mailed to the new address of an email
// change (POST /me/email).
const PurposeEmailChange = "email_change"

// maxLocaleLen bounds a locale before it is parsed: BCP 47 tags in use are
// far shorter.
const maxLocaleLen = 64

// ProfileInput is PATCH /me's body: nil fields are left as they are.
type ProfileInput struct {
	Name   *string
	Locale *string
}

// UpdateProfile changes the caller's name and locale (canonical BCP 47; ""
// goes back to English). Nothing that changes nothing is recorded.
func (a *Accounts) UpdateProfile(ctx context.Context, caller tokens.Claims, in ProfileInput, r Request) error {
	if in.Name != nil {
		name, err := cleanName("name", *in.Name)
		if err != nil {
			return err
		}
		in.Name = &name
	}
	if in.Locale != nil && *in.Locale != "" {
		locale, err := canonicalLocale(*in.Locale)
		if err != nil {
			return err
		}
		in.Locale = &locale
	}
	_, err := retry(ctx, func() (struct{}, error) {
		u, err := a.liveUser(ctx, caller.UserID)
		if err != nil {
			return struct{}{}, err
		}
		events := u.UpdateProfile(in.Name, in.Locale)
		if len(events) == 0 {
			return struct{}{}, nil
		}
		c := a.newChange(r)
		if err := c.record(u, domain.UserStream(u.ID), u.TenantID, u.ID, events...); err != nil {
			return struct{}{}, err
		}
		committed, err := a.commit(ctx, c)
		if err == nil {
			a.waitFor(ctx, committed, projections.Users{})
		}
		return struct{}{}, err
	})
	return err
}

// canonicalLocale parses a BCP 47 tag and gives its canonical form (de-ch
// is de-CH), which the mail templates are looked up by.
func canonicalLocale(s string) (string, error) {
	if len(s) > maxLocaleLen {
		return "", &ValidationError{Field: "locale", Message: "is not a BCP 47 language tag such as de or pt-BR"}
	}
	tag, err := language.Parse(s)
	if err != nil || tag == language.Und {
		return "", &ValidationError{Field: "locale", Message: "is not a BCP 47 language tag such as de or pt-BR"}
	}
	return tag.String(), nil
}

// liveUser loads the caller's account, or ErrSessionEnded when it is gone.
func (a *Accounts) liveUser(ctx context.Context, id uuid.UUID) (*domain.User, error) {
	u, err := a.loadUser(ctx, id)
	if err != nil {
		return nil, err
	}
	if !u.Exists() {
		return nil, ErrSessionEnded
	}
	return u, nil
}

// ChangePassword sets the caller's password (whether they had one or not)
// and revokes every other session of theirs in the same commit: should the
// process die after it, no session outlives the change. The caller's own
// session and its tokens live on. It answers how many sessions it revoked.
func (a *Accounts) ChangePassword(ctx context.Context, caller tokens.Claims, newPassword string, r Request) (int, error) {
	if err := checkPassword(newPassword); err != nil {
		var v *ValidationError
		if errors.As(err, &v) {
			return 0, &ValidationError{Field: "new_password", Message: v.Message}
		}
		return 0, err
	}
	hash, err := a.hasher.Hash(ctx, newPassword)
	if err != nil {
		return 0, translate(err)
	}
	var revoked []uuid.UUID
	at, err := retry(ctx, func() (eventstore.Cursor, error) {
		u, err := a.liveUser(ctx, caller.UserID)
		if err != nil {
			return eventstore.Cursor{}, err
		}
		c := a.newChange(r)
		if err := c.record(u, domain.UserStream(u.ID), u.TenantID, u.ID, u.ChangePassword(hash)...); err != nil {
			return eventstore.Cursor{}, err
		}
		if revoked, err = a.sessions.revokeIn(ctx, c, u.ID, caller.SessionID, domain.RevokedByPasswordChange); err != nil {
			return eventstore.Cursor{}, err
		}
		committed, err := a.commit(ctx, c)
		return committed.Last, err
	})
	if err != nil {
		return 0, err
	}
	a.sessions.revokedHere(revoked)
	a.wait(ctx, at, projections.Sessions{})
	return len(revoked), nil
}

// RequestEmailChange mails a code to newEmail that moves the caller's
// account there (VerifyEmailChange). When the address is taken, by anyone,
// the caller included, it answers the same after the same work: the
// request is recorded and a code issued, and the mail's job sends nothing.
func (a *Accounts) RequestEmailChange(ctx context.Context, caller tokens.Claims, newEmail string, r Request) error {
	email, err := NormalizeEmail(newEmail)
	if err != nil {
		var v *ValidationError
		if errors.As(err, &v) {
			return &ValidationError{Field: "new_email", Message: v.Message}
		}
		return err
	}
	type requested struct {
		locale string
		taken  bool
	}
	req, err := retry(ctx, func() (requested, error) {
		u, err := a.liveUser(ctx, caller.UserID)
		if err != nil {
			return requested{}, err
		}
		_, taken, err := a.emailOwner(ctx, email)
		if err != nil {
			return requested{}, err
		}
		c := a.newChange(r)
		if err := c.record(u, domain.UserStream(u.ID), u.TenantID, u.ID, u.RequestEmailChange(email)...); err != nil {
			return requested{}, err
		}
		_, err = a.commit(ctx, c)
		return requested{locale: u.Locale, taken: taken}, err
	})
	if err != nil {
		return err
	}
	// The code is bound to the account that asked for it (its payload).
	return a.issueCodeFor(ctx, ratelimit.Unknown, email, req.locale, PurposeEmailChange, mail.EmailChange, caller.UserID[:], !req.taken)
}

// VerifyEmailChange completes the caller's pending email change with the
// code mailed to the new address: the address is claimed and the old one
// released in the commit of EmailChanged, so the new one signs in at once
// and the old one no longer does. A code is guessed within the account's
// daily budget of emailed codes, as every emailed code is; an address taken
// since the request is ErrConflict.
func (a *Accounts) VerifyEmailChange(ctx context.Context, caller tokens.Claims, code string, r Request) error {
	if !codes.WellFormed(code) {
		return ErrInvalidCode // cannot be the code: no guess spent
	}
	u, err := a.liveUser(ctx, caller.UserID)
	if err != nil {
		return err
	}
	if u.PendingEmail == "" {
		return ErrInvalidCode
	}
	newEmail := u.PendingEmail
	use, err := a.useChangeCode(ctx, u, newEmail, code, r)
	if err != nil {
		return err
	}
	committed, err := retry(ctx, func() (eventstore.Committed, error) {
		u, err := a.liveUser(ctx, caller.UserID)
		if err != nil {
			return eventstore.Committed{}, err
		}
		events, err := u.ChangeEmail(newEmail)
		if errors.Is(err, domain.ErrNoEmailChange) {
			return eventstore.Committed{}, ErrInvalidCode // another change was asked for meanwhile
		}
		old := u.Email
		c := a.newChange(r)
		c.also(use)
		if err := c.record(u, domain.UserStream(u.ID), u.TenantID, u.ID, events...); err != nil {
			return eventstore.Committed{}, err
		}
		c.write.Claims = []eventstore.Claim{{Scope: emailScope, Key: newEmail, Owner: u.ID.String()}}
		c.write.Releases = []eventstore.Claim{{Scope: emailScope, Key: old, Owner: u.ID.String()}}
		committed, err := a.commit(ctx, c)
		if errors.Is(err, eventstore.ErrKeyTaken) {
			return eventstore.Committed{}, fmt.Errorf("%w: the address was taken since the change was asked for", ErrConflict)
		}
		return committed, err
	})
	if err != nil {
		return err
	}
	a.waitFor(ctx, committed, projections.Users{})
	return nil
}

// useChangeCode checks the code of u's email change to newEmail within the
// account's daily budget of emailed-code guesses; a wrong one counts
// towards the owner's guessing notice. It returns the statement that uses
// the code up, to commit with the change of address.
func (a *Accounts) useChangeCode(ctx context.Context, u *domain.User, newEmail, code string, r Request) (eventstore.Statement, error) {
	none := eventstore.Statement{}
	class, err := a.knownNetwork(ctx, u.ID, r.IP)
	if err != nil {
		return none, err
	}
	budget := emailCodeKey(u.Email, class)
	if err := a.spendGuess(ctx, budget, emailCodeGuessesPerDay); err != nil {
		return none, err
	}
	payload, use, err := a.codes.CheckIn(ctx, ratelimit.Unknown, newEmail, PurposeEmailChange, code)
	if errors.Is(err, codes.ErrInvalidCode) {
		id, r := u.ID, r.detached()
		a.handOff("wrong code count", func(ctx context.Context) { a.missed(ctx, id, domain.GuessedEmailCode, r) })
		return none, ErrInvalidCode
	}
	a.refundGuess(ctx, budget)
	if err != nil {
		return none, err
	}
	if string(payload) != string(u.ID[:]) {
		return none, ErrInvalidCode // issued to another account's request
	}
	return use, nil
}
