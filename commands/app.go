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
)

// Codes issues and consumes emailed one-time codes (codes.Store).
type Codes interface {
	Issue(ctx context.Context, email, purpose string, ttl time.Duration, payload []byte) (string, error)
	Consume(ctx context.Context, email, purpose, code string) ([]byte, error)
	// IssueIn and ConsumeIn are Issue and Consume of a class's code.
	IssueIn(ctx context.Context, class ratelimit.Class, email, purpose string, ttl time.Duration, payload []byte) (string, error)
	ConsumeIn(ctx context.Context, class ratelimit.Class, email, purpose, code string) ([]byte, error)
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
	// Miss counts a user's wrong code towards the day's guessing notice.
	Miss(ctx context.Context, user uuid.UUID) (ratelimit.Misses, error)
}

// Limits counts requests per key across instances (ratelimit.Limiter).
type Limits interface {
	Allow(ctx context.Context, key string, lim ratelimit.Limit) (bool, time.Duration, error)
}

// Waiter waits for a projection to pass a place in the log, and says which
// events a projection uses (projections.Runner).
type Waiter interface {
	Wait(ctx context.Context, projection string, c eventstore.Cursor) error
	Uses(projection, eventType string) bool
}

// Deps is what the commands need; every field is required.
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
	Revoked     *revocation.Set
	Log         *slog.Logger
	Now         func() time.Time
	// RefreshGrace is how long a rotated-away refresh token still answers.
	RefreshGrace time.Duration
	// RefreshTTL is how long a refresh token lives (AUTHD_REFRESH_TOKEN_TTL).
	RefreshTTL time.Duration
	// WaitTimeout bounds how long a write waits for read-your-writes.
	WaitTimeout time.Duration
	// Product names the service in authenticator apps (AUTHD_PRODUCT_NAME).
	Product string

	TwoFactor TwoFactorConfig
	Passkeys  PasskeyConfig
	Google    GoogleConfig
}

// App runs the commands of authd's account API.
type App struct {
	d Deps
	// sessions holds the state of recently refreshed sessions, so that a
	// rotation, the commonest write there is, need not read its stream
	// first. Its append names the version the state was at, so a state that
	// another instance has moved on only costs a conflict and a reload.
	sessions *lru.Cache[uuid.UUID, domain.Session]
	// jobs is the work handed off to run after the answer (handOff, Run).
	jobs chan func(context.Context)
}

// sessionCacheSize bounds the cached session states, at a few hundred bytes
// each.
const sessionCacheSize = 100_000

// New returns the commands over d.
func New(d Deps) *App {
	sessions, err := lru.New[uuid.UUID, domain.Session](sessionCacheSize)
	if err != nil {
		panic(err) // only for a size below 1
	}
	return &App{d: d, sessions: sessions, jobs: make(chan func(context.Context), backgroundQueue)}
}

// RefreshRules are the configured lifetimes of refresh tokens, by whose
// Lives a session is also listed as active.
func (a *App) RefreshRules() domain.RefreshRules {
	return domain.RefreshRules{TTL: a.d.RefreshTTL, Grace: a.d.RefreshGrace}
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
	ErrConflict            = errors.New("conflict")
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

func (a *App) newChange(r Request) *change {
	return &change{meta: r.metadata(), at: a.d.Now()}
}

// add queues events for a stream the command saw at version expected.
func (c *change) add(stream string, expected int64, tenant, user uuid.UUID, events ...domain.Event) error {
	if len(events) == 0 {
		return nil
	}
	out := make([]eventstore.Event, len(events))
	for i, e := range events {
		enc, err := Encode(e)
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

func (a *App) commit(ctx context.Context, c *change) (eventstore.Committed, error) {
	committed, err := a.d.Store.Write(ctx, c.write)
	c.done = err == nil
	return committed, translate(err)
}

// wait gives read-your-writes: it returns once the projections have applied
// the write, or after WaitTimeout, logging that the next read may be stale.
// The write has succeeded either way, so a slow projection never fails it.
func (a *App) wait(ctx context.Context, at eventstore.Cursor, projections ...string) {
	ctx, cancel := context.WithTimeout(ctx, a.d.WaitTimeout)
	defer cancel()
	for _, p := range projections {
		if err := a.d.Projections.Wait(ctx, p, at); err != nil {
			a.d.Log.Warn("read-your-writes wait gave up; the next read may not show this write", "projection", p, "err", err)
			return
		}
	}
}

// waitFor is wait for a committed change, on those of the projections that
// use one of its events: a read model that none of them changes shows the
// change already. Waiting on it anyway waited for its checkpoint to pass
// events it skips, which an instance that does not apply it learns only when
// the skips are saved.
func (a *App) waitFor(ctx context.Context, c eventstore.Committed, projections ...string) {
	concerned := projections[:0:0]
	for _, p := range projections {
		if slices.ContainsFunc(c.Events, func(e eventstore.Event) bool { return a.d.Projections.Uses(p, e.Type) }) {
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

// load rebuilds an aggregate from its stream.
func (a *App) load(ctx context.Context, stream string, agg applier) error {
	events, err := a.d.Store.Load(ctx, stream)
	if err != nil {
		return err
	}
	return fold(events, agg)
}

// fold applies events to agg in order.
func fold(events []eventstore.Event, agg applier) error {
	for _, e := range events {
		d, err := Decode(e)
		if err != nil {
			return err
		}
		agg.Apply(d, e.OccurredAt)
	}
	return nil
}

func (a *App) loadUser(ctx context.Context, id uuid.UUID) (*domain.User, error) {
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
func (a *App) loadSession(ctx context.Context, id uuid.UUID) (*domain.Session, error) {
	events, err := a.d.Store.LoadEnds(ctx, domain.SessionStream(id), domain.SessionStateTail)
	if err != nil {
		return nil, err
	}
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
func (a *App) emailOwner(ctx context.Context, email string) (uuid.UUID, bool, error) {
	owner, err := a.d.Store.Lookup(ctx, emailScope, email)
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
func (a *App) issueCode(ctx context.Context, email, purpose string, kind mail.Purpose) error {
	return a.issueCodeIn(ctx, ratelimit.Unknown, email, purpose, kind, true)
}

// issueCodeIn is issueCode for a code of class, counted against that class's
// quota. It does the same work whether or not send is set (the address has
// an account): the code is issued and a mail handed off either way, the
// one for an address without an account a job that sends nothing.
func (a *App) issueCodeIn(ctx context.Context, class ratelimit.Class, email, purpose string, kind mail.Purpose, send bool) error {
	ok, _, err := a.d.Limits.Allow(ctx, codesKey(email, class), codesPerEmail())
	if err != nil {
		return err
	}
	if !ok {
		a.d.Log.Info("code not sent: too many codes for this address lately", "purpose", purpose, "class", string(class))
		return nil
	}
	code, err := a.d.Codes.IssueIn(ctx, class, email, purpose, CodeTTL, nil)
	if err != nil {
		return err
	}
	if !send {
		a.handOff("code email", func(context.Context) {})
		return nil
	}
	email = strings.Clone(email) // the request's buffer may hold it, and is reused after the answer
	a.handOff("code email", func(ctx context.Context) { a.sendCode(ctx, email, code, kind, CodeTTL) })
	return nil
}

// sendCode emails a code. It runs after the answer (handOff): the answer
// must not take longer for an address that exists (no enumeration by
// timing), and a slow mail server must not stall signups.
func (a *App) sendCode(ctx context.Context, email, code string, purpose mail.Purpose, ttl time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// An account has no locale until PATCH /me gives it one (issue 17), so
	// the code mails are English or the operator's "en" templates.
	msg, err := a.d.Mails.Code(email, "", code, purpose, ttl)
	if err == nil {
		err = a.d.Mail.Send(ctx, msg)
	}
	if err != nil {
		a.d.Log.Error("sending a code email failed", "purpose", purpose.String(), "err", err)
	}
}
