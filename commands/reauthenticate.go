package commands

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/google/uuid"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/mail"
	"github.com/authd/authd/internal/password"
	"github.com/authd/authd/internal/tokens"
	"github.com/authd/authd/projections"
)

// ErrSessionEnded refuses a re-authentication of a session that is revoked
// (or of an account that is gone): only a live session can be made fresh.
var ErrSessionEnded = errors.New("the session has ended")

// ReauthInput is POST /reauthenticate's body: one proof of who the caller is
// (Password, EmailCode or Credential), and Code, a TOTP or backup code, when
// two-factor is on and the proof is not a passkey.
type ReauthInput struct {
	Password   string
	EmailCode  string
	Credential json.RawMessage
	Code       string
}

// Reauthenticate has the caller prove again who they are, in the session of
// their token (API.md: POST /reauthenticate). The proofs are checked as a
// sign-in checks them, and a wrong one counts against the account as a
// wrong sign-in does. It answers a new pair for the same session, its
// auth_time now and its amr the proof used; the refresh token before it is
// rotated away, as a refresh does.
func (a *Accounts) Reauthenticate(ctx context.Context, caller tokens.Claims, in ReauthInput, r Request) (Tokens, error) {
	if n := countSet(in.Password != "", in.EmailCode != "", len(in.Credential) > 0); n != 1 {
		return Tokens{}, &ValidationError{Field: "password", Message: "exactly one of password, email_code or credential is required"}
	}
	if len(in.Credential) > 0 {
		// A passkey with user verification is two factors in itself: no
		// code is asked for, whether two-factor is on or not.
		return a.passkeys.reauthenticateWithPasskey(ctx, caller, in.Credential, r)
	}
	u, tf, err := a.loadAccount(ctx, caller.UserID)
	if errors.Is(err, ErrNotFound) {
		return Tokens{}, ErrSessionEnded
	}
	if err != nil {
		return Tokens{}, err
	}
	needCode := tf.Enabled
	var code domain.Code
	if needCode {
		if in.Code == "" {
			return Tokens{}, &ValidationError{Field: "code", Message: "is required: two-factor authentication is on"}
		}
		if code, err = domain.ParseCode(in.Code); err != nil {
			return Tokens{}, ErrInvalidCode
		}
	}
	amr, proof, check := []string{"pwd"}, in.Password, a.checkPassword
	if in.EmailCode != "" {
		amr, proof, check = []string{"otp"}, in.EmailCode, a.checkEmailCode
	}
	use, err := check(ctx, u, proof, r)
	if err != nil {
		return Tokens{}, err
	}
	if !needCode {
		return retry(ctx, func() (Tokens, error) {
			c := a.newChange(r)
			c.also(use...)
			return a.sessions.reauthenticate(ctx, c, caller, amr, r)
		})
	}
	key, err := a.twoFactor.admitSecondFactor(ctx, u.ID, r)
	if err != nil {
		return Tokens{}, err
	}
	t, err := retry(ctx, func() (Tokens, error) {
		return a.twoFactor.reauthenticateWithCode(ctx, caller, code, withMFA(amr), r, use...)
	})
	a.settleCode(ctx, key, err)
	if errors.Is(err, ErrInvalidCode) {
		a.twoFactor.recordFailure(ctx, u, r)
		a.missed(ctx, u.ID, guessedKind(code), r)
	}
	return t, err
}

func countSet(set ...bool) int {
	n := 0
	for _, s := range set {
		if s {
			n++
		}
	}
	return n
}

// checkPassword checks the password of u as a login does: admitted by the
// same throttle under the same key, so that guesses here and at POST /login
// share the account's slow-down; a wrong one is recorded as LoginFailed. A
// password leaves nothing to commit with the re-authentication.
func (a *Accounts) checkPassword(ctx context.Context, u *domain.User, pw string, r Request) ([]eventstore.Statement, error) {
	if len(pw) > password.MaxLen {
		return nil, &ValidationError{Field: "password", Message: "is 1024 bytes at most"}
	}
	at, settle, err := a.admitLogin(ctx, u.Email, r)
	if err != nil {
		return nil, err
	}
	ok, _, err := a.checkLogin(ctx, at, pw)
	switch {
	case err != nil:
		settle(endUnchecked)
		return nil, translate(err)
	case !ok:
		settle(endWrong)
		u, r := at.user, r.detached()
		a.handOff("failed login record", func(ctx context.Context) { a.recordLoginFailure(ctx, u, r) })
		return nil, ErrInvalidCredentials
	}
	settle(endRight)
	return nil, nil
}

// SendReauthCode mails the caller a code that proves them again at POST
// /reauthenticate (email_code): the way back to a fresh session for a user
// with no password. It is sent under the address's code quota, as every
// code is; past it, nothing is sent and the answer is the same.
func (a *Accounts) SendReauthCode(ctx context.Context, caller tokens.Claims, r Request) error {
	u, err := a.loadUser(ctx, caller.UserID)
	if err != nil {
		return err
	}
	if !u.Exists() {
		return ErrSessionEnded
	}
	class, err := a.knownNetwork(ctx, u.ID, r.IP)
	if err != nil {
		return err
	}
	return a.issueCodeIn(ctx, class, u.Email, PurposeReauthenticate, mail.Reauthenticate, true)
}

// checkEmailCode uses a code of SendReauthCode, as a code login uses its
// own: within the address's daily guessing budget, a wrong one counted
// towards the owner's guessing notice. The code is used up by the
// re-authentication's commit.
func (a *Accounts) checkEmailCode(ctx context.Context, u *domain.User, code string, r Request) ([]eventstore.Statement, error) {
	id, use, err := a.useCode(ctx, u.Email, PurposeReauthenticate, code, r)
	if err != nil {
		return nil, err
	}
	if id != u.ID {
		return nil, ErrInvalidCode // the address moved to another account since the code was sent
	}
	return []eventstore.Statement{use}, nil
}

// reauthenticateWithCode checks a second-factor code of the caller and, when
// it is right, makes the session fresh in the same commit, which also marks
// the code used: a TOTP step or backup code proves one thing once. first
// are the statements of the first proof (an emailed code's use), committed
// with it.
func (a *TwoFactor) reauthenticateWithCode(ctx context.Context, caller tokens.Claims, code domain.Code, amr []string, r Request, first ...eventstore.Statement) (Tokens, error) {
	u, tf, err := a.loadAccount(ctx, caller.UserID)
	if errors.Is(err, ErrNotFound) {
		return Tokens{}, ErrSessionEnded
	}
	if err != nil {
		return Tokens{}, err
	}
	// The code answers this re-authentication, named by an id of its own as
	// a login's code is by its challenge's.
	events, err := tf.Verify(uuid.New(), code, a.now(), a.backupHash(u.ID))
	if err != nil {
		return Tokens{}, twoFactorError(err)
	}
	c := a.newChange(r)
	c.also(first...)
	if err := c.record(tf, domain.TwoFactorStream(u.ID), u.TenantID, u.ID, events...); err != nil {
		return Tokens{}, err
	}
	if _, backup := events[0].(*domain.BackupCodeUsed); backup {
		// The status read model counts backup codes: let the next read see it.
		return a.sessions.reauthenticate(ctx, c, caller, amr, r, projections.TwoFactor{})
	}
	return a.sessions.reauthenticate(ctx, c, caller, amr, r)
}

// reauthenticate adds the caller's session's Reauthenticated to c, commits
// it, waits for the projections named in waitFor to see it, and answers the
// session's new pair.
func (a *Sessions) reauthenticate(ctx context.Context, c *change, caller tokens.Claims, amr []string, r Request, waitFor ...projections.Projection) (Tokens, error) {
	s, err := a.loadSession(ctx, caller.SessionID)
	if err != nil {
		return Tokens{}, err
	}
	if s.UserID != caller.UserID || s.StartedAt.Before(a.revoked.UserCut(s.UserID)) {
		return Tokens{}, ErrSessionEnded
	}
	events, err := s.Reauthenticate(amr, r.client())
	if errors.Is(err, domain.ErrSessionEnded) {
		return Tokens{}, ErrSessionEnded
	}
	if err != nil {
		return Tokens{}, err
	}
	if err := c.record(s, domain.SessionStream(s.ID), s.TenantID, s.UserID, events...); err != nil {
		return Tokens{}, err
	}
	committed, err := a.commit(ctx, c)
	if err != nil {
		a.cache.Remove(s.ID)
		return Tokens{}, err
	}
	a.cache.Add(s.ID, *s)
	a.waitFor(ctx, committed, waitFor...)
	return a.issue(s.ID, s.UserID, s.TenantID, s.AMR, s.AuthTime, s.Generation)
}
