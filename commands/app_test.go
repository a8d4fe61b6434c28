package commands

import (
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/go-webauthn/webauthn/webauthn"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/ceremony"
	"github.com/authd/authd/internal/challenges"
	"github.com/authd/authd/internal/codes"
	"github.com/authd/authd/internal/config"
	"github.com/authd/authd/internal/googleauth"
	"github.com/authd/authd/internal/mail"
	"github.com/authd/authd/internal/natsbus"
	"github.com/authd/authd/internal/password"
	"github.com/authd/authd/internal/pgpool"
	"github.com/authd/authd/internal/ratelimit"
	"github.com/authd/authd/internal/revocation"
	"github.com/authd/authd/internal/seal"
	"github.com/authd/authd/internal/testenv"
	"github.com/authd/authd/internal/tokens"
	"github.com/authd/authd/projections"
)

// testEnv is what the Apps of one test share, as the instances of one
// deployment do: a database, a JetStream stream, a master key and a Mailpit.
type testEnv struct {
	url    string
	master []byte
	bus    *natsbus.Bus
	mail   *testenv.MailpitServer // nil: codes are mailed to the log
}

// testApp is one instance of authd's write side, built as cmd/authd builds
// it: the App with the relay, the projections and the revocation feed
// running, and the parts a test checks the commands' outcome through.
type testApp struct {
	*App
	env     *testEnv
	pool    *pgxpool.Pool
	store   *eventstore.Store
	keys    *tokens.Keyring
	revoked *revocation.Set
	limiter *ratelimit.Limiter
}

type appOptions struct {
	env        *testEnv
	now        func() time.Time
	limitsNow  func() time.Time
	grace      time.Duration
	statements *testenv.Statements
	queued     bool
	logMail    bool
	google     *testenv.GoogleIdP
}

// appOption changes one thing newApp builds.
type appOption func(*appOptions)

// sharing has the App join the env of another (a second instance).
func sharing(other *testApp) appOption { return func(o *appOptions) { o.env = other.env } }

// clock has the commands decide by now (the rest of the App keeps the real
// clock, as cmd/authd's tests of expiry do).
func clock(now func() time.Time) appOption { return func(o *appOptions) { o.now = now } }

// limitsClock has the rate limits, the login slow-down and the guessing
// budgets go by now, so that a test decides when a wait is over.
func limitsClock(now func() time.Time) appOption { return func(o *appOptions) { o.limitsNow = now } }

// grace sets how long a rotated-away refresh token still answers.
func grace(d time.Duration) appOption { return func(o *appOptions) { o.grace = d } }

// traced records the statements of the App's pool that run under one of
// st's labels.
func traced(st *testenv.Statements) appOption { return func(o *appOptions) { o.statements = st } }

// queued runs no worker for the handed-off jobs: they stay in App.jobs, to
// be counted.
func queued() appOption { return func(o *appOptions) { o.queued = true } }

// mailToLog sends the codes to the log instead of a Mailpit, for a test that
// never reads them.
func mailToLog() appOption { return func(o *appOptions) { o.logMail = true } }

// google turns Google sign-in on, with idp as Google.
func google(idp *testenv.GoogleIdP) appOption { return func(o *appOptions) { o.google = idp } }

// newApp builds an App on a fresh database, JetStream stream and Mailpit of
// the test's own (or, with sharing, another App's), with real parts
// throughout, and stops it when the test ends. Every test of the commands
// builds its Apps here.
func newApp(t *testing.T, opts ...appOption) *testApp {
	t.Helper()
	o := appOptions{now: time.Now, limitsNow: time.Now, grace: config.DefaultRefreshReuseGrace}
	for _, opt := range opts {
		opt(&o)
	}
	env := o.env
	if env == nil {
		_, url := testenv.Database(t)
		env = &testEnv{url: url, master: make([]byte, seal.KeySize), bus: testenv.NATS(t, testenv.MachineNATS)}
		if _, err := rand.Read(env.master); err != nil {
			t.Fatal(err)
		}
		if !o.logMail {
			env.mail = testenv.Mailpit(t)
		}
	}
	log := testenv.Logger(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// The relay and each projection hold a connection while they
	// lead; the commands share the rest.
	held := 1 + len(projections.All())
	size := int32(held + 4)
	var pool *pgxpool.Pool
	if o.statements != nil {
		pool = o.statements.Pool(t, env.url, size)
	} else {
		var err error
		if pool, err = pgpool.Open(ctx, env.url, size); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
	}
	sealer, err := seal.New(env.master)
	if err != nil {
		t.Fatal(err)
	}
	store := eventstore.NewStore(pool, sealer, prometheus.NewRegistry())
	relay := eventstore.NewRelay(store, env.bus, eventstore.RelayConfig{}, log, nil)
	runner := projections.NewRunner(pool, env.bus, projections.All(), projections.Config{}, log, nil)
	keys, err := tokens.Open(ctx, pool, sealer, tokens.Options{Issuer: config.DefaultIssuer, AccessTTL: config.DefaultAccessTokenTTL})
	if err != nil {
		t.Fatal(err)
	}
	revoked := revocation.New(time.Now)
	feed, err := revoked.Follow(env.bus.Conn(), env.bus.Subject, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(feed.Stop)
	if err := feed.Load(ctx, pool); err != nil {
		t.Fatal(err)
	}
	var sender mail.Sender = mail.NewLog(log)
	if env.mail != nil {
		if sender, err = mail.NewSMTP(env.mail.SMTPURL(), "no-reply@example.com"); err != nil {
			t.Fatal(err)
		}
	}
	mails, err := mail.Builtin(config.DefaultProductName)
	if err != nil {
		t.Fatal(err)
	}
	rp, err := webauthn.New(&webauthn.Config{
		RPID: config.DefaultWebAuthnRPID, RPDisplayName: config.DefaultProductName, RPOrigins: []string{config.DefaultWebAuthnOrigins},
	})
	if err != nil {
		t.Fatal(err)
	}
	var googleConfig GoogleConfig
	if o.google != nil {
		v, err := googleauth.New(googleauth.Options{JWKSURL: o.google.URL(), ClientIDs: []string{testenv.GoogleClientID}})
		if err != nil {
			t.Fatal(err)
		}
		googleConfig = GoogleConfig{Verifier: v, ClientIDs: v.ClientIDs()}
	}
	limiter := ratelimit.New(pool, seal.Derive(env.master, "rate-limit-keys"), o.limitsNow)
	app := New(Deps{
		Store:        store,
		Hasher:       password.NewHasher(password.OWASP(), 2, 8),
		Codes:        codes.New(pool, seal.Derive(env.master, "email-codes"), time.Now),
		Mail:         sender,
		Mails:        mails,
		Keys:         keys,
		Throttle:     limiter,
		Limits:       limiter,
		Projections:  runner,
		SessionReads: projections.SessionReads{Q: pool},
		Revoked:      revoked,
		Log:          log,
		Now:          o.now,
		RefreshGrace: o.grace,
		RefreshTTL:   config.DefaultRefreshTokenTTL,
		ReauthMaxAge: config.DefaultReauthMaxAge,
		// A loaded machine can take longer than the default to project;
		// the tests read right after writing and must see their writes.
		WaitTimeout: 15 * time.Second,
		Product:     "authd",
		TwoFactor: TwoFactorConfig{
			Challenges:    challenges.NewChallenges(pool, seal.Derive(env.master, "2fa-challenge-tokens"), time.Now, domain.ChallengeTTL, domain.ChallengeTries),
			BackupCodeKey: seal.Derive(env.master, "backup-codes"),
		},
		Passkeys: PasskeyConfig{WebAuthn: rp, Ceremonies: ceremony.New(pool, time.Now), CeremonyTTL: DefaultCeremonyTTL},
		Google:   googleConfig,
	})

	background, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { relay.Run(background) })
	wg.Go(func() { runner.Run(background) })
	if !o.queued {
		wg.Go(func() { app.Run(background) })
	}
	t.Cleanup(func() {
		stop()
		wg.Wait()
	})
	return &testApp{App: app, env: env, pool: pool, store: store, keys: keys, revoked: revoked, limiter: limiter}
}

// twoApps is two instances of one deployment, both built with opts.
func twoApps(t *testing.T, opts ...appOption) (*testApp, *testApp) {
	t.Helper()
	a := newApp(t, opts...)
	return a, newApp(t, append(opts, sharing(a))...)
}

// request is the Request of a test's client.
var request = Request{IP: "192.0.2.10", UserAgent: "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36", RequestID: "test"}

// nextCode waits for the next mail to email and returns its code.
func (a *testApp) nextCode(t *testing.T, email string) string {
	t.Helper()
	return testenv.CodeIn(t, a.env.mail.WaitForMessage(t, email, 15*time.Second))
}

// signUp registers email with pw and verifies it with the emailed code,
// returning the tokens of the session the verification opens.
func (a *testApp) signUp(t *testing.T, email, pw string) Tokens {
	t.Helper()
	if err := a.Register(t.Context(), RegisterInput{Email: email, Password: pw, Name: "Probe"}, request); err != nil {
		t.Fatalf("register %s: %v", email, err)
	}
	in, err := a.VerifyRegistration(t.Context(), email, a.nextCode(t, email), request)
	if err != nil || in.Tokens == nil {
		t.Fatalf("verify %s: %+v, %v", email, in, err)
	}
	return *in.Tokens
}

// login signs in with a password and fails the test unless that gives
// tokens (no second factor).
func (a *testApp) login(t *testing.T, email, pw string) Tokens {
	t.Helper()
	in, err := a.Login(t.Context(), email, pw, request)
	if err != nil || in.Tokens == nil {
		t.Fatalf("login %s: %+v, %v", email, in, err)
	}
	return *in.Tokens
}

// authorized says whether an access token is still good, as the HTTP edge
// checks it: its signature and times, and the revocations this App knows.
func (a *testApp) authorized(t *testing.T, access string) bool {
	t.Helper()
	claims, err := a.keys.Verify(t.Context(), access)
	if errors.Is(err, tokens.ErrInvalidToken) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return a.revoked.Allows(claims.SessionID, claims.UserID, claims.IssuedAt)
}

// claims are the verified claims of an access token.
func (a *testApp) claims(t *testing.T, access string) tokens.Claims {
	t.Helper()
	c, err := a.keys.Verify(t.Context(), access)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// activeSessions lists the ids of the user's active sessions, as GET
// /sessions shows them.
func (a *testApp) activeSessions(ctx context.Context, user uuid.UUID) ([]uuid.UUID, error) {
	list, err := a.ActiveSessions(ctx, user)
	if err != nil {
		return nil, err
	}
	ids := make([]uuid.UUID, len(list))
	for i, s := range list {
		ids[i] = s.ID
	}
	return ids, nil
}

// resetPassword is App.ResetPassword as POST /reset-password calls it.
func (a *testApp) resetPassword(ctx context.Context, email, code, newPassword string) error {
	return a.ResetPassword(ctx, email, code, newPassword, request)
}

// revokeOthers is App.RevokeOtherSessions as DELETE /sessions calls it.
func (a *testApp) revokeOthers(ctx context.Context, caller tokens.Claims) (int, error) {
	return a.RevokeOtherSessions(ctx, caller, request)
}

// eventTypes lists the types of the events in the log past the first n, in
// log order.
func (a *testApp) eventTypes(t *testing.T, n int) []string {
	t.Helper()
	var types []string
	if err := a.pool.QueryRow(t.Context(), `SELECT coalesce(array_agg(type ORDER BY position), '{}') FROM events`).Scan(&types); err != nil {
		t.Fatal(err)
	}
	return types[min(n, len(types)):]
}

// user reads a user as the answers and GET /me show it: from the users read
// model, which the commands' read-your-writes wait has brought up to date.
func (a *testApp) user(t *testing.T, id uuid.UUID) projections.UserView {
	t.Helper()
	u, err := projections.NewUserReader(a.pool).Get(t.Context(), id)
	if err != nil {
		t.Fatalf("read user %s: %v", id, err)
	}
	return u
}
