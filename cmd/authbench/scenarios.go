package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/authd/authd/domain"
)

// A scenario prepares what its load needs through the real API (users,
// sessions, login challenges), then gives each worker the requests it sends.
// To add one, write its setup and worker and list it in scenarios; a setup
// whose every request uses up something prepared (verify2fa's challenges)
// also sets env.supply, so that the run stops when it is used up.
type scenario struct {
	name string
	what string // the measured request, for the report
	// setup runs once, before any load; newWorker then builds worker i over
	// its own client.
	setup func(ctx context.Context, e *env) (newWorker func(i int, c conn) worker, err error)
	// run, when set, is a scenario of several kinds of request, which sets
	// itself up and runs its own phases instead.
	run func(ctx context.Context, e *env, connect newConn, stdout, stderr io.Writer) error
}

// scenarios lists what authbench can load.
func scenarios() []scenario {
	return []scenario{
		{name: "me", what: "GET " + apiPrefix + "/me", setup: setupMe},
		{name: "refresh", what: "POST " + apiPrefix + "/refresh", setup: setupRefresh},
		{name: "login", what: "POST " + apiPrefix + "/login", setup: setupLogin},
		{name: "verify2fa", what: "POST " + apiPrefix + "/2fa/verify", setup: setupVerify2FA},
		{name: "flood", what: "unknown-email logins against an owner's logins, GET /me and POST /refresh", run: runFlood},
	}
}

func findScenario(name string) (scenario, bool) {
	for _, sc := range scenarios() {
		if sc.name == name {
			return sc, true
		}
	}
	return scenario{}, false
}

func scenarioNames() string {
	var names []string
	for _, sc := range scenarios() {
		names = append(names, sc.name)
	}
	sort.Strings(names)
	return strings.Join(names, "|")
}

// env is what scenarios share: the configuration, a setup client, the
// Mailpit reader and counters of unmeasured work.
type env struct {
	cfg      config
	api      *api
	mail     *mailpit
	log      func(format string, args ...any)
	relogins atomic.Int64
	users    int // signed up, for the report: a scenario may need more than -users
	// supply, when set, says how many requests the prepared material has
	// left; the warmup and the measurement stop before it runs out.
	supply func() int64
}

// user is an account the benchmark created.
type user struct {
	email, password string
	access          string // the access token signing up answered
}

// newUsers signs up n verified accounts: POST /register each (which costs
// authd a password hash), the codes read back from Mailpit, then POST
// /register/verify each.
func (e *env) newUsers(ctx context.Context, n int) ([]user, error) {
	if e.mail == nil {
		return nil, errors.New("-mailpit is required to sign users up: start authd with SMTP_URL pointing at that Mailpit's SMTP port")
	}
	run := make([]byte, 6)
	rand.Read(run)
	runID := hex.EncodeToString(run)
	since := time.Now().Add(-5 * time.Second)
	users := make([]user, n)
	for i := range users {
		pw := make([]byte, 12)
		rand.Read(pw)
		users[i] = user{email: fmt.Sprintf("authbench-%s-%d@example.com", runID, i), password: hex.EncodeToString(pw)}
	}
	e.users = n
	e.log("signing up %d users (authbench-%s-*@example.com)", n, runID)
	// Two at a time: authd hashes NumCPU passwords at once and answers 503
	// beyond its queue; retry covers the rest.
	if err := parallel(ctx, n, 2, func(i int) error { return e.api.register(ctx, users[i].email, users[i].password) }); err != nil {
		return nil, err
	}
	// A signup that was retried (or raced a restart) may have been mailed a
	// second code after the one read here: read the newest again and retry.
	pending := make([]int, n) // indexes in users of the signups not verified yet
	for i := range pending {
		pending[i] = i
	}
	for attempt := 1; ; attempt++ {
		list := make([]string, len(pending))
		for j, i := range pending {
			list[j] = users[i].email
		}
		codes, err := e.mail.codes(ctx, list, since)
		if err != nil {
			return nil, err
		}
		failed := make([]bool, len(pending))
		err = parallel(ctx, len(pending), 8, func(j int) error {
			u := &users[pending[j]]
			t, err := e.api.verify(ctx, u.email, codes[u.email])
			if ae, ok := err.(*apiError); ok && ae.Code == "invalid_code" && attempt < 3 {
				failed[j] = true
				return nil
			}
			u.access = t.AccessToken
			return err
		})
		if err != nil {
			return nil, err
		}
		var again []int
		for j, f := range failed {
			if f {
				again = append(again, pending[j])
			}
		}
		if len(again) == 0 {
			return users, nil
		}
		e.log("%d verification codes were refused; reading the newest mail again", len(again))
		if err := sleepCtx(ctx, time.Second); err != nil {
			return nil, err
		}
		pending = again
	}
}

// parallel runs f(0..n-1), at most width at once, and returns the first error.
func parallel(ctx context.Context, n, width int, f func(i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sem := make(chan struct{}, width)
	var wg sync.WaitGroup
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := f(i); err != nil {
				cancel(err)
			}
		}()
	}
	wg.Wait()
	return context.Cause(ctx)
}

func jsonHeader() http.Header {
	return http.Header{"Content-Type": {"application/json"}, "User-Agent": {userAgent}}
}

// me: GET /me round-robin over N users' access tokens from their signups.
func setupMe(ctx context.Context, e *env) (func(int, conn) worker, error) {
	users, err := e.newUsers(ctx, e.cfg.users)
	if err != nil {
		return nil, err
	}
	headers := make([]http.Header, len(users))
	for i, u := range users { // the session signing up opened
		headers[i] = http.Header{"Authorization": {"Bearer " + u.access}, "User-Agent": {userAgent}}
	}
	return func(i int, c conn) worker {
		return &meWorker{c: c, headers: headers, next: i}
	}, nil
}

type meWorker struct {
	c       conn
	headers []http.Header
	next    int
}

func (w *meWorker) Do(ctx context.Context) (int, error) {
	r := request{method: http.MethodGet, path: apiPrefix + "/me", header: w.headers[w.next%len(w.headers)]}
	w.next++
	st, _, err := w.c.Do(ctx, &r, false)
	return st, err
}

// refresh: each worker signs in its own session (users round-robin) and
// rotates it: each answer's refresh_token is its next request's.
func setupRefresh(ctx context.Context, e *env) (func(int, conn) worker, error) {
	users, err := e.newUsers(ctx, e.cfg.users)
	if err != nil {
		return nil, err
	}
	n := e.cfg.conns
	sessions := make([]string, n)
	e.log("signing in %d sessions, one per connection", n)
	err = parallel(ctx, n, 2, func(i int) error {
		t, err := e.api.login(ctx, users[i%len(users)].email, users[i%len(users)].password)
		sessions[i] = t.RefreshToken
		return err
	})
	if err != nil {
		return nil, err
	}
	header := jsonHeader()
	return func(i int, c conn) worker {
		return &refreshWorker{e: e, c: c, header: header, user: users[i%len(users)], token: sessions[i]}
	}, nil
}

type refreshWorker struct {
	e      *env
	c      conn
	header http.Header
	user   user
	token  string
	lost   bool // the session was refused: sign in again before the next request
}

func (w *refreshWorker) Prepare(ctx context.Context) error {
	if !w.lost {
		return nil
	}
	t, err := w.e.api.login(ctx, w.user.email, w.user.password)
	if err != nil {
		return err
	}
	w.token, w.lost = t.RefreshToken, false
	w.e.relogins.Add(1)
	return nil
}

func (w *refreshWorker) Do(ctx context.Context) (int, error) {
	body, _ := json.Marshal(map[string]string{"refresh_token": w.token})
	r := request{method: http.MethodPost, path: apiPrefix + "/refresh", header: w.header, body: body}
	st, b, err := w.c.Do(ctx, &r, true)
	if err != nil {
		// No answer: the rotation may or may not have happened. The same
		// token again is answered with the current pair within authd's grace.
		return st, err
	}
	switch {
	case st == http.StatusOK:
		var t tokens
		if err := json.Unmarshal(b, &t); err != nil || t.RefreshToken == "" {
			return st, fmt.Errorf("refresh answer without a refresh_token: %v", err)
		}
		w.token = t.RefreshToken
	case st == http.StatusUnauthorized:
		w.lost = true
	}
	return st, nil
}

// login: POST /login with the right password, round-robin over N users.
func setupLogin(ctx context.Context, e *env) (func(int, conn) worker, error) {
	users, err := e.newUsers(ctx, e.cfg.users)
	if err != nil {
		return nil, err
	}
	bodies := make([][]byte, len(users))
	for i, u := range users {
		bodies[i], _ = json.Marshal(map[string]string{"email": u.email, "password": u.password})
	}
	var next atomic.Uint64
	header := jsonHeader()
	return func(i int, c conn) worker {
		return &loginWorker{c: c, header: header, bodies: bodies, next: &next}
	}, nil
}

type loginWorker struct {
	c      conn
	header http.Header
	bodies [][]byte
	next   *atomic.Uint64 // shared: spreads logins evenly over the accounts
}

func (w *loginWorker) Do(ctx context.Context) (int, error) {
	r := request{method: http.MethodPost, path: apiPrefix + "/login", header: w.header,
		body: w.bodies[int((w.next.Add(1)-1)%uint64(len(w.bodies)))]}
	st, _, err := w.c.Do(ctx, &r, false)
	return st, err
}

// maxChallengePrep bounds signing in for verify2fa's challenges, so that the
// first ones still have a minute to live (domain.ChallengeTTL) when the load
// starts.
const maxChallengePrep = domain.ChallengeTTL - time.Minute

// verify2fa: users with TOTP on, each answering challenges with its backup
// codes (a TOTP step is accepted once per user, a backup code once). Every
// answer needs a challenge of its own, and a challenge costs a password login
// (an argon2id hash, far dearer than the verify), so all of them are signed
// in for before the load and the run ends when they are used up.
func setupVerify2FA(ctx context.Context, e *env) (func(int, conn) worker, error) {
	n := e.cfg.challenges
	// Enough users for a backup code per challenge, and one per connection:
	// the verifies at once are then of different accounts, as in real life
	// (those of one account would race on its stream and its throttle).
	users, err := e.newUsers(ctx, max(e.cfg.users, e.cfg.conns, (n+domain.BackupCodeCount-1)/domain.BackupCodeCount))
	if err != nil {
		return nil, err
	}
	e.log("turning TOTP on for %d users", len(users))
	codes := make([][]string, len(users))
	err = parallel(ctx, len(users), 8, func(i int) error {
		var err error
		codes[i], err = e.api.enableTOTP(ctx, users[i].access)
		return err
	})
	if err != nil {
		return nil, err
	}
	bodies, err := e.prepareChallenges(ctx, users, codes, n)
	if err != nil {
		return nil, err
	}
	var next atomic.Int64
	e.supply = func() int64 { return max(0, int64(len(bodies))-next.Load()) }
	header := jsonHeader()
	return func(i int, c conn) worker {
		return &verifyWorker{c: c, header: header, bodies: bodies, next: &next}
	}, nil
}

// prepareChallenges signs in n times and returns the /2fa/verify bodies
// answering the challenges, each with a backup code of its user. Challenge j
// is user j%len(users)'s, so that the logins running at once, and later the
// verifies, are of different accounts.
func (e *env) prepareChallenges(ctx context.Context, users []user, codes [][]string, n int) ([][]byte, error) {
	// Two logins per core keep authd's hashers busy while the others' HTTP
	// and database work is under way, within its queue (twice its cores),
	// and no more than five at once go to one account.
	width := min(2*runtime.NumCPU(), 5*len(users))
	e.log("signing in %d times for as many challenges, %d at once", n, width)
	start := time.Now()
	tooSlow := fmt.Errorf("signing in for %d challenges took over %v, and they live %v: ask for fewer with -challenges", n, maxChallengePrep, domain.ChallengeTTL)
	ctx, cancel := context.WithTimeoutCause(ctx, maxChallengePrep, tooSlow)
	defer cancel()
	bodies := make([][]byte, n)
	err := parallel(ctx, n, width, func(j int) error {
		u := users[j%len(users)]
		token, err := e.api.challenge(ctx, u.email, u.password)
		if err != nil {
			return err
		}
		bodies[j], err = json.Marshal(map[string]string{"challenge_token": token, "code": codes[j%len(users)][j/len(users)]})
		return err
	})
	if err != nil && context.Cause(ctx) == tooSlow {
		return nil, tooSlow // clearer than the request it cut short
	}
	if err != nil {
		return nil, err
	}
	took := time.Since(start)
	e.log("%d challenges in %.1fs (%.0f logins/s)", n, took.Seconds(), float64(n)/took.Seconds())
	if left := domain.ChallengeTTL - took; e.cfg.warmup+e.cfg.duration > left {
		e.log("warning: the first challenges expire in %.0fs, before -warmup and -d are over: those still unanswered then count as 401s", left.Seconds())
	}
	return bodies, nil
}

// errNoChallenge is a request past the prepared supply, which the phases'
// request limit (env.supply) keeps from happening.
var errNoChallenge = errors.New("no prepared challenge left")

type verifyWorker struct {
	c      conn
	header http.Header
	bodies [][]byte
	next   *atomic.Int64 // shared: each challenge is answered once
}

func (w *verifyWorker) Do(ctx context.Context) (int, error) {
	k := w.next.Add(1) - 1
	if k >= int64(len(w.bodies)) {
		return 0, errNoChallenge
	}
	r := request{method: http.MethodPost, path: apiPrefix + "/2fa/verify", header: w.header, body: w.bodies[k]}
	st, _, err := w.c.Do(ctx, &r, false)
	return st, err
}
