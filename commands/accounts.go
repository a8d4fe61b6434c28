package commands

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/mail"
	"github.com/authd/authd/password"
)

// CodeTTL is how long an emailed code works.
const CodeTTL = 10 * time.Minute

// Code purposes, also the codes table's purpose column.
const (
	PurposeVerify = "verify"
	PurposeLogin  = "login"
	PurposeReset  = "reset"
)

// RegisterInput is POST /register's body.
type RegisterInput struct {
	Email, Password, Name, TenantName string
}

// Register signs up an account that must verify its email before it can sign
// in, and emails it a code. It answers the same whether or not the email is
// taken, after the same work: every path hashes, looks the address up, loads
// a user stream, commits one claim and one event, and issues and mails one
// code under the address's code quota. A taken address's owner gets a
// sign-in code and word of the attempt; a new or pending one, its
// verification code.
func (a *App) Register(ctx context.Context, in RegisterInput, r Request) error {
	email, err := NormalizeEmail(in.Email)
	if err != nil {
		return err
	}
	if err := checkPassword(in.Password); err != nil {
		return err
	}
	name, err := cleanName("name", in.Name)
	if err != nil {
		return err
	}
	tenantName, err := cleanName("tenant_name", in.TenantName)
	if err != nil {
		return err
	}
	hash, err := a.d.Hasher.Hash(ctx, in.Password)
	if err != nil {
		return err
	}
	taken, err := retry(ctx, func() (bool, error) {
		owner, found, err := a.emailOwner(ctx, email)
		if err != nil {
			return false, err
		}
		if !found {
			owner = uuid.New()
		}
		// A new address loads its new, empty stream: the same query as a
		// taken one's.
		u, err := a.loadUser(ctx, owner)
		if err != nil {
			return false, err
		}
		if found && !u.Exists() {
			// The signup expired, freeing the address, after the lookup.
			return false, eventstore.ErrConflict
		}
		c := a.newChange(r)
		c.write.Claims = []eventstore.Claim{{Scope: emailScope, Key: email, Owner: owner.String(), Held: found}}
		var stream string
		var expected int64
		var e domain.Event
		switch {
		case !found:
			reg := &domain.UserRegistered{UserID: owner, TenantID: uuid.New(), TenantName: tenantName, Email: email, Name: name}
			reg.Secret.PasswordHash = hash
			stream, expected, e, u.TenantID = domain.UserStream(owner), 0, reg, reg.TenantID
		case u.EmailVerified:
			// Taken: say nothing, change nothing of the account.
			stream, expected, e = domain.SignupAttemptStream(owner), eventstore.AnyVersion, &domain.SignupAttempted{UserID: owner}
		default:
			// Nobody has proven they own this address yet, so whoever
			// signs up again takes over the pending account; the code
			// decides.
			renew := &domain.RegistrationRenewed{UserID: owner, Name: name, TenantName: tenantName}
			renew.Secret.PasswordHash = hash
			stream, expected, e = domain.UserStream(owner), u.Version, renew
		}
		if err := c.add(stream, expected, u.TenantID, owner, e); err != nil {
			return false, err
		}
		_, err = a.commit(ctx, c)
		if errors.Is(err, eventstore.ErrKeyTaken) {
			return false, eventstore.ErrConflict // someone registered it meanwhile: decide again
		}
		return u.EmailVerified, err
	})
	if err != nil {
		return err
	}
	if taken {
		return a.issueCode(ctx, email, PurposeLogin, mail.AccountExists)
	}
	return a.issueCode(ctx, email, PurposeVerify, mail.Verify)
}

// VerifyRegistration completes a signup with its emailed code: the email is
// verified, the tenant created, and the user signed in.
func (a *App) VerifyRegistration(ctx context.Context, email, code string, r Request) (SignIn, error) {
	email, err := NormalizeEmail(email)
	if err != nil {
		return SignIn{}, err
	}
	if _, err := a.d.Codes.Consume(ctx, email, PurposeVerify, code); err != nil {
		return SignIn{}, ErrInvalidCode
	}
	// The code was sent for the signup found first: should that signup
	// expire while this runs and someone else sign up with the address,
	// the code is not theirs to verify.
	var signup uuid.UUID
	return retry(ctx, func() (SignIn, error) {
		u, tf, err := a.accountByEmail(ctx, email)
		if errors.Is(err, ErrNotFound) || err == nil && (u.EmailVerified || signup != uuid.Nil && u.ID != signup) {
			return SignIn{}, ErrInvalidCode
		}
		if err != nil {
			return SignIn{}, err
		}
		signup = u.ID
		c := a.newChange(r)
		if err := a.verifyEmail(c, u); err != nil {
			return SignIn{}, err
		}
		return a.signIn(ctx, c, u, tf, []string{"otp"}, r)
	})
}

// verifyEmail adds the events that verify u's email and create its tenant.
func (a *App) verifyEmail(c *change, u *domain.User) error {
	if u.EmailVerified {
		return nil
	}
	name := u.TenantName
	if name == "" {
		name = domain.DefaultTenantName(u.Name, u.Email)
	}
	if err := c.add(domain.UserStream(u.ID), u.Version, u.TenantID, u.ID, &domain.EmailVerified{UserID: u.ID}); err != nil {
		return err
	}
	return c.add(domain.TenantStream(u.TenantID), 0, u.TenantID, u.ID, &domain.TenantCreated{TenantID: u.TenantID, Name: name, OwnerID: u.ID})
}

// accountByEmail loads the user an email belongs to and their two-factor
// state, both streams in one query (a sign-in needs both), or ErrNotFound.
func (a *App) accountByEmail(ctx context.Context, email string) (*domain.User, *domain.TwoFactor, error) {
	id, found, err := a.emailOwner(ctx, email)
	if err != nil {
		return nil, nil, err
	}
	if !found {
		return nil, nil, ErrNotFound
	}
	return a.loadAccount(ctx, id)
}

// userByEmail is accountByEmail for a caller that needs only the user.
func (a *App) userByEmail(ctx context.Context, email string) (*domain.User, error) {
	u, _, err := a.accountByEmail(ctx, email)
	return u, err
}

// Login signs in with email and password. Unknown emails and wrong passwords
// get the same answer after the same work.
func (a *App) Login(ctx context.Context, email, pw string, r Request) (SignIn, error) {
	email, err := NormalizeEmail(email)
	if err != nil {
		return SignIn{}, err
	}
	if pw == "" || len(pw) > password.MaxLen {
		return SignIn{}, &ValidationError{Field: "password", Message: "is required (1024 bytes at most)"}
	}
	if err := checkPasswordText("password", pw); err != nil {
		return SignIn{}, err
	}
	// Under a flood of logins, half the requests are turned away as busy:
	// they must cost no more than that answer (counting them against the
	// account and then forgiving them took two statements each).
	if a.d.Hasher.Full() {
		return SignIn{}, password.ErrBusy
	}
	account := "login:" + email
	if wait, err := a.d.Throttle.Attempt(ctx, account); err != nil {
		return SignIn{}, err
	} else if wait > 0 {
		return SignIn{}, &RetryLaterError{After: wait}
	}
	u, tf, err := a.accountByEmail(ctx, email)
	if errors.Is(err, ErrNotFound) {
		if err := a.d.Hasher.VerifyUnknown(ctx, pw); err != nil {
			return SignIn{}, a.forgive(ctx, account, err)
		}
		a.failed(ctx, account)
		return SignIn{}, ErrInvalidCredentials
	}
	if err != nil {
		return SignIn{}, a.forgive(ctx, account, err)
	}
	var ok, rehash bool
	if u.PasswordHash == "" { // signed up with Google: no password matches; the same work as one
		err = a.d.Hasher.VerifyUnknown(ctx, pw)
	} else {
		ok, rehash, err = a.d.Hasher.Verify(ctx, u.PasswordHash, pw)
	}
	if err != nil {
		return SignIn{}, a.forgive(ctx, account, err)
	}
	if !ok {
		a.failed(ctx, account)
		c := a.newChange(r)
		if err := c.add(domain.LoginStream(u.ID), eventstore.AnyVersion, u.TenantID, u.ID, &domain.LoginFailed{UserID: u.ID, Reason: "wrong_password"}); err != nil {
			return SignIn{}, err
		}
		if _, err := a.commit(ctx, c); err != nil {
			a.d.Log.Error("recording a failed login", "err", err)
		}
		return SignIn{}, ErrInvalidCredentials
	}
	if !u.EmailVerified {
		a.reset(ctx, account)
		return SignIn{}, ErrEmailNotVerified
	}
	// The failures are forgotten with the sign-in's events: no statement
	// and commit of their own.
	signInChange := func() *change {
		c := a.newChange(r)
		c.also(a.d.Throttle.ResetStatement(account))
		return c
	}
	c := signInChange()
	if rehash {
		if hash, err := a.d.Hasher.Hash(ctx, pw); err == nil {
			e := &domain.PasswordRehashed{UserID: u.ID}
			e.Secret.PasswordHash = hash
			if err := c.add(domain.UserStream(u.ID), u.Version, u.TenantID, u.ID, e); err != nil {
				return SignIn{}, err
			}
		}
	}
	t, err := a.signIn(ctx, c, u, tf, []string{"pwd"}, r)
	if errors.Is(err, eventstore.ErrConflict) && rehash {
		// The rehash lost a race with another change to the user: sign in
		// without it; the next login rehashes.
		c = signInChange()
		t, err = a.signIn(ctx, c, u, tf, []string{"pwd"}, r)
	}
	if !c.done {
		a.reset(ctx, account) // the password was right, whatever failed after it
	}
	return t, err
}

// reset forgets the account's failed logins after a right password.
func (a *App) reset(ctx context.Context, account string) {
	if err := a.d.Throttle.Reset(context.WithoutCancel(ctx), account); err != nil {
		a.d.Log.Error("clearing failed logins", "err", err)
	}
}

// failed counts a wrong password against the account.
func (a *App) failed(ctx context.Context, account string) {
	if err := a.d.Throttle.Fail(context.WithoutCancel(ctx), account); err != nil {
		a.d.Log.Error("counting a failed login", "err", err)
	}
}

// forgive ends, without counting it, an attempt that failed before its
// password was checked (err: the server was busy, or the request gave up),
// and returns err.
func (a *App) forgive(ctx context.Context, account string, err error) error {
	if ferr := a.d.Throttle.Forgive(context.WithoutCancel(ctx), account); ferr != nil {
		a.d.Log.Error("forgiving a login attempt", "err", ferr)
	}
	return err
}

// SendCode emails a login or password-reset code when the address belongs
// to an account, and answers the same when it does not.
func (a *App) SendCode(ctx context.Context, email, purpose string) error {
	email, err := NormalizeEmail(email)
	if err != nil {
		return err
	}
	var kind mail.Purpose
	switch purpose {
	case PurposeLogin:
		kind = mail.Login
	case PurposeReset:
		kind = mail.Reset
	default:
		return &ValidationError{Field: "purpose", Message: `must be "login" or "reset"`}
	}
	if _, err := a.userByEmail(ctx, email); errors.Is(err, ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	return a.issueCode(ctx, email, purpose, kind)
}

// CodeLogin signs in with an emailed login code; the code also proves the
// address, so an unverified account becomes verified.
func (a *App) CodeLogin(ctx context.Context, email, code string, r Request) (SignIn, error) {
	email, err := NormalizeEmail(email)
	if err != nil {
		return SignIn{}, err
	}
	if _, err := a.d.Codes.Consume(ctx, email, PurposeLogin, code); err != nil {
		return SignIn{}, ErrInvalidCode
	}
	return retry(ctx, func() (SignIn, error) {
		u, tf, err := a.accountByEmail(ctx, email)
		if errors.Is(err, ErrNotFound) {
			return SignIn{}, ErrInvalidCode
		}
		if err != nil {
			return SignIn{}, err
		}
		c := a.newChange(r)
		if err := a.verifyEmail(c, u); err != nil {
			return SignIn{}, err
		}
		return a.signIn(ctx, c, u, tf, []string{"otp"}, r)
	})
}

// ResetPassword sets a new password with an emailed reset code and ends
// every session of the user.
func (a *App) ResetPassword(ctx context.Context, email, code, newPassword string, active func(ctx context.Context, user uuid.UUID) ([]uuid.UUID, error), r Request) error {
	email, err := NormalizeEmail(email)
	if err != nil {
		return err
	}
	if err := checkPassword(newPassword); err != nil {
		return &ValidationError{Field: "new_password", Message: err.(*ValidationError).Message}
	}
	if _, err := a.d.Codes.Consume(ctx, email, PurposeReset, code); err != nil {
		return ErrInvalidCode
	}
	hash, err := a.d.Hasher.Hash(ctx, newPassword)
	if err != nil {
		return err
	}
	var u *domain.User
	at, err := retry(ctx, func() (eventstore.Cursor, error) {
		var err error
		u, err = a.userByEmail(ctx, email)
		if errors.Is(err, ErrNotFound) {
			return eventstore.Cursor{}, ErrInvalidCode
		}
		if err != nil {
			return eventstore.Cursor{}, err
		}
		c := a.newChange(r)
		reset := &domain.PasswordReset{UserID: u.ID, At: c.at}
		reset.Secret.PasswordHash = hash
		if err := c.add(domain.UserStream(u.ID), u.Version, u.TenantID, u.ID, reset); err != nil {
			return eventstore.Cursor{}, err
		}
		u.Version++ // verifyEmail appends after the reset
		if err := a.verifyEmail(c, u); err != nil {
			return eventstore.Cursor{}, err
		}
		committed, err := a.commit(ctx, c)
		if err == nil {
			a.d.Revoked.CutUser(u.ID, c.at)
		}
		return committed.Last, err
	})
	if err != nil {
		return err
	}
	// The reset already refuses every older token (CutUser, and on other
	// instances the PasswordReset event); revoking each session also ends
	// its refresh token and takes it off the sessions list.
	a.wait(ctx, at, "sessions")
	ids, err := active(ctx, u.ID)
	if err != nil {
		return err
	}
	var last eventstore.Cursor
	for _, id := range ids {
		at, err := a.revoke(ctx, u.ID, id, domain.RevokedByPassword, r)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		if last.Before(at) {
			last = at
		}
	}
	a.wait(ctx, last, "sessions")
	return nil
}

func checkPassword(pw string) error {
	if err := checkPasswordText("password", pw); err != nil {
		return err
	}
	if err := password.Validate(pw); err != nil {
		return &ValidationError{Field: "password", Message: err.Error()}
	}
	return nil
}
