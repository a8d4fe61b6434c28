package commands

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/mail"
	"github.com/authd/authd/internal/password"
	"github.com/authd/authd/internal/ratelimit"
	"github.com/authd/authd/internal/revocation"
	"github.com/authd/authd/internal/tokens"
	"github.com/authd/authd/projections"
)

// Codes issues and checks emailed one-time codes (codes.Store). A right
// code is used up by the statement Check returns, committed with what the
// code earned: a commit that fails leaves the code for the client's retry.
type Codes interface {
	Issue(ctx context.Context, email, purpose string, ttl time.Duration, payload []byte) (string, error)
	Check(ctx context.Context, email, purpose, code string) ([]byte, eventstore.Statement, error)
	// IssueIn and CheckIn are Issue and Check of a class's code.
	IssueIn(ctx context.Context, class ratelimit.Class, email, purpose string, ttl time.Duration, payload []byte) (string, error)
	CheckIn(ctx context.Context, class ratelimit.Class, email, purpose, code string) ([]byte, eventstore.Statement, error)
}

// Throttle slows down the logins of an account that keeps getting its
// password wrong (ratelimit.Limiter). Attempt counts a login as failed until
// Reset says it was right, and answers how long the account must wait first.
// ResetStatement is Reset to commit with the events the right password (or
// code) earned.
type Throttle interface {
	Attempt(ctx context.Context, account string) (time.Duration, error)
	// AttemptStatement is Attempt's first try, ahead of a load.
	AttemptStatement(account string) (st eventstore.Statement, admitted func() bool)
	Fail(ctx context.Context, account string) error
	Reset(ctx context.Context, account string) error
	ResetStatement(account string) eventstore.Statement
	Forgive(ctx context.Context, account string) error
	// Known says whether the network of ip signed in to user lately.
	Known(ctx context.Context, user uuid.UUID, ip string) (bool, error)
	// Spend and Refund keep a key's daily guessing budget.
	Spend(ctx context.Context, key string, perDay int) (bool, time.Duration, error)
	Refund(ctx context.Context, key string) error
	// RefundStatement is Refund to commit with the events the right guess
	// earned.
	RefundStatement(key string) eventstore.Statement
	// Forget deletes the counts kept under keys, in an erasing commit.
	Forget(keys ...string) eventstore.Statement
	// Miss counts a user's wrong code towards the day's guessing notice.
	Miss(ctx context.Context, user uuid.UUID) (ratelimit.Misses, error)
}

// Limits counts requests per key across instances (ratelimit.Limiter).
type Limits interface {
	Allow(ctx context.Context, key string, lim ratelimit.Limit) (bool, time.Duration, error)
}

// Waiter waits for a projection to pass a place in the log, and says which
// events a projection uses (projections.Runner). A projection is named by
// its value (projections.Sessions{}): a misspelt name does not compile, where
// a string compiled, the wait answered "unknown projection", and
// read-your-writes silently stopped.
type Waiter interface {
	Wait(ctx context.Context, p projections.Projection, c eventstore.Cursor) error
	Uses(p projections.Projection, eventType string) bool
}

// SessionReads is the sessions read model as the write side queries it
// (projections.SessionReads): the write side, not the edge, owns the query
// that feeds a write (the sessions a reset or "sign out everywhere else"
// revokes).
type SessionReads interface {
	// Active lists the user's sessions neither revoked nor idle since
	// since, newest first.
	Active(ctx context.Context, user uuid.UUID, since time.Time) ([]projections.SessionView, error)
	// Behind lists the user's sessions whose streams hold events the read
	// model has not applied yet.
	Behind(ctx context.Context, user uuid.UUID) ([]uuid.UUID, error)
}

// Deps is what the commands need, as the server wires them; every field is
// required but Farewells. New hands each part of App (Accounts, Sessions, TwoFactor,
// Passkeys, Google, Signups) only the fields its commands use.
type Deps struct {
	Store       *eventstore.Store
	Hasher      *password.Hasher
	Codes       Codes
	Mail        mail.Sender
	Mails       *mail.Templates // the wording of every mail
	Keys        *tokens.Keyring
	Throttle    Throttle
	Limits      Limits
	Projections Waiter
	// SessionReads lists a user's sessions from the read model.
	SessionReads SessionReads
	Revoked      *revocation.Set
	Log          *slog.Logger
	Now          func() time.Time
	// RefreshGrace is how long a rotated-away refresh token still answers.
	RefreshGrace time.Duration
	// RefreshTTL is how long a refresh token lives (AUTHD_REFRESH_TOKEN_TTL):
	// also how long a session without a refresh stays listed as active.
	RefreshTTL time.Duration
	// ReauthMaxAge is how old a token's auth_time may be for a sensitive
	// change (AUTHD_REAUTH_MAX_AGE).
	ReauthMaxAge time.Duration
	// WaitTimeout bounds how long a write waits for read-your-writes.
	WaitTimeout time.Duration
	// Product names the service in authenticator apps (AUTHD_PRODUCT_NAME).
	Product string
	// Farewells keeps a deleted account's address for its farewell notice;
	// nil when this instance sends no notices (AUTHD_NOTICES=off), and then
	// no address outlives the deletion's commit.
	Farewells Farewells

	TwoFactor TwoFactorConfig
	Passkeys  PasskeyConfig
	Google    GoogleConfig
}

// App runs the commands of authd's account API. It is made of one part per
// capability, each holding exactly what its commands use, so that a reader
// of a command sees what it can reach: Accounts (signing up and in with a
// password or an emailed code, resets), Sessions, TwoFactor, Passkeys,
// Google, Signups. Embedding them keeps app.Login(...) working; core is what
// every part shares.
type App struct {
	*core
	*Accounts
	*Sessions
	*TwoFactor
	*Passkeys
	*Google
	*Signups
}

// core is what every command uses: the log, the clock, the logger, the
// read-your-writes wait, and the queue of work handed off to run after the
// answer.
type core struct {
	store       *eventstore.Store
	log         *slog.Logger
	now         func() time.Time
	waiter      Waiter
	waitTimeout time.Duration
	// jobs is the work handed off to run after the answer (handOff, Run).
	jobs chan func(context.Context)
}

// sessionCacheSize bounds the cached session states, at a few hundred bytes
// each.
const sessionCacheSize = 100_000

// New returns the commands over d, each part given its share of d.
func New(d Deps) *App {
	cache, err := lru.New[uuid.UUID, domain.Session](sessionCacheSize)
	if err != nil {
		panic(err) // only for a size below 1
	}
	c := &core{store: d.Store, log: d.Log, now: d.Now, waiter: d.Projections, waitTimeout: d.WaitTimeout,
		jobs: make(chan func(context.Context), backgroundQueue)}
	g := &guard{core: c, throttle: d.Throttle}
	sessions := &Sessions{core: c, keys: d.Keys, revoked: d.Revoked, reads: d.SessionReads,
		rules: domain.RefreshRules{TTL: d.RefreshTTL, Grace: d.RefreshGrace}, reauthMaxAge: d.ReauthMaxAge, cache: cache}
	issuer := d.TwoFactor.Issuer
	if issuer == "" {
		issuer = d.Product
	}
	twoFactor := &TwoFactor{guard: g, challenges: d.TwoFactor.Challenges, backupCodeKey: d.TwoFactor.BackupCodeKey,
		issuer: issuer, sessions: sessions}
	passkeys := &Passkeys{core: c, webAuthn: d.Passkeys.WebAuthn, ceremonies: d.Passkeys.Ceremonies,
		ceremonyTTL: d.Passkeys.CeremonyTTL, sessions: sessions}
	return &App{
		core: c,
		Accounts: &Accounts{guard: g, hasher: d.Hasher, codes: d.Codes, mail: d.Mail, limits: d.Limits,
			mails: d.Mails, revoked: d.Revoked, twoFactor: twoFactor, sessions: sessions, passkeys: passkeys,
			erase: eraser{throttle: d.Throttle}, farewells: d.Farewells},
		Sessions:  sessions,
		TwoFactor: twoFactor,
		Passkeys:  passkeys,
		Google:    &Google{core: c, cfg: d.Google, twoFactor: twoFactor},
		Signups:   &Signups{core: c, erase: eraser{throttle: d.Throttle}},
	}
}

// Request is who is asking: it becomes each event's metadata.
type Request struct {
	IP        string
	UserAgent string
	Device    string
	RequestID string
}

func (r Request) metadata() eventstore.Metadata {
	return eventstore.Metadata{IP: r.IP, UserAgent: r.UserAgent, RequestID: r.RequestID}
}

func (r Request) client() domain.Client {
	return domain.Client{IP: r.IP, UserAgent: r.UserAgent, Device: r.Device}
}

// Errors the HTTP edge maps to API codes.
var (
	ErrInvalidCredentials  = errors.New("invalid email or password")
	ErrEmailNotVerified    = errors.New("email address is not verified")
	ErrInvalidCode         = errors.New("invalid or expired code")
	ErrInvalidRefreshToken = errors.New("invalid refresh token")
	ErrNotFound            = errors.New("not found")
	// ErrReauthenticationRequired refuses a sensitive change to a caller
	// whose proof of who they are is too old, or missing (RequireFresh).
	ErrReauthenticationRequired = errors.New("reauthentication required")
	ErrConflict                 = errors.New("conflict")
	// ErrBusy refuses a request for now, to be retried shortly.
	ErrBusy = errors.New("every password-hashing slot is taken")
)

// ValidationError says which input was wrong and how.
type ValidationError struct {
	Field   string
	Message string
}

func (e *ValidationError) Error() string { return e.Field + ": " + e.Message }

// RetryLaterError refuses a request for now.
type RetryLaterError struct {
	After time.Duration
}

func (e *RetryLaterError) Error() string {
	return fmt.Sprintf("too many attempts; retry in %s", e.After.Round(time.Second))
}

// change collects the events of one command, ready for one atomic write.
type change struct {
	meta    eventstore.Metadata
	at      time.Time
	write   eventstore.Change
	applied []domain.Event
	done    bool // committed: its statements ran
}

func (a *core) newChange(r Request) *change {
	return &change{meta: r.metadata(), at: a.now()}
}

// record queues events for the stream agg was rebuilt from, expecting the
// version agg was rebuilt to, and applies them to agg (hallgren's
// TrackChange): what the change records for agg next expects the version
// after them, and agg shows what the change commits. It is the one way a
// command appends to a stream it decided on, so no version is counted by
// hand. tenant and user go to the events' envelopes.
func (c *change) record(agg domain.Aggregate, stream string, tenant, user uuid.UUID, events ...domain.Event) error {
	if err := c.add(stream, agg.StreamVersion(), tenant, user, events...); err != nil {
		return err
	}
	for _, e := range events {
		agg.Apply(e, c.at)
	}
	return nil
}

// create queues the first events of a stream that must not exist yet, and
// that nothing is rebuilt from in the command (a tenant, a day's guessing
// notice): a second creation conflicts.
func (c *change) create(stream string, tenant, user uuid.UUID, events ...domain.Event) error {
	return c.add(stream, 0, tenant, user, events...)
}

// note queues events for a stream of records that no decision is made on
// (failed logins, signup attempts): appended at any version, never in
// conflict.
func (c *change) note(stream string, tenant, user uuid.UUID, events ...domain.Event) error {
	return c.add(stream, eventstore.AnyVersion, tenant, user, events...)
}

// add queues events for a stream expected at version expected: record,
// create or note say which version that is.
func (c *change) add(stream string, expected int64, tenant, user uuid.UUID, events ...domain.Event) error {
	if len(events) == 0 {
		return nil
	}
	out := make([]eventstore.Event, len(events))
	for i, e := range events {
		enc, err := eventstore.Encode(e)
		if err != nil {
			return err
		}
		enc.TenantID, enc.UserID, enc.Metadata, enc.OccurredAt = tenant, user, c.meta, c.at
		out[i] = enc
	}
	c.write.Appends = append(c.write.Appends, eventstore.StreamAppend{Stream: stream, Expected: expected, Events: out})
	c.applied = append(c.applied, events...)
	return nil
}

// also has statements commit with the change's events.
func (c *change) also(statements ...eventstore.Statement) {
	c.write.Also = append(c.write.Also, statements...)
}

// empty says whether committing c would write nothing.
func (c *change) empty() bool {
	return len(c.write.Appends) == 0 && len(c.write.Also) == 0
}

func (a *core) commit(ctx context.Context, c *change) (eventstore.Committed, error) {
	committed, err := a.store.Write(ctx, c.write)
	c.done = err == nil
	return committed, translate(err)
}

// wait gives read-your-writes: it returns once the projections have applied
// the write, or after WaitTimeout, logging that the next read may be stale.
// The write has succeeded either way, so a slow projection never fails it.
func (a *core) wait(ctx context.Context, at eventstore.Cursor, models ...projections.Projection) {
	ctx, cancel := context.WithTimeout(ctx, a.waitTimeout)
	defer cancel()
	for _, p := range models {
		if err := a.waiter.Wait(ctx, p, at); err != nil {
			a.log.Warn("read-your-writes wait gave up; the next read may not show this write", "projection", p.Name(), "err", err)
			return
		}
	}
}

// waitFor is wait for a committed change, on those of the projections that
// use one of its events: a read model that none of them changes shows the
// change already. Waiting on it anyway waited for its checkpoint to pass
// events it skips, which an instance that does not apply it learns only when
// the skips are saved.
func (a *core) waitFor(ctx context.Context, c eventstore.Committed, models ...projections.Projection) {
	concerned := models[:0:0]
	for _, p := range models {
		if slices.ContainsFunc(c.Events, func(e eventstore.Event) bool { return a.waiter.Uses(p, e.Type) }) {
			concerned = append(concerned, p)
		}
	}
	a.wait(ctx, c.Last, concerned...)
}

// retry runs a decide-and-append step again, on fresh state, when another
// writer got to a stream first: the decision may be different now.
func retry[T any](ctx context.Context, step func() (T, error)) (T, error) {
	for attempt := 1; ; attempt++ {
		v, err := step()
		if !errors.Is(err, eventstore.ErrConflict) || attempt == 5 || ctx.Err() != nil {
			return v, translate(err)
		}
	}
}

// applier is an aggregate rebuilt from its events.
type applier interface {
	Apply(e domain.Event, at time.Time)
}

// load rebuilds an aggregate from its stream.
func (a *core) load(ctx context.Context, stream string, agg applier) error {
	events, err := a.store.Load(ctx, stream)
	if err != nil {
		return err
	}
	return fold(events, agg)
}

// fold applies events to agg in order.
func fold(events []eventstore.Event, agg applier) error {
	for _, e := range events {
		d, err := eventstore.Decode(e)
		if err != nil {
			return err
		}
		agg.Apply(d, e.OccurredAt)
	}
	return nil
}

func (a *core) loadUser(ctx context.Context, id uuid.UUID) (*domain.User, error) {
	u := &domain.User{}
	if err := a.load(ctx, domain.UserStream(id), u); err != nil {
		return nil, err
	}
	return u, nil
}

// loadSession rebuilds a session from the ends of its stream only: every
// refresh adds an event, and a refresh must not get slower the more often
// the session has been refreshed (domain.SessionStateTail says why the ends
// are enough).
func (a *Sessions) loadSession(ctx context.Context, id uuid.UUID) (*domain.Session, error) {
	events, err := a.store.LoadEnds(ctx, domain.SessionStream(id), domain.SessionStateTail)
	if err != nil {
		return nil, err
	}
	return foldSession(events)
}

// loadSessions is loadSession of several sessions in one round trip.
func (a *Sessions) loadSessions(ctx context.Context, ids []uuid.UUID) ([]*domain.Session, error) {
	streams := make([]string, len(ids))
	for i, id := range ids {
		streams[i] = domain.SessionStream(id)
	}
	loaded, err := a.store.LoadEndsOf(ctx, streams, domain.SessionStateTail)
	if err != nil {
		return nil, err
	}
	out := make([]*domain.Session, len(ids))
	for i, events := range loaded {
		if out[i], err = foldSession(events); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// foldSession rebuilds a session from the ends of its stream.
func foldSession(events []eventstore.Event) (*domain.Session, error) {
	s := &domain.Session{}
	if err := fold(events, s); err != nil {
		return nil, err
	}
	s.Version = lastVersion(events)
	return s, nil
}

// lastVersion is the version of a stream whose events were read only in part
// (its ends, or from a snapshot on): an aggregate that counts the events it
// folded would be behind it.
func lastVersion(events []eventstore.Event) int64 {
	if len(events) == 0 {
		return 0
	}
	return events[len(events)-1].Version
}

// emailOwner finds the user who holds an email address.
func (a *core) emailOwner(ctx context.Context, email string) (uuid.UUID, bool, error) {
	owner, err := a.store.Lookup(ctx, emailScope, email)
	if errors.Is(err, eventstore.ErrNotFound) {
		return uuid.Nil, false, nil
	}
	if err != nil {
		return uuid.Nil, false, err
	}
	id, err := uuid.Parse(owner)
	if err != nil {
		return uuid.Nil, false, fmt.Errorf("email index holds a bad owner %q: %w", owner, err)
	}
	return id, true, nil
}

const emailScope = "email"

// codesPerEmail bounds the codes one address can be sent: each code brings
// fresh tries, so without it the per-code try limit could be reset at will,
// and an address could be flooded with mail.
func codesPerEmail() ratelimit.Limit { return ratelimit.Limit{Requests: 5, Window: 15 * time.Minute} }

// issueCode issues and emails a code, unless the address has had its share
// lately: then it quietly sends nothing, so the answer still says nothing
// about whether the address has an account.
func (a *Accounts) issueCode(ctx context.Context, email, purpose string, kind mail.Purpose) error {
	return a.issueCodeIn(ctx, ratelimit.Unknown, email, purpose, kind, true)
}

// issueCodeIn is issueCode for a code of class, counted against that class's
// quota. It does the same work whether or not send is set (the address has
// an account): the code is issued and a mail handed off either way, the
// one for an address without an account a job that sends nothing. The
// mail is in the locale of the address's account, found after the answer.
func (a *Accounts) issueCodeIn(ctx context.Context, class ratelimit.Class, email, purpose string, kind mail.Purpose, send bool) error {
	return a.issueCodeFor(ctx, class, email, "", purpose, kind, nil, send)
}

// issueCodeFor is issueCodeIn with the mail's locale (empty: the locale of
// the address's account, if any) and the code's payload.
func (a *Accounts) issueCodeFor(ctx context.Context, class ratelimit.Class, email, locale, purpose string, kind mail.Purpose, payload []byte, send bool) error {
	ok, _, err := a.limits.Allow(ctx, codesKey(email, class), codesPerEmail())
	if err != nil {
		return err
	}
	if !ok {
		a.log.Info("code not sent: too many codes for this address lately", "purpose", purpose, "class", string(class))
		return nil
	}
	code, err := a.codes.IssueIn(ctx, class, email, purpose, CodeTTL, payload)
	if err != nil {
		return err
	}
	if !send {
		a.handOff("code email", func(context.Context) {})
		return nil
	}
	email, locale = strings.Clone(email), strings.Clone(locale) // the request's buffer may hold them, and is reused after the answer
	a.handOff("code email", func(ctx context.Context) { a.sendCode(ctx, email, locale, code, kind, CodeTTL) })
	return nil
}

// sendCode emails a code, in locale or, when that is empty, in the locale
// of the account the address belongs to. It runs after the answer
// (handOff): the answer must not take longer for an address that exists
// (no enumeration by timing), and a slow mail server must not stall
// signups.
func (a *Accounts) sendCode(ctx context.Context, email, locale, code string, purpose mail.Purpose, ttl time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if locale == "" {
		locale = a.localeOf(ctx, email)
	}
	msg, err := a.mails.Code(email, locale, code, purpose, ttl)
	if err == nil {
		err = a.mail.Send(ctx, msg)
	}
	if err != nil {
		a.log.Error("sending a code email failed", "purpose", purpose.String(), "err", err)
	}
}

// localeOf is the locale of the account whose address email is, or ""
// (English) when there is none or it cannot be read: a mail in English is
// better than none.
func (a *Accounts) localeOf(ctx context.Context, email string) string {
	id, found, err := a.emailOwner(ctx, email)
	if err != nil || !found {
		return ""
	}
	u, err := a.loadUser(ctx, id)
	if err != nil || u.Email != email {
		return ""
	}
	return u.Locale
}
