package commands

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/codes"
	"github.com/authd/authd/internal/mail"
	"github.com/authd/authd/internal/password"
	"github.com/authd/authd/internal/ratelimit"
	"github.com/authd/authd/internal/revocation"
	"github.com/authd/authd/projections"
)

// CodeTTL is how long an emailed code works.
const CodeTTL = 10 * time.Minute

// Code purposes, also the codes table's purpose column.
const (
	PurposeVerify = "verify"
	PurposeLogin  = "login"
	PurposeReset  = "reset"
	// PurposeReauthenticate is a code that proves a signed-in user again
	// (POST /reauthenticate/code).
	PurposeReauthenticate = "reauthenticate"
)

// Accounts signs accounts up and in with a password or an emailed code, and
// resets passwords.
type Accounts struct {
	*guard
	hasher  *password.Hasher
	codes   Codes
	mail    mail.Sender
	limits  Limits
	mails   *mail.Templates
	revoked *revocation.Set
	// twoFactor finishes a first factor: a challenge, or a session.
	twoFactor *TwoFactor
	// sessions lists and revokes the sessions a reset ends.
	sessions *Sessions
	// passkeys checks a passkey that re-authenticates the caller.
	passkeys *Passkeys
	// erase and farewells are what a deletion commits besides its events.
	erase     eraser
	farewells Farewells
}

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
func (a *Accounts) Register(ctx context.Context, in RegisterInput, r Request) error {
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
	hash, err := a.hasher.Hash(ctx, in.Password)
	if err != nil {
		return translate(err)
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
		switch {
		case !found:
			reg := &domain.UserRegistered{UserID: owner, TenantID: uuid.New(), TenantName: tenantName, Email: email, Name: name}
			reg.Secret.PasswordHash = hash
			err = c.record(u, domain.UserStream(owner), reg.TenantID, owner, reg)
		case u.EmailVerified:
			// Taken: say nothing, change nothing of the account.
			err = c.note(domain.SignupAttemptStream(owner), u.TenantID, owner, &domain.SignupAttempted{UserID: owner})
		default:
			// Nobody has proven they own this address yet, so whoever
			// signs up again takes over the pending account; the code
			// decides.
			renew := &domain.RegistrationRenewed{UserID: owner, Name: name, TenantName: tenantName}
			renew.Secret.PasswordHash = hash
			err = c.record(u, domain.UserStream(owner), u.TenantID, owner, renew)
		}
		if err != nil {
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
func (a *Accounts) VerifyRegistration(ctx context.Context, email, code string, r Request) (SignIn, error) {
	email, err := NormalizeEmail(email)
	if err != nil {
		return SignIn{}, err
	}
	_, use, err := a.codes.Check(ctx, email, PurposeVerify, code)
	if errors.Is(err, codes.ErrInvalidCode) {
		return SignIn{}, ErrInvalidCode
	} else if err != nil {
		// The database failed (a restart, a terminated connection): the
		// client should retry, not be told its mailed code is wrong.
		return SignIn{}, err
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
		c.also(use)
		if err := verifyEmail(c, u); err != nil {
			return SignIn{}, err
		}
		return a.twoFactor.signIn(ctx, c, u, tf, []string{"otp"}, r)
	})
}

// verifyEmail records what verifying u's email decides (domain.User.Verify):
// u's email verified, and its tenant created.
func verifyEmail(c *change, u *domain.User) error {
	verified, tenant := u.Verify()
	if tenant == nil {
		return nil
	}
	if err := c.record(u, domain.UserStream(u.ID), u.TenantID, u.ID, verified...); err != nil {
		return err
	}
	return c.create(domain.TenantStream(u.TenantID), u.TenantID, u.ID, tenant)
}

// accountByEmail loads the user an email belongs to and their two-factor
// state, both streams in one query (a sign-in needs both), or ErrNotFound.
func (a *Accounts) accountByEmail(ctx context.Context, email string) (*domain.User, *domain.TwoFactor, error) {
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
func (a *Accounts) userByEmail(ctx context.Context, email string) (*domain.User, error) {
	u, _, err := a.accountByEmail(ctx, email)
	return u, err
}

// Login signs in with email and password. Unknown emails and wrong passwords
// get the same answer after the same work: the same statements, a hash
// check, and the failure's record handed off (handOff). It runs in three
// steps: admit the attempt (admitLogin), check the password (checkLogin),
// sign in (passwordSignIn); the attempt is settled once, with how it ended.
func (a *Accounts) Login(ctx context.Context, email, pw string, r Request) (SignIn, error) {
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
	at, settle, err := a.admitLogin(ctx, email, r)
	if err != nil {
		return SignIn{}, err
	}
	ok, rehash, err := a.checkLogin(ctx, at, pw)
	switch {
	case err != nil:
		settle(endUnchecked)
		return SignIn{}, translate(err)
	case !ok:
		settle(endWrong)
		u, r := at.user, r.detached()
		a.handOff("failed login record", func(ctx context.Context) { a.recordLoginFailure(ctx, u, r) })
		return SignIn{}, ErrInvalidCredentials
	case !at.user.EmailVerified:
		settle(endRight)
		return SignIn{}, ErrEmailNotVerified
	}
	t, committed, err := a.passwordSignIn(ctx, at, pw, rehash, r)
	if committed {
		settle(endSignedIn)
	} else {
		settle(endRight) // the password was right, whatever failed after it
	}
	return t, err
}

// loginAttempt is a password login admitted to its check: the account it
// names, the hashers' admission it was let in under, and its throttle key.
type loginAttempt struct {
	loginAccount
	admission password.Admission
	key       string
}

// attemptEnd is how an admitted login attempt ended, as its throttle counts
// it.
type attemptEnd int

const (
	// endUnchecked: it ended before its password was checked (the hashers
	// were busy, the request gave up): forgiven, counted neither way.
	endUnchecked attemptEnd = iota
	// endWrong: the password was wrong: counted against the account.
	endWrong
	// endRight: the password was right: the account's failures are
	// forgotten.
	endRight
	// endSignedIn: the password was right, and the sign-in's commit forgot
	// the failures with its events (Throttle.ResetStatement).
	endSignedIn
)

// admitLogin admits one password check for email from r's client: not
// while the hashers are full, not while the throttle makes the account
// wait. It loads the account, with whether the client's network is known
// to it. Once admitted, the attempt is counted until settle says how it
// ended; settle acts on its first call only, so the attempt is settled
// exactly once.
func (a *Accounts) admitLogin(ctx context.Context, email string, r Request) (loginAttempt, func(attemptEnd), error) {
	// Under a flood of logins, half the requests are turned away as busy:
	// they must cost no more than that answer (counting them against the
	// account and then forgiving them took two statements each).
	// A check that even a known client could not get is refused before any
	// statement; whether this client is known is read with the account.
	network := ratelimit.NetworkOf(r.IP)
	if a.hasher.Full(password.Admission{Network: network, Known: true}) {
		return loginAttempt{}, nil, ErrBusy
	}
	acct, err := a.loadLoginAccount(ctx, email, r)
	if err != nil {
		return loginAttempt{}, nil, err
	}
	at := loginAttempt{
		loginAccount: acct,
		admission:    password.Admission{Network: network, Known: acct.class == ratelimit.Known},
		key:          loginKey(email, acct.class),
	}
	if a.hasher.Full(at.admission) {
		return loginAttempt{}, nil, ErrBusy
	}
	if wait, err := a.throttle.Attempt(ctx, at.key); err != nil {
		return loginAttempt{}, nil, err
	} else if wait > 0 {
		return loginAttempt{}, nil, &RetryLaterError{After: wait}
	}
	return at, a.settler(ctx, at.key), nil
}

// settler returns the function that tells the throttle how the attempt
// counted under key ended, on its first call; later calls do nothing.
func (a *guard) settler(ctx context.Context, key string) func(attemptEnd) {
	settled := false
	return func(end attemptEnd) {
		if settled {
			return
		}
		settled = true
		switch end {
		case endUnchecked:
			a.forgive(ctx, key, nil)
		case endWrong:
			a.failed(ctx, key)
		case endRight:
			a.reset(ctx, key)
		case endSignedIn: // settled in the sign-in's commit
		}
	}
}

// checkLogin checks pw against the attempt's account. An address without an
// account, or an account that signed up with Google, has no password that
// matches: it is checked against none, at the same cost as a hash.
func (a *Accounts) checkLogin(ctx context.Context, at loginAttempt, pw string) (ok, rehash bool, err error) {
	if at.user == nil || at.user.PasswordHash == "" {
		return false, false, a.hasher.VerifyUnknown(ctx, at.admission, pw)
	}
	return a.hasher.Verify(ctx, at.admission, at.user.PasswordHash, pw)
}

// passwordSignIn signs in the verified account a right password was given
// for, rehashing the password when its hash is due for new parameters. The
// attempt's failures are forgotten with the sign-in's events, with no
// statement and commit of their own; committed says whether that commit ran.
//
// The sign-in commits only on the account as it was checked (startSession).
// When the account changed meanwhile, it is loaded again and signed in as it
// is now: the password is checked again only if it changed, and a rehash
// that lost the race is left to the next login.
func (a *Accounts) passwordSignIn(ctx context.Context, at loginAttempt, pw string, rehash bool, r Request) (s SignIn, committed bool, err error) {
	u, tf := at.user, at.twoFactor
	for attempt := 1; ; attempt++ {
		c := a.newChange(r)
		c.also(a.throttle.ResetStatement(at.key))
		if rehash {
			if hash, err := a.hasher.Hash(ctx, pw); err == nil {
				e := &domain.PasswordRehashed{UserID: u.ID}
				e.Secret.PasswordHash = hash
				if err := c.record(u, domain.UserStream(u.ID), u.TenantID, u.ID, e); err != nil {
					return SignIn{}, false, err
				}
			}
		}
		s, err = a.twoFactor.signIn(ctx, c, u, tf, []string{"pwd"}, r)
		if !errors.Is(err, eventstore.ErrConflict) || attempt == 3 {
			return s, c.done, err
		}
		if u, tf, err = a.recheckLogin(ctx, at, u, pw); err != nil {
			return SignIn{}, false, err
		}
		rehash = false
	}
}

// recheckLogin loads the account a right password was given for again,
// after it changed while the sign-in was decided, and answers it as it is
// now; ErrInvalidCredentials when its password is no longer pw.
func (a *Accounts) recheckLogin(ctx context.Context, at loginAttempt, was *domain.User, pw string) (*domain.User, *domain.TwoFactor, error) {
	u, tf, err := a.loadAccount(ctx, was.ID)
	if errors.Is(err, ErrNotFound) {
		return nil, nil, ErrInvalidCredentials
	}
	if err != nil {
		return nil, nil, err
	}
	if u.PasswordHash == was.PasswordHash {
		return u, tf, nil
	}
	// Changed, reset or rehashed by another login: only the hash can say.
	ok, _, err := a.hasher.Verify(ctx, at.admission, u.PasswordHash, pw)
	if err != nil {
		return nil, nil, translate(err)
	}
	if !ok {
		return nil, nil, ErrInvalidCredentials
	}
	return u, tf, nil
}

// loginAccount is what a login loads before it checks a password: the
// account an email names (nil user when none) and the class of the client's
// network for it. class is the "known network" bit of a login: Known when
// the client's /24 or /64 signed in to the account within 90 days.
type loginAccount struct {
	user      *domain.User
	twoFactor *domain.TwoFactor
	class     ratelimit.Class
}

// loadLoginAccount loads the account of email with whether the client's
// network is known to it, in the round trip of the load. For an address
// without an account it reads the streams and networks of an id no account
// has: the same statements, finding nothing.
func (a *Accounts) loadLoginAccount(ctx context.Context, email string, r Request) (loginAccount, error) {
	id, found, err := a.ownerOrNobody(ctx, email)
	if err != nil {
		return loginAccount{}, err
	}
	knownSt, known := ratelimit.KnownStatement(id, r.IP, a.now())
	streams, err := a.store.LoadStreamsAfter(ctx, []eventstore.Statement{knownSt}, domain.UserStream(id), domain.TwoFactorStream(id))
	if err != nil {
		return loginAccount{}, err
	}
	acct := loginAccount{class: ratelimit.ClassOf(known())}
	if !found {
		return acct, nil
	}
	acct.user, acct.twoFactor, err = foldAccount(streams)
	if errors.Is(err, ErrNotFound) {
		return loginAccount{class: ratelimit.Unknown}, nil
	}
	return acct, err
}

// recordLoginFailure is the audit record of a wrong password: LoginFailed
// for an account, nothing for an address without one. It runs after the
// answer (handOff), for both alike.
func (a *Accounts) recordLoginFailure(ctx context.Context, u *domain.User, r Request) {
	if u == nil {
		return
	}
	c := a.newChange(r)
	if err := c.note(domain.LoginStream(u.ID), u.TenantID, u.ID, &domain.LoginFailed{UserID: u.ID, Reason: "wrong_password"}); err != nil {
		a.log.Error("recording a failed login", "err", err)
		return
	}
	if _, err := a.commit(ctx, c); err != nil {
		a.log.Error("recording a failed login", "err", err)
	}
}

// reset forgets the account's failed logins after a right password.
func (a *guard) reset(ctx context.Context, account string) {
	if err := a.throttle.Reset(context.WithoutCancel(ctx), account); err != nil {
		a.log.Error("clearing failed logins", "err", err)
	}
}

// failed counts a wrong password against the account.
func (a *guard) failed(ctx context.Context, account string) {
	if err := a.throttle.Fail(context.WithoutCancel(ctx), account); err != nil {
		a.log.Error("counting a failed login", "err", err)
	}
}

// forgive ends, without counting it, an attempt that failed before its
// password was checked (err: the server was busy, or the request gave up),
// and returns err.
func (a *guard) forgive(ctx context.Context, account string, err error) error {
	if ferr := a.throttle.Forgive(context.WithoutCancel(ctx), account); ferr != nil {
		a.log.Error("forgiving a login attempt", "err", ferr)
	}
	return err
}

// SendCode emails a login or password-reset code when the address belongs
// to an account, and answers the same, after the same work, when it does
// not. A code asked for from a network that signed in to the account lately
// is of the known class: codes asked for elsewhere neither count against its
// quota nor replace it.
func (a *Accounts) SendCode(ctx context.Context, email, purpose string, r Request) error {
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
	id, found, err := a.ownerOrNobody(ctx, email)
	if err != nil {
		return err
	}
	class, err := a.knownNetwork(ctx, id, r.IP)
	if err != nil {
		return err
	}
	return a.issueCodeIn(ctx, class, email, purpose, kind, found)
}

// useCode checks an emailed code for email and purpose from the client's
// network: against the code of its class, within that class's daily
// guessing budget. A wrong one counts towards the owner's guessing notice.
// It returns the id of the address's account (uuid.Nil when none) once the
// code was right, with the statement that uses the code up, for the caller
// to commit with what the code earned; every wrong or unusable code is
// ErrInvalidCode.
func (a *Accounts) useCode(ctx context.Context, email, purpose, code string, r Request) (uuid.UUID, eventstore.Statement, error) {
	none := eventstore.Statement{}
	if !codes.WellFormed(code) {
		return uuid.Nil, none, ErrInvalidCode // cannot be the code: no guess spent
	}
	id, found, err := a.ownerOrNobody(ctx, email)
	if err != nil {
		return uuid.Nil, none, err
	}
	class, err := a.knownNetwork(ctx, id, r.IP)
	if err != nil {
		return uuid.Nil, none, err
	}
	budget := emailCodeKey(email, class)
	if err := a.spendGuess(ctx, budget, emailCodeGuessesPerDay); err != nil {
		return uuid.Nil, none, err
	}
	_, use, err := a.codes.CheckIn(ctx, class, email, purpose, code)
	if err != nil {
		if !errors.Is(err, codes.ErrInvalidCode) {
			a.refundGuess(ctx, budget)
			return uuid.Nil, none, err
		}
		// Counted after the answer, for an address with an account and one
		// without alike (the latter a job that does nothing): counting in
		// the request would make a wrong code for an account the slower.
		r := r.detached()
		a.handOff("wrong code count", func(ctx context.Context) {
			if found {
				a.missed(ctx, id, domain.GuessedEmailCode, r)
			}
		})
		return uuid.Nil, none, ErrInvalidCode
	}
	a.refundGuess(ctx, budget)
	if !found {
		return uuid.Nil, none, ErrInvalidCode
	}
	return id, use, nil
}

// CodeLogin signs in with an emailed login code; the code also proves the
// address, so an unverified account becomes verified.
func (a *Accounts) CodeLogin(ctx context.Context, email, code string, r Request) (SignIn, error) {
	email, err := NormalizeEmail(email)
	if err != nil {
		return SignIn{}, err
	}
	id, use, err := a.useCode(ctx, email, PurposeLogin, code, r)
	if err != nil {
		return SignIn{}, err
	}
	return retry(ctx, func() (SignIn, error) {
		u, tf, err := a.loadAccount(ctx, id)
		if errors.Is(err, ErrNotFound) {
			return SignIn{}, ErrInvalidCode
		}
		if err != nil {
			return SignIn{}, err
		}
		if u.Email != email {
			return SignIn{}, ErrInvalidCode // the address moved on since the code was sent
		}
		c := a.newChange(r)
		c.also(use)
		if err := verifyEmail(c, u); err != nil {
			return SignIn{}, err
		}
		return a.twoFactor.signIn(ctx, c, u, tf, []string{"otp"}, r)
	})
}

// ResetPassword sets a new password with an emailed reset code and ends
// every session of the user.
func (a *Accounts) ResetPassword(ctx context.Context, email, code, newPassword string, r Request) error {
	email, err := NormalizeEmail(email)
	if err != nil {
		return err
	}
	if err := checkPassword(newPassword); err != nil {
		return &ValidationError{Field: "new_password", Message: err.(*ValidationError).Message}
	}
	_, use, err := a.useCode(ctx, email, PurposeReset, code, r)
	if err != nil {
		return err
	}
	hash, err := a.hasher.Hash(ctx, newPassword)
	if err != nil {
		return translate(err)
	}
	var revoked []uuid.UUID
	at, err := retry(ctx, func() (eventstore.Cursor, error) {
		u, err := a.userByEmail(ctx, email)
		if errors.Is(err, ErrNotFound) {
			return eventstore.Cursor{}, ErrInvalidCode
		}
		if err != nil {
			return eventstore.Cursor{}, err
		}
		c := a.newChange(r)
		c.also(use)
		reset := &domain.PasswordReset{UserID: u.ID, At: c.at}
		reset.Secret.PasswordHash = hash
		if err := c.record(u, domain.UserStream(u.ID), u.TenantID, u.ID, reset); err != nil {
			return eventstore.Cursor{}, err
		}
		if err := verifyEmail(c, u); err != nil {
			return eventstore.Cursor{}, err
		}
		// Every session is revoked in the reset's own commit, which ends
		// their refresh tokens and takes them off the sessions list: done
		// after it, a crash between the two left them alive once the cut
		// below was forgotten.
		if revoked, err = a.sessions.revokeIn(ctx, c, u.ID, uuid.Nil, domain.RevokedByPassword); err != nil {
			return eventstore.Cursor{}, err
		}
		committed, err := a.commit(ctx, c)
		if err == nil {
			a.revoked.CutUser(u.ID, c.at)
		}
		return committed.Last, err
	})
	if err != nil {
		return err
	}
	a.sessions.revokedHere(revoked)
	a.wait(ctx, at, projections.Sessions{})
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
