// Command authd is the authentication service: the HTTP API, the relay of the
// event log to NATS JetStream and the projections, in one process. With no
// NATS_URL it also runs an embedded NATS server.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/authd/authd/commands"
	"github.com/authd/authd/eventstore"
	authhttp "github.com/authd/authd/http"
	"github.com/authd/authd/internal/codes"
	"github.com/authd/authd/internal/config"
	"github.com/authd/authd/internal/mail"
	"github.com/authd/authd/internal/natsbus"
	"github.com/authd/authd/internal/notices"
	"github.com/authd/authd/internal/password"
	"github.com/authd/authd/internal/pgpool"
	"github.com/authd/authd/internal/ratelimit"
	"github.com/authd/authd/internal/revocation"
	"github.com/authd/authd/internal/seal"
	"github.com/authd/authd/internal/tokens"
	"github.com/authd/authd/migrations"
	"github.com/authd/authd/projections"
)

func main() {
	// The CPUs authd may use as the runtime counts them: the cores, or a
	// container's CPU limit (runtime.NumCPU counts the host's cores).
	cpus := runtime.GOMAXPROCS(0)
	// At the default GOGC, the hashes' 19 MiB each made a collection every
	// login or two (see memory.go). /metrics shows the outcome as
	// go_gc_gogc_percent and go_gc_gomemlimit_bytes. An operator's own GOGC
	// or GOMEMLIMIT still wins.
	if os.Getenv("GOGC") == "" && os.Getenv("GOMEMLIMIT") == "" {
		cgroup, _ := os.ReadFile("/proc/self/cgroup") // none outside Linux: no container limit
		allowed := allowance(containerMemoryLimit(cgroup, os.DirFS("/sys/fs/cgroup")))
		p := choosePacing(cpus, int64(password.OWASP().Memory)<<10, allowed)
		p.apply()
		go keepRoom(p, allowed, 10*time.Second)
	}
	// The hasher runs as many password hashes at once as there are CPUs,
	// each holding its P for tens of milliseconds, and Go preempts a running
	// goroutine only about every 10 ms. With a P per CPU, a login flood
	// left refreshes and reads queued behind the hashes (a refresh's p99 was
	// 102 ms during a flood of twice what the cores can hash). One P more
	// lets them run at once, and the kernel shares the cores at its finer
	// grain; logins alone lose no more than the run-to-run noise. An
	// operator's own GOMAXPROCS still wins.
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(cpus + 1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stdout, cpus); err != nil {
		fmt.Fprintln(os.Stderr, "authd:", err)
		os.Exit(1)
	}
}

// run starts authd and blocks until ctx ends, then shuts down gracefully.
// Password hashing and the request pool are sized for cpus CPUs.
func run(ctx context.Context, getenv func(string) string, logOut io.Writer, cpus int) error {
	return serve(ctx, getenv, logOut, cpus, realTime())
}

// realTime is the options authd runs with outside tests.
func realTime() options {
	return options{now: time.Now, limitsNow: time.Now, sweepEvery: time.Minute}
}

// options are what a test may set that no operator needs to: the clock the
// commands decide by, so a signup can be made days old without waiting; the
// clock of the rate limits, so that a test's requests count in one fixed
// window however slow the machine; and how often unverified signups are
// swept.
type options struct {
	now, limitsNow func() time.Time
	sweepEvery     time.Duration
}

// serve is run with its options.
func serve(ctx context.Context, getenv func(string) string, logOut io.Writer, cpus int, opts options) error {
	cfg, err := config.Load(getenv)
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	log := slog.New(slog.NewJSONHandler(logOut, &slog.HandlerOptions{Level: cfg.LogLevel}))
	log.Info("authd starting", "config", cfg)
	// Before any connection: a template an operator got wrong should stop the
	// start at once, naming its file.
	mails, err := mail.Load(cfg.ProductName, cfg.MailTemplates)
	if err != nil {
		return err
	}

	keys, err := masterKeys(cfg, log)
	if err != nil {
		return err
	}
	sealer, err := seal.New(keys...)
	if err != nil {
		return err
	}
	startCtx, cancelStart := context.WithTimeout(ctx, time.Minute)
	defer cancelStart()
	if err := migrations.EnsureDatabase(startCtx, cfg.DatabaseURL); err != nil {
		return err
	}
	// The relay and each projection's applier hold a connection for as long
	// as they lead; requests share the rest.
	held := 1 + len(projections.All())
	pool, err := pgpool.Open(startCtx, cfg.DatabaseURL, int32(held+max(8, 4*cpus)))
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := migrations.Up(startCtx, pool, log); err != nil {
		return err
	}

	bus, err := natsbus.Open(startCtx, natsbus.Config{
		URL: cfg.NATSURL, DataDir: cfg.DataDir, EmbeddedAddr: cfg.EmbeddedNATSAddr,
		Stream: cfg.NATSStream, SubjectPrefix: cfg.NATSSubjectPrefix, Replicas: cfg.NATSReplicas,
	}, log)
	if err != nil {
		return err
	}
	defer bus.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	store := eventstore.NewStore(pool, sealer, reg)
	relay := eventstore.NewRelay(store, bus, eventstore.RelayConfig{}, log, reg)
	runner := projections.NewRunner(pool, bus, projections.All(), projections.Config{}, log, reg)

	keyring, err := tokens.Open(startCtx, pool, sealer, tokens.Options{Issuer: cfg.Issuer, AccessTTL: cfg.AccessTokenTTL, Now: time.Now})
	if err != nil {
		return err
	}
	revoked := revocation.New(time.Now)
	feed, err := revoked.Follow(bus.Conn(), bus.Subject, log)
	if err != nil {
		return err
	}
	defer feed.Stop()
	if err := feed.Load(startCtx, pool); err != nil {
		return err
	}
	// The rate limits' stored keys are HMACs under a secret of their own,
	// which a rotation of the master key leaves as it is: the counters go on.
	limiterKey, err := tokens.ServerSecret(startCtx, pool, sealer, "rate_limit_keys", time.Now())
	if err != nil {
		return err
	}
	limiter := ratelimit.New(pool, limiterKey, opts.limitsNow)
	// Emailed codes, backup codes and 2FA challenge tokens are HMACs under
	// secrets kept in token_secrets too: derived from the first master key,
	// as they once were, a rotation made every backup code fail.
	kept := func(name string) ([]byte, error) {
		return tokens.KeptServerSecret(startCtx, pool, sealer, name, seal.Derive(keys[0], name), time.Now())
	}
	codeKey, err := kept("email-codes")
	if err != nil {
		return err
	}
	backupCodeKey, err := kept("backup-codes")
	if err != nil {
		return err
	}
	challengeKey, err := kept("2fa-challenge-tokens")
	if err != nil {
		return err
	}
	codeStore := codes.New(pool, codeKey, time.Now)
	var sender mail.Sender = mail.NewLog(log)
	if cfg.SMTPURL != "" {
		if sender, err = mail.NewSMTP(cfg.SMTPURL, cfg.MailFrom); err != nil {
			return err
		}
	}
	passkeys, err := passkeyConfig(cfg, pool)
	if err != nil {
		return err
	}
	google, err := googleConfig(cfg)
	if err != nil {
		return err
	}
	// A deleted account's address is kept for its farewell only where
	// notices are sent: with them off, none outlives the deletion's commit.
	farewells := notices.NewFarewells(sealer)
	var keepFarewells commands.Farewells
	if cfg.Notices {
		keepFarewells = farewells
	}
	app := commands.New(commands.Deps{
		Store: store,
		// As many hashes as cores, and a short queue: past it, a login is
		// answered 503 at once instead of piling up behind a password flood.
		Hasher:       password.NewHasher(password.OWASP(), cpus, 4*cpus),
		Codes:        codeStore,
		Mail:         sender,
		Mails:        mails,
		Keys:         keyring,
		Throttle:     limiter,
		Limits:       limiter,
		Projections:  runner,
		SessionReads: projections.SessionReads{Q: pool},
		Revoked:      revoked,
		Log:          log,
		Now:          opts.now,
		RefreshGrace: cfg.RefreshReuseGrace,
		RefreshTTL:   cfg.RefreshTokenTTL,
		ReauthMaxAge: cfg.ReauthMaxAge,
		WaitTimeout:  cfg.ReadYourWritesTimeout,
		Product:      cfg.ProductName,
		TwoFactor:    twoFactorConfig(pool, challengeKey, backupCodeKey),
		Passkeys:     passkeys,
		Google:       google,
		Farewells:    keepFarewells,
	})

	notifier, noticeChecks := noticesConsumer(cfg, notices.Deps{
		Pool: pool, Bus: bus, Store: store, Farewells: farewells, Compose: mails, Mail: sender, Replicas: cfg.NATSReplicas, Log: log, Registry: reg,
	})

	background, stopBackground := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { relay.Run(background) })
	wg.Go(func() { app.Run(background) })
	wg.Go(func() { runner.Run(background) })
	if notifier != nil {
		wg.Go(func() { notifier.Run(background) })
	}
	// Revocations keep their one second while NATS does not carry them.
	wg.Go(func() { feed.Backstop(background, pool, relay.Lag) })
	wg.Go(func() {
		sweeper := &commands.SignupSweeper{App: app, Pool: pool, TTL: cfg.PendingSignupTTL, Every: opts.sweepEvery, Log: log}
		sweeper.Run(background)
	})
	wg.Go(func() { housekeeping(background, log, keyring, revoked, limiter, codeStore, pool) })
	defer func() {
		// After the HTTP server has drained: nothing new is appended, so the
		// relay flushes what is committed and the projections finish their batch.
		stopBackground()
		wg.Wait()
	}()

	server := authhttp.New(authhttp.Deps{
		Log:            log,
		Registry:       reg,
		Ready:          append(readiness(pool, bus, runner), noticeChecks...),
		TrustedProxies: cfg.TrustedProxies,
		JWKS:           keyring.JWKS,
		CORSOrigins:    cfg.CORSOrigins,
		RequestLogRate: cfg.RequestLogRate,
		Accounts: &authhttp.Accounts{
			App: app, Keys: keyring, Revoked: revoked, Reads: pool, Store: store, Users: projections.NewUserReader(pool), Limiter: limiter,
			RateLimit: cfg.RateLimit, Now: time.Now, Log: log,
		},
	})
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	served := make(chan error, 1)
	go func() { served <- server.Listener(ln) }()
	nats := "embedded at " + cfg.EmbeddedNATSAddr
	if cfg.NATSURL != "" {
		nats = "external"
	}
	log.Info("authd listening", "addr", ln.Addr().String(), "nats", nats, "stream", bus.StreamName())

	select {
	case <-ctx.Done():
		log.Info("shutting down: finishing in-flight requests")
	case err := <-served:
		return fmt.Errorf("http server: %w", err)
	}
	if err := server.ShutdownWithTimeout(15 * time.Second); err != nil {
		log.Warn("http shutdown", "err", err)
	}
	return nil
}

// masterKeys are the configuration's sealing keys, with a warning when they
// are the development key.
func masterKeys(cfg config.Config, log *slog.Logger) ([][]byte, error) {
	keys, created, err := cfg.SealingKeys()
	if err != nil {
		return nil, err
	}
	if len(cfg.MasterKeys) == 0 {
		log.Warn("AUTHD_MASTER_KEY is not set: using a development key kept in the data dir; set it in production",
			"data_dir", cfg.DataDir, "generated_now", created)
	}
	return keys, nil
}

func readiness(pool *pgxpool.Pool, bus *natsbus.Bus, runner *projections.Runner) []authhttp.Check {
	var applied atomic.Bool
	return []authhttp.Check{
		{Name: "postgres", Check: pool.Ping},
		// Without NATS, writes still commit (the relay catches up later) and
		// reads answer from the log or say 503; every instance shares the
		// bus, so failing readiness on it would take them all out at once.
		{Name: "nats", Check: bus.Ping, Degrades: true},
		{Name: "migrations", Check: func(ctx context.Context) error {
			// Once applied, this binary's migrations stay applied: asking
			// again (it takes goose's lock) on every probe is wasted work.
			if applied.Load() {
				return nil
			}
			n, err := migrations.Pending(ctx, pool)
			if err != nil {
				return err
			}
			if n > 0 {
				return fmt.Errorf("%d migrations pending", n)
			}
			applied.Store(true)
			return nil
		}},
		// An event a projection cannot apply takes the instance out: its
		// read model stays behind until someone acts. A projection the
		// stream stopped delivering to only degrades it, as NATS down does.
		{Name: "projections", Check: projectionErrors(runner, false)},
		{Name: "projections_stream", Check: projectionErrors(runner, true), Degrades: true},
	}
}

// projectionErrors checks the projections stopped by the event stream
// (stream) or by anything else (!stream).
func projectionErrors(runner *projections.Runner, stream bool) func(context.Context) error {
	return func(context.Context) error {
		var errs []error
		for _, st := range runner.Statuses() {
			if st.Err != nil && errors.Is(st.Err, projections.ErrStream) == stream {
				errs = append(errs, fmt.Errorf("%s: %w", st.Name, st.Err))
			}
		}
		return errors.Join(errs...)
	}
}

// housekeeping runs the periodic chores: picking up keys another instance
// rotated, and forgetting expired revocations, rate-limit windows, codes and
// the addresses kept for farewell notices.
func housekeeping(ctx context.Context, log *slog.Logger, keys *tokens.Keyring, revoked *revocation.Set, limiter *ratelimit.Limiter, codeStore *codes.Store, pool *pgxpool.Pool) {
	t := time.NewTicker(tokens.ReloadEvery) // how stale a JWKS may be: tokens.ActivationDelay counts on it
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := keys.Reload(ctx); err != nil {
			log.Warn("reloading signing keys", "err", err)
		}
		if n%2 == 0 {
			revoked.Sweep()
			if _, err := limiter.Sweep(ctx); err != nil {
				log.Warn("sweeping rate limits", "err", err)
			}
			if _, err := codeStore.Sweep(ctx); err != nil {
				log.Warn("sweeping expired codes", "err", err)
			}
			if _, err := notices.SweepFarewells(ctx, pool); err != nil {
				log.Warn("sweeping farewell addresses", "err", err)
			}
		}
	}
}
