package commands

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"slices"

	"github.com/google/uuid"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/challenges"
	"github.com/authd/authd/internal/tokens"
	"github.com/authd/authd/internal/totp"
	"github.com/authd/authd/projections"
)

// TwoFactorConfig is what the two-factor commands need beyond Deps.
type TwoFactorConfig struct {
	// Challenges keeps the pending login challenges (challenges.Challenges).
	Challenges Challenges
	// BackupCodeKey is the HMAC key backup codes are hashed under, a
	// secret for that purpose alone that outlives master key rotations
	// (32 bytes).
	BackupCodeKey []byte
	// Issuer names the service in authenticator apps; Deps.Product when empty.
	Issuer string
}

// TwoFactor sets up and checks second factors, and decides whether a first
// factor's sign-in needs one.
type TwoFactor struct {
	*guard
	challenges    Challenges
	backupCodeKey []byte
	// issuer names the service in authenticator apps.
	issuer string
	// sessions opens the session an answered challenge earns.
	sessions *Sessions
}

// Challenges issues and admits answers to login challenges (challenges.Challenges).
type Challenges interface {
	Issue(ctx context.Context, user uuid.UUID, amr []string) (token string, err error)
	// User reads the user a token names, trusted: the token carries a MAC.
	User(token string) (uuid.UUID, error)
	// AnswerStatement counts a try at the token's challenge, ahead of the
	// load of the answering account.
	AnswerStatement(token string) (st eventstore.Statement, answered func() (challenges.Challenge, error))
	// FinishStatement deletes an answered challenge, with the events of the
	// session it opens.
	FinishStatement(token string) eventstore.Statement
}

// ErrInvalidChallenge means a challenge token is unknown, expired, out of
// tries or already answered.
var ErrInvalidChallenge = errors.New("invalid or expired challenge")

// challengeMethods are the second factors a challenge can be answered with.
var challengeMethods = []string{domain.MethodTOTP, domain.MethodBackupCode}

func (a *TwoFactor) loadTwoFactor(ctx context.Context, user uuid.UUID) (*domain.TwoFactor, error) {
	streams, err := a.store.LoadStreams(ctx, domain.TwoFactorStream(user))
	if err != nil {
		return nil, err
	}
	return foldTwoFactor(streams[0])
}

// foldTwoFactor rebuilds the aggregate from its stream's latest snapshot on.
func foldTwoFactor(events []eventstore.Event) (*domain.TwoFactor, error) {
	t := &domain.TwoFactor{}
	if err := fold(events, t); err != nil {
		return nil, err
	}
	t.Version = lastVersion(events)
	return t, nil
}

// snapshotTwoFactor appends a snapshot of tf, at the version it is at, when
// one is due. A conflict only means another change got there first; the
// snapshot can wait for the next sign-in.
func (a *TwoFactor) snapshotTwoFactor(ctx context.Context, u *domain.User, tf *domain.TwoFactor, r Request) {
	if !tf.SnapshotDue() {
		return
	}
	c := a.newChange(r)
	if err := c.record(tf, domain.TwoFactorStream(u.ID), u.TenantID, u.ID, tf.Snapshot(a.now())...); err != nil {
		a.log.Warn("snapshot of a two-factor stream", "err", err)
		return
	}
	if _, err := a.commit(ctx, c); err != nil && !errors.Is(err, eventstore.ErrConflict) {
		a.log.Warn("snapshot of a two-factor stream", "err", err)
	}
}

// challenge decides whether a first-factor login of u needs a second factor.
// When it does, it commits c (the login may have changed the account, e.g. a
// rehashed password) and returns the challenge; otherwise it returns nil and
// leaves c to the caller. A nil tf is loaded here.
func (a *TwoFactor) challenge(ctx context.Context, c *change, u *domain.User, tf *domain.TwoFactor, amr []string, r Request) (*Challenge, error) {
	if tf == nil {
		var err error
		if tf, err = a.loadTwoFactor(ctx, u.ID); err != nil {
			return nil, err
		}
	}
	if !tf.Enabled {
		return nil, nil
	}
	if a.challenges == nil {
		return nil, errors.New("two-factor challenges are not configured")
	}
	if !c.empty() {
		if _, err := a.commit(ctx, c); err != nil {
			return nil, err
		}
	}
	token, err := a.challenges.Issue(ctx, u.ID, amr)
	if err != nil {
		return nil, err
	}
	return &Challenge{Token: token, Methods: slices.Clone(challengeMethods), ExpiresIn: domain.ChallengeTTL}, nil
}

// TwoFactorSetup is a new TOTP secret to show the user: as text, as an
// otpauth:// URI and as a QR code of that URI (a PNG data URL).
type TwoFactorSetup struct {
	Secret          string
	ProvisioningURI string
	QRCode          string
}

// SetupTwoFactor starts a TOTP setup with a new secret, in place of any
// unconfirmed one. A user with two-factor on is refused (ErrConflict).
func (a *TwoFactor) SetupTwoFactor(ctx context.Context, caller tokens.Claims, r Request) (TwoFactorSetup, error) {
	secret, err := totp.NewSecret(rand.Reader)
	if err != nil {
		return TwoFactorSetup{}, err
	}
	u, err := retry(ctx, func() (*domain.User, error) {
		u, tf, err := a.loadAccount(ctx, caller.UserID)
		if err != nil {
			return nil, err
		}
		events, err := tf.Setup(u.ID, secret)
		if err != nil {
			return nil, twoFactorError(err)
		}
		c := a.newChange(r)
		if err := c.record(tf, domain.TwoFactorStream(u.ID), u.TenantID, u.ID, events...); err != nil {
			return nil, err
		}
		_, err = a.commit(ctx, c)
		return u, err
	})
	if err != nil {
		return TwoFactorSetup{}, err
	}
	uri, err := totp.URI(a.issuer, u.Email, secret)
	if err != nil {
		return TwoFactorSetup{}, err
	}
	qr, err := totp.QRCode(uri)
	if err != nil {
		return TwoFactorSetup{}, err
	}
	return TwoFactorSetup{Secret: secret, ProvisioningURI: uri, QRCode: qr}, nil
}

// EnableTwoFactor confirms the pending setup with a TOTP code and returns the
// first backup codes. Nothing pending (or two-factor already on) is
// ErrConflict; a wrong code is ErrInvalidCode.
func (a *TwoFactor) EnableTwoFactor(ctx context.Context, caller tokens.Claims, code string, r Request) ([]string, error) {
	parsed, err := domain.ParseCode(code)
	if err != nil {
		return nil, ErrInvalidCode
	}
	shown, digits, err := newBackupCodes()
	if err != nil {
		return nil, err
	}
	at, err := retry(ctx, func() (eventstore.Cursor, error) {
		u, tf, err := a.loadAccount(ctx, caller.UserID)
		if err != nil {
			return eventstore.Cursor{}, err
		}
		events, err := tf.Enable(u.ID, parsed, a.now(), a.backupHashes(u.ID, digits))
		if err != nil {
			return eventstore.Cursor{}, twoFactorError(err)
		}
		return a.commitTwoFactor(ctx, u, tf, r, events)
	})
	if err != nil {
		return nil, err
	}
	a.wait(ctx, at, projections.TwoFactor{})
	return shown, nil
}

// DisableTwoFactor turns two-factor off, proven by a TOTP or backup code.
func (a *TwoFactor) DisableTwoFactor(ctx context.Context, caller tokens.Claims, code string, r Request) error {
	parsed, err := domain.ParseCode(code)
	if err != nil {
		return ErrInvalidCode
	}
	key, err := a.admitSecondFactor(ctx, caller.UserID, r)
	if err != nil {
		return err
	}
	at, err := retry(ctx, func() (eventstore.Cursor, error) {
		u, tf, err := a.loadAccount(ctx, caller.UserID)
		if err != nil {
			return eventstore.Cursor{}, err
		}
		events, err := tf.Disable(parsed, a.now(), a.backupHash(u.ID))
		if err != nil {
			return eventstore.Cursor{}, twoFactorError(err)
		}
		return a.commitTwoFactor(ctx, u, tf, r, events)
	})
	a.settleCode(ctx, key, err)
	if errors.Is(err, ErrInvalidCode) {
		a.missed(ctx, caller.UserID, guessedKind(parsed), r)
	}
	if err != nil {
		return err
	}
	a.wait(ctx, at, projections.TwoFactor{})
	return nil
}

// RegenerateBackupCodes replaces every backup code with new ones and returns
// them; with two-factor off it is ErrConflict.
func (a *TwoFactor) RegenerateBackupCodes(ctx context.Context, caller tokens.Claims, r Request) ([]string, error) {
	shown, digits, err := newBackupCodes()
	if err != nil {
		return nil, err
	}
	at, err := retry(ctx, func() (eventstore.Cursor, error) {
		u, tf, err := a.loadAccount(ctx, caller.UserID)
		if err != nil {
			return eventstore.Cursor{}, err
		}
		events, err := tf.RegenerateBackupCodes(a.backupHashes(u.ID, digits))
		if err != nil {
			return eventstore.Cursor{}, twoFactorError(err)
		}
		return a.commitTwoFactor(ctx, u, tf, r, events)
	})
	if err != nil {
		return nil, err
	}
	a.wait(ctx, at, projections.TwoFactor{})
	return shown, nil
}

// VerifyChallenge answers a login challenge with a TOTP or backup code and
// opens the session the first factor earned, with "mfa" added to its amr.
// A TOTP step and a backup code are accepted once; so is a challenge, which
// also takes at most domain.ChallengeTries answers in all.
func (a *TwoFactor) VerifyChallenge(ctx context.Context, token, code string, r Request) (Tokens, error) {
	ans, err := a.admitAnswer(ctx, token, code, r)
	if err != nil {
		return Tokens{}, err
	}
	t, err := retry(ctx, func() (Tokens, error) { return a.signInWithAnswer(ctx, ans, r) })
	if ans.opening == nil || !ans.opening.done {
		a.settleCode(ctx, ans.key, err)
	}
	if errors.Is(err, ErrInvalidCode) && ans.user != nil {
		a.recordFailure(ctx, ans.user, r)
		a.missed(ctx, ans.user.ID, guessedKind(ans.code), r)
	}
	if err != nil {
		return Tokens{}, err
	}
	// Each answer adds an event to the stream; now and then a snapshot keeps
	// what the next load reads short. state has the answer applied: the
	// change recorded it.
	a.snapshotTwoFactor(ctx, ans.user, ans.state, r)
	return t, nil
}

// challengeAnswer is an answer to a login challenge on its way through
// VerifyChallenge: what admitAnswer found, then what the last decision saw.
type challengeAnswer struct {
	token  string
	code   domain.Code
	key    string // the throttle's and the guessing budget's account
	ch     challenges.Challenge
	loaded [][]eventstore.Event // the account, loaded with the answer; nil once used

	user    *domain.User
	state   *domain.TwoFactor
	opening *change
}

// admitAnswer checks the answer's form, spends a guess of the day's budget
// and counts the answer against its challenge and the throttle, loading the
// account on the way.
func (a *TwoFactor) admitAnswer(ctx context.Context, token, code string, r Request) (*challengeAnswer, error) {
	if token == "" {
		return nil, ErrInvalidChallenge
	}
	parsed, err := domain.ParseCode(code)
	if err != nil {
		return nil, ErrInvalidCode
	}
	if a.challenges == nil {
		return nil, ErrInvalidChallenge
	}
	userID, err := a.challenges.User(token)
	if err != nil {
		return nil, ErrInvalidChallenge
	}
	class, err := a.knownNetwork(ctx, userID, r.IP)
	if err != nil {
		return nil, err
	}
	key := secondFactorKey(userID, class)
	if err := a.spendGuess(ctx, key, secondFactorGuessesPerDay); err != nil {
		return nil, err
	}
	ch, loaded, err := a.answer(ctx, token, userID, key)
	if err != nil {
		a.refundGuess(ctx, key) // no code was checked
		return nil, err
	}
	return &challengeAnswer{token: token, code: parsed, key: key, ch: ch, loaded: loaded}, nil
}

// signInWithAnswer decides the answer on the account as it is now and, when
// it is right, opens the session in the same commit.
func (a *TwoFactor) signInWithAnswer(ctx context.Context, ans *challengeAnswer, r Request) (Tokens, error) {
	// The first decision uses the account loaded with the answer; one taken
	// again after a conflict loads it anew.
	var u *domain.User
	var tf *domain.TwoFactor
	var err error
	if ans.loaded != nil {
		u, tf, err = foldAccount(ans.loaded)
		ans.loaded = nil
	} else {
		u, tf, err = a.loadAccount(ctx, ans.ch.UserID)
	}
	if errors.Is(err, ErrNotFound) {
		return Tokens{}, ErrInvalidChallenge
	}
	if err != nil {
		return Tokens{}, err
	}
	if ans.ch.CreatedAt.Before(u.SessionsValidAfter) {
		return Tokens{}, ErrInvalidChallenge // the password was reset since the first factor
	}
	ans.user = u
	events, err := tf.Verify(ans.ch.ID, ans.code, a.now(), a.backupHash(u.ID))
	if errors.Is(err, domain.ErrTwoFactorDisabled) {
		return Tokens{}, ErrInvalidChallenge // turned off since: sign in again
	}
	if err != nil {
		return Tokens{}, twoFactorError(err)
	}
	c := a.newChange(r)
	if err := c.record(tf, domain.TwoFactorStream(u.ID), u.TenantID, u.ID, events...); err != nil {
		return Tokens{}, err
	}
	// The right code settles the try and uses the challenge up in the
	// session's own transaction: two statements, no commits of their own.
	c.also(a.throttle.ResetStatement(ans.key), a.throttle.RefundStatement(ans.key), a.challenges.FinishStatement(ans.token))
	ans.state, ans.opening = tf, c
	if _, backup := events[0].(*domain.BackupCodeUsed); backup {
		// The status read model counts backup codes: let the next read see it.
		return a.sessions.openSession(ctx, c, u, withMFA(ans.ch.AMR), r, projections.TwoFactor{})
	}
	return a.sessions.openSession(ctx, c, u, withMFA(ans.ch.AMR), r)
}

// answer counts an answer against the challenge of token and an attempt
// against the throttle's account (the user's, in the client's class), and
// loads the user's account, all in one round trip and transaction: the token
// names the user under the server's MAC, so nothing waits for the
// challenge's row to say who it is for.
func (a *TwoFactor) answer(ctx context.Context, token string, user uuid.UUID, account string) (challenges.Challenge, [][]eventstore.Event, error) {
	answerSt, answered := a.challenges.AnswerStatement(token)
	attemptSt, admitted := a.throttle.AttemptStatement(account)
	streams, err := a.store.LoadStreamsAfter(ctx, []eventstore.Statement{answerSt, attemptSt},
		domain.UserStream(user), domain.TwoFactorStream(user))
	if err != nil {
		return challenges.Challenge{}, nil, err
	}
	ch, err := answered()
	if err == nil && ch.UserID != user {
		err = ErrInvalidChallenge // only a token this server did not issue could say so
	}
	if err != nil {
		if admitted() {
			a.forgive(ctx, account, nil)
		}
		return challenges.Challenge{}, nil, ErrInvalidChallenge
	}
	if !admitted() {
		// Attempt tries again, and waits or refuses as the throttle says.
		if err := a.attemptCode(ctx, account); err != nil {
			return challenges.Challenge{}, nil, err
		}
	}
	return ch, streams, nil
}

// loadAccount loads the user and their two-factor aggregate, in one round
// trip.
func (a *core) loadAccount(ctx context.Context, id uuid.UUID) (*domain.User, *domain.TwoFactor, error) {
	streams, err := a.store.LoadStreams(ctx, domain.UserStream(id), domain.TwoFactorStream(id))
	if err != nil {
		return nil, nil, err
	}
	return foldAccount(streams)
}

// foldAccount builds the user and their two-factor aggregate from their
// streams, in that order.
func foldAccount(streams [][]eventstore.Event) (*domain.User, *domain.TwoFactor, error) {
	u := &domain.User{}
	if err := fold(streams[0], u); err != nil {
		return nil, nil, err
	}
	if !u.Exists() {
		return nil, nil, ErrNotFound
	}
	tf, err := foldTwoFactor(streams[1])
	if err != nil {
		return nil, nil, err
	}
	return u, tf, nil
}

func (a *TwoFactor) commitTwoFactor(ctx context.Context, u *domain.User, tf *domain.TwoFactor, r Request, events []domain.Event) (eventstore.Cursor, error) {
	c := a.newChange(r)
	if err := c.record(tf, domain.TwoFactorStream(u.ID), u.TenantID, u.ID, events...); err != nil {
		return eventstore.Cursor{}, err
	}
	committed, err := a.commit(ctx, c)
	return committed.Last, err
}

// twoFactorError maps the aggregate's refusals to the API's errors.
func twoFactorError(err error) error {
	switch {
	case errors.Is(err, domain.ErrWrongCode):
		return ErrInvalidCode
	case errors.Is(err, domain.ErrChallengeUsed):
		return ErrInvalidChallenge
	case errors.Is(err, domain.ErrTwoFactorEnabled), errors.Is(err, domain.ErrTwoFactorDisabled), errors.Is(err, domain.ErrNoSetupPending):
		return fmt.Errorf("%w: %w", ErrConflict, err)
	}
	return err
}

// admitSecondFactor admits one check of a user's second-factor code from
// the client's network: within its class's daily budget and slow-down. It
// returns the class's key, for settleCode.
func (a *TwoFactor) admitSecondFactor(ctx context.Context, user uuid.UUID, r Request) (string, error) {
	class, err := a.knownNetwork(ctx, user, r.IP)
	if err != nil {
		return "", err
	}
	key := secondFactorKey(user, class)
	if err := a.spendGuess(ctx, key, secondFactorGuessesPerDay); err != nil {
		return "", err
	}
	if err := a.attemptCode(ctx, key); err != nil {
		a.refundGuess(ctx, key)
		return "", err
	}
	return key, nil
}

// guessedKind names a second-factor code's kind for CodeGuessingDetected.
func guessedKind(c domain.Code) string {
	if c.Kind == domain.BackupCode {
		return domain.GuessedBackup
	}
	return domain.GuessedTOTP
}

// attemptCode admits one check of a second-factor code against the
// throttle's account (secondFactorKey): wrong codes in a row slow the next
// ones down (ratelimit's login policy), so guessing the six digits stays
// hopeless however many challenges are opened.
func (a *guard) attemptCode(ctx context.Context, account string) error {
	wait, err := a.throttle.Attempt(ctx, account)
	if err != nil {
		return err
	}
	if wait > 0 {
		return &RetryLaterError{After: wait}
	}
	return nil
}

// settleCode reports how a checked second-factor code turned out: a wrong
// code counts against the throttle's account; a right one clears its
// failures, and any other end (the challenge had expired, say) only ends the
// attempt; both give the guess back to the day's budget.
func (a *guard) settleCode(ctx context.Context, account string, err error) {
	switch {
	case errors.Is(err, ErrInvalidCode):
		a.failed(ctx, account)
	case err == nil:
		a.reset(ctx, account)
		a.refundGuess(ctx, account)
	default:
		a.forgive(ctx, account, nil)
		a.refundGuess(ctx, account)
	}
}

// recordFailure is the audit record of a wrong second factor.
func (a *TwoFactor) recordFailure(ctx context.Context, u *domain.User, r Request) {
	c := a.newChange(r)
	if err := c.note(domain.LoginStream(u.ID), u.TenantID, u.ID, &domain.LoginFailed{UserID: u.ID, Reason: "wrong_second_factor"}); err != nil {
		return
	}
	if _, err := a.commit(ctx, c); err != nil {
		a.log.Error("recording a failed second factor", "err", err)
	}
}

func withMFA(amr []string) []string {
	out := slices.Clone(amr)
	if !slices.Contains(out, "mfa") {
		out = append(out, "mfa")
	}
	return out
}

// newBackupCodes draws domain.BackupCodeCount distinct 8-digit codes from
// crypto/rand, as shown ("1234-5678") and as digits.
func newBackupCodes() (shown, digits []string, err error) {
	seen := map[string]bool{}
	limit := big.NewInt(100_000_000)
	for len(digits) < domain.BackupCodeCount {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, nil, fmt.Errorf("draw a backup code: %w", err)
		}
		d := fmt.Sprintf("%08d", n.Int64())
		if seen[d] {
			continue
		}
		seen[d] = true
		digits = append(digits, d)
		shown = append(shown, d[:4]+"-"+d[4:])
	}
	return shown, digits, nil
}

// backupHash returns the hash of a user's backup code digits: an HMAC under
// a server key (eight digits are brute-forced in no time from a plain hash),
// bound to the user so that a hash means nothing on another account.
func (a *TwoFactor) backupHash(user uuid.UUID) func(digits string) string {
	return func(digits string) string {
		m := hmac.New(sha256.New, a.backupCodeKey)
		m.Write([]byte("backup-code\x00"))
		m.Write(user[:])
		m.Write([]byte{0})
		m.Write([]byte(digits))
		return hex.EncodeToString(m.Sum(nil))
	}
}

func (a *TwoFactor) backupHashes(user uuid.UUID, digits []string) []string {
	hash := a.backupHash(user)
	out := make([]string, len(digits))
	for i, d := range digits {
		out[i] = hash(d)
	}
	return out
}
