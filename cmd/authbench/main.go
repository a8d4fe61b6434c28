// Command authbench loads a running authd over HTTP and reports throughput
// and latency percentiles. It creates its own users through the real API,
// reading their signup codes back from Mailpit, so the authd under test must
// mail to a Mailpit whose API authbench is given:
//
//	mailpit --smtp 127.0.0.1:1025 --listen 127.0.0.1:8025 &
//	SMTP_URL=smtp://127.0.0.1:1025 AUTHD_RATE_LIMIT=off authd &
//	authbench -mailpit http://127.0.0.1:8025 -scenario me -c 16 -d 15s
//
// Scenarios: me (GET /me round-robin over the access tokens N users' signups
// answered), refresh (each connection rotates its own session's refresh
// token), login (POST
// /login with the right password, round-robin over N users), verify2fa (POST
// /2fa/verify answering, with backup codes, -challenges login challenges of
// users with TOTP on, all signed in for before the load; the run ends when
// they are used up, the warmup using at most a tenth of them), flood (an
// owner's logins, GET /me and POST /refresh at steady rates, measured
// without and then with a flood of unknown-email logins from -flood-addrs
// addresses; see flood.go).
//
// -c is the exact number of connections: each worker has its own keep-alive
// client limited to one connection. -rate 0 runs closed loop (each worker
// sends as soon as it has its answer); -rate R offers R requests/s in total
// and measures each request's latency from when it was due, not from when a
// worker got round to it, so a stalled server is charged for the requests it
// held back (no coordinated omission). Runs stop by themselves (-d, -n) and
// only ever target loopback.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/authd/authd/domain"
)

type config struct {
	url, mailpit, scenario string
	conns, users           int
	challenges             int
	duration, warmup       time.Duration
	rate                   float64
	maxReqs                int64
	timeout, setupTimeout  time.Duration
	json, cpu              bool
	engine                 string
	cpuProfile             string
	pgDB                   string
	authdPID               int
	flood                  floodConfig
}

// Bounds that keep a mistyped flag from turning into a runaway load.
const (
	maxConns    = 1024
	maxDuration = 10 * time.Minute
	maxWarmup   = 2 * time.Minute
	maxUsers    = 2000
	// Each user's backup codes answer as many challenges.
	maxChallenges = maxUsers * domain.BackupCodeCount
	maxRate       = 1e6
	maxRequests   = 20_000_000 // also bounds the memory of the latency samples
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "authbench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("authbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.url, "url", "http://127.0.0.1:8080", "authd's base URL (loopback only)")
	fs.StringVar(&c.mailpit, "mailpit", "", "Mailpit's HTTP API base URL, e.g. http://127.0.0.1:8025 (loopback only); authd must have SMTP_URL pointing at its SMTP port")
	fs.StringVar(&c.scenario, "scenario", "me", "what to load: "+scenarioNames())
	fs.IntVar(&c.conns, "c", 16, "connections (one worker and one keep-alive connection each)")
	fs.IntVar(&c.users, "users", 16, "users to sign up for the run (verify2fa: at least one per connection and one per 10 challenges)")
	fs.IntVar(&c.challenges, "challenges", 4000, "verify2fa: login challenges to sign in for before the load (about 80 logins/s on 2 cores; they must all be ready within 4 minutes); the run ends when they are used up")
	fs.DurationVar(&c.duration, "d", 15*time.Second, "measured duration")
	fs.DurationVar(&c.warmup, "warmup", 3*time.Second, "unmeasured load before the measurement")
	fs.Float64Var(&c.rate, "rate", 0, "open-loop offered load in requests/s over all connections; 0 = closed loop, as fast as answers come")
	fs.Int64Var(&c.maxReqs, "n", 0, "stop the measurement after this many requests (0: only -d bounds it)")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "per-request timeout")
	fs.DurationVar(&c.setupTimeout, "setup-timeout", 3*time.Minute, "bound on signing users up and in (verify2fa: and on signing in for its challenges)")
	fs.StringVar(&c.engine, "engine", "nethttp", "HTTP client: nethttp (Go's http.Client per worker, MaxConnsPerHost 1) or raw (hand-written HTTP/1.1 on one net.Conn per worker: less client CPU on a shared machine)")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write authbench's own CPU profile of the measured phase to this file")
	fs.StringVar(&c.pgDB, "pg-db", "", "count only the Postgres backends of this database (plus Postgres' background processes) in the CPU report")
	fs.IntVar(&c.authdPID, "authd-pid", 0, "read authd's CPU time from /proc/PID instead of its /metrics")
	fs.Float64Var(&c.flood.rate, "flood-rate", 140, "flood: unknown-email logins/s offered (issue 16 asks for twice the hashes/s of BenchmarkHashOWASPParallel)")
	fs.IntVar(&c.flood.addrs, "flood-addrs", 250, "flood: source addresses (X-Forwarded-For), one per /24")
	fs.IntVar(&c.flood.conns, "flood-c", 128, "flood: connections the flood uses")
	fs.Float64Var(&c.flood.knownRate, "owner-rate", 2, "flood: logins/s of the account owner from its own network")
	fs.Float64Var(&c.flood.meRate, "me-rate", 200, "flood: GET /me per second")
	fs.IntVar(&c.flood.meConns, "me-c", 4, "flood: GET /me connections")
	fs.Float64Var(&c.flood.refRate, "refresh-rate", 50, "flood: POST /refresh per second")
	fs.IntVar(&c.flood.refConn, "refresh-c", 4, "flood: POST /refresh connections, one session each")
	fs.BoolVar(&c.json, "json", false, "print the report as JSON on stdout (progress still goes to stderr)")
	fs.BoolVar(&c.cpu, "cpu", true, "report CPU per request of authd (its /metrics), Postgres and authbench (/proc)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	var errs []error
	if _, ok := findScenario(c.scenario); !ok {
		errs = append(errs, fmt.Errorf("-scenario %q: want one of %s", c.scenario, scenarioNames()))
	}
	if _, ok := engine(c.engine); !ok {
		errs = append(errs, fmt.Errorf("-engine %q: want nethttp or raw", c.engine))
	}
	if c.conns < 1 || c.conns > maxConns {
		errs = append(errs, fmt.Errorf("-c %d: want 1..%d", c.conns, maxConns))
	}
	if c.users < 1 || c.users > maxUsers {
		errs = append(errs, fmt.Errorf("-users %d: want 1..%d", c.users, maxUsers))
	}
	if c.challenges < 1 || c.challenges > maxChallenges {
		errs = append(errs, fmt.Errorf("-challenges %d: want 1..%d", c.challenges, maxChallenges))
	}
	if c.duration <= 0 || c.duration > maxDuration {
		errs = append(errs, fmt.Errorf("-d %v: want more than 0 and at most %v", c.duration, maxDuration))
	}
	if c.warmup < 0 || c.warmup > maxWarmup {
		errs = append(errs, fmt.Errorf("-warmup %v: want 0..%v", c.warmup, maxWarmup))
	}
	if c.rate < 0 || c.rate > maxRate {
		errs = append(errs, fmt.Errorf("-rate %v: want 0..%v", c.rate, maxRate))
	}
	if f := c.flood; f.rate <= 0 || f.rate > maxRate || f.knownRate <= 0 || f.knownRate > maxRate ||
		f.meRate <= 0 || f.meRate > maxRate || f.refRate <= 0 || f.refRate > maxRate {
		errs = append(errs, fmt.Errorf("-flood-rate, -owner-rate, -me-rate, -refresh-rate: want more than 0 and at most %v", maxRate))
	}
	if f := c.flood; f.addrs < 1 || f.addrs > 65536 {
		errs = append(errs, fmt.Errorf("-flood-addrs %d: want 1..65536", f.addrs))
	}
	if f := c.flood; f.conns < 1 || f.conns > maxConns || f.meConns < 1 || f.meConns > maxConns || f.refConn < 1 || f.refConn > maxConns {
		errs = append(errs, fmt.Errorf("-flood-c, -me-c, -refresh-c: want 1..%d", maxConns))
	}
	if c.maxReqs < 0 || c.maxReqs > maxRequests {
		errs = append(errs, fmt.Errorf("-n %d: want 0..%d", c.maxReqs, maxRequests))
	}
	if c.maxReqs == 0 {
		c.maxReqs = maxRequests
	}
	if c.timeout <= 0 || c.timeout > time.Minute {
		errs = append(errs, fmt.Errorf("-timeout %v: want more than 0 and at most 1m", c.timeout))
	}
	if c.setupTimeout <= 0 || c.setupTimeout > 30*time.Minute {
		errs = append(errs, fmt.Errorf("-setup-timeout %v: want more than 0 and at most 30m", c.setupTimeout))
	}
	var err error
	if c.url, err = loopbackURL("-url", c.url); err != nil {
		errs = append(errs, err)
	}
	if c.mailpit != "" {
		if c.mailpit, err = loopbackURL("-mailpit", c.mailpit); err != nil {
			errs = append(errs, err)
		}
	}
	return c, errors.Join(errs...)
}

// loopbackURL checks that raw is an http(s) URL to a loopback address, and
// returns it without a trailing slash. A load tool pointed elsewhere by
// mistake would be a denial of service.
func loopbackURL(flagName, raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("%s %q: want http://host:port", flagName, raw)
	}
	if !isLoopback(u.Hostname()) {
		return "", fmt.Errorf("%s %q: authbench only targets loopback (127.0.0.0/8, ::1, localhost)", flagName, raw)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("%s %q: want a base URL without credentials, query or fragment", flagName, raw)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	logf := func(format string, a ...any) { fmt.Fprintf(stderr, "authbench: "+format+"\n", a...) }
	setupClient := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil, MaxConnsPerHost: 16, MaxIdleConnsPerHost: 16}}
	e := &env{cfg: cfg, api: &api{base: cfg.url, client: setupClient}, log: logf}
	if cfg.mailpit != "" {
		e.mail = &mailpit{base: cfg.mailpit, client: setupClient}
	}
	sc, _ := findScenario(cfg.scenario) // checked with the flags
	connect, _ := engine(cfg.engine)

	setupCtx, cancel := context.WithTimeout(ctx, cfg.setupTimeout)
	defer cancel()
	if err := e.api.healthy(setupCtx); err != nil {
		return fmt.Errorf("authd at %s is not answering /healthz: %w", cfg.url, err)
	}
	loadAtStart := loadAvg()
	logf("load average %s; setting up scenario %s", loadAtStart, sc.name)
	if sc.run != nil {
		return sc.run(ctx, e, connect, stdout, stderr)
	}
	newWorker, err := sc.setup(setupCtx, e)
	if err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	var dials atomic.Int64
	base, _ := url.Parse(cfg.url)
	workers := make([]worker, cfg.conns)
	for i := range workers {
		workers[i] = newWorker(i, connect(base, cfg.timeout, &dials))
	}
	p := phase{duration: cfg.warmup, rate: cfg.rate, timeout: cfg.timeout}
	warmup := cfg.warmup.String()
	var warmedUp time.Duration // less than -warmup when it ran out of requests
	if e.supply != nil {
		// The warmup may use a tenth of a finite supply; the rest is the
		// measurement's.
		p.maxReqs = e.supply() / 10
		warmup += fmt.Sprintf(" or %d requests", p.maxReqs)
	}
	if cfg.warmup > 0 && (e.supply == nil || p.maxReqs > 0) {
		logf("warming up for %s", warmup)
		warmedUp = p.run(ctx, workers).elapsed
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	p.duration, p.maxReqs = cfg.duration, cfg.maxReqs
	var until string
	if e.supply != nil {
		left := e.supply()
		if left == 0 { // a phase's maxReqs 0 would mean no limit at all
			return errors.New("nothing the setup prepared is left to measure")
		}
		p.maxReqs = min(p.maxReqs, left)
		until = fmt.Sprintf(", or until its %d prepared requests are used up", left)
	}
	logf("measuring %s for %v with %d connections%s", sc.what, cfg.duration, cfg.conns, until)
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	before := e.cpuSample(cfg.cpu)
	started := time.Now()
	res := p.run(ctx, workers)
	after := e.cpuSample(cfg.cpu)
	if cfg.cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	if e.supply != nil && e.supply() == 0 {
		logf("the prepared requests ran out after %.1fs of the %v asked for: the rates are over those %.1fs", res.elapsed.Seconds(), cfg.duration, res.elapsed.Seconds())
	}

	rep := buildReport(res)
	rep.Scenario, rep.Request, rep.URL = sc.name, sc.what, cfg.url
	rep.Connections, rep.Users, rep.OfferedRate, rep.Engine = cfg.conns, e.users, cfg.rate, cfg.engine
	rep.WarmupS = round3(warmedUp.Seconds())
	rep.Dials = dials.Load()
	rep.LoadAvg, rep.Cores, rep.Started = loadAtStart, runtime.NumCPU(), started.UTC()
	if n := e.relogins.Load(); n > 0 {
		rep.Counters = map[string]int64{"relogins": n}
	}
	if res.prepErrs > 0 {
		if rep.Counters == nil {
			rep.Counters = map[string]int64{}
		}
		rep.Counters["prepare_errors"] = res.prepErrs
	}
	if cfg.cpu {
		rep.CPU = cpuBetween(before, after, rep.Requests)
	}
	if cfg.json {
		rep.writeText(stderr)
		return rep.writeJSON(stdout)
	}
	rep.writeText(stdout)
	return ctx.Err()
}
