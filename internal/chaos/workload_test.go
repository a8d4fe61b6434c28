//go:build chaos

package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sync"
	"time"
)

// revocationPromise is API.md's: a revoked access token is refused by every
// instance within a second.
const revocationPromise = time.Second

// confirmFor bounds how long a check retries a read that answers 503 or
// does not answer before it counts the implied effect as unconfirmed (not
// as missing: a 503 says nothing false).
const confirmFor = 10 * time.Second

// refreshGrace is authd's default AUTHD_REFRESH_REUSE_GRACE: within it a
// client may present the refresh token again after an answer it lost.
const refreshGrace = 10 * time.Second

// record is what the workload saw: counts of answers, and every answer that
// breaks the contract. Checks read it by marks, one phase at a time.
type record struct {
	mu          sync.Mutex
	answers     map[string]int // "op status"
	serverErrs  []string       // 5xx other than 503, and 503 without Retry-After
	violations  []string       // a read that contradicts what an earlier 2xx implied
	unconfirmed []string       // implied effects a read could not confirm in confirmFor (503s)
	revocations []time.Duration
}

type mark struct{ serverErrs, violations, unconfirmed, revocations int }

func (r *record) mark() mark {
	r.mu.Lock()
	defer r.mu.Unlock()
	return mark{len(r.serverErrs), len(r.violations), len(r.unconfirmed), len(r.revocations)}
}

// since is what was recorded after m.
func (r *record) since(m mark) (serverErrs, violations, unconfirmed []string, revocations []time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.serverErrs[m.serverErrs:]), slices.Clone(r.violations[m.violations:]),
		slices.Clone(r.unconfirmed[m.unconfirmed:]), slices.Clone(r.revocations[m.revocations:])
}

func (r *record) violate(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.violations = append(r.violations, fmt.Sprintf(format, args...))
}

func (r *record) unconfirm(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unconfirmed = append(r.unconfirmed, fmt.Sprintf(format, args...))
}

func (r *record) revoked(after time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.revocations = append(r.revocations, after)
}

func (r *record) answered(op string, a answer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.answers[fmt.Sprintf("%s %d", op, a.status)]++
	if a.status >= 500 && (a.status != http.StatusServiceUnavailable || a.header.Get("Retry-After") == "") {
		r.serverErrs = append(r.serverErrs, fmt.Sprintf("%s on %s: %d (request %s) %s", op, a.in.name, a.status, a.header.Get("X-Request-ID"), a.raw))
	}
}

func (r *record) counts() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.answers))
	for k, v := range r.answers {
		out[k] = v
	}
	return out
}

// answer is one HTTP answer; status 0 when none came (refused, reset, timed
// out), which the workload treats as the instance being away.
type answer struct {
	in     *instance
	status int
	header http.Header
	raw    string
	body   map[string]any
	err    error
}

// str walks the body's objects along keys to a string ("" when absent).
func (a answer) str(keys ...string) string {
	var v any = a.body
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		v = m[k]
	}
	switch x := v.(type) {
	case string:
		return x
	case bool:
		return fmt.Sprint(x)
	}
	return ""
}

// workload drives signups, logins, refreshes, revocations and reads across
// the instances that are up, from a few goroutines each with users of its
// own, and records what each answer implies and whether later reads agree.
type workload struct {
	instances []*instance
	mailpit   string // Mailpit's HTTP API
	tag       string // makes this run's addresses unique
	rec       *record
	client    *http.Client
	// gate is held shared by each operation and exclusively by pause, so a
	// pause waits for the operations in flight and starts no new one.
	gate sync.RWMutex
}

func newWorkload(instances []*instance, mailpit, tag string) *workload {
	return &workload{
		instances: instances, mailpit: mailpit, tag: tag, rec: &record{answers: map[string]int{}},
		client: &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}},
	}
}

func (w *workload) pause()  { w.gate.Lock() }
func (w *workload) resume() { w.gate.Unlock() }

// run starts n workers and returns a function that stops them and waits.
func (w *workload) run(n int) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range n {
		wk := &worker{w: w, id: i}
		wg.Go(func() {
			for ctx.Err() == nil {
				w.gate.RLock()
				wk.step(ctx)
				w.gate.RUnlock()
			}
		})
	}
	return func() { cancel(); wg.Wait() }
}

// pick is a random instance that is up, other than not; nil when none.
func (w *workload) pick(not *instance) *instance {
	var up []*instance
	for _, in := range w.instances {
		if in != not && in.up.Load() {
			up = append(up, in)
		}
	}
	if len(up) == 0 {
		return nil
	}
	return up[rand.IntN(len(up))]
}

func (w *workload) call(ctx context.Context, op string, in *instance, method, path, token string, body any) answer {
	a := answer{in: in}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			panic(err) // the workload's own maps always marshal
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, in.base+"/api/v1/auth"+path, rd)
	if err != nil {
		panic(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		a.err = err
		return a
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a.status, a.header, a.raw = resp.StatusCode, resp.Header, string(raw)
	_ = json.Unmarshal(raw, &a.body)
	if ctx.Err() == nil {
		w.rec.answered(op, a)
	}
	return a
}

type user struct {
	email, password, id string
	sessions            []*session
}

type session struct{ id, access, refresh string }

func sessionOf(a answer) *session {
	return &session{id: a.str("session_id"), access: a.str("access_token"), refresh: a.str("refresh_token")}
}

type worker struct {
	w     *workload
	id, n int
	users []*user
}

func (k *worker) step(ctx context.Context) {
	r := rand.IntN(100)
	if len(k.users) < 3 || r < 8 {
		k.signup(ctx)
		return
	}
	u := k.users[rand.IntN(len(k.users))]
	switch {
	case len(u.sessions) == 0 || r < 25:
		k.login(ctx, u)
	case r < 60:
		k.refresh(ctx, u, u.sessions[rand.IntN(len(u.sessions))])
	case r < 78:
		k.revoke(ctx, u)
	default:
		k.me(ctx, u)
	}
}

func (k *worker) signup(ctx context.Context) {
	k.n++
	u := &user{email: fmt.Sprintf("w%d-%d-%s@example.com", k.id, k.n, k.w.tag), password: "correct horse battery staple"}
	in := k.w.pick(nil)
	if in == nil {
		return
	}
	kills := in.kills.Load()
	a := k.w.call(ctx, "register", in, "POST", "/register", "", map[string]any{"email": u.email, "password": u.password, "name": "Chaos"})
	if a.status != http.StatusAccepted {
		k.unexpected(ctx, "register", a, http.StatusServiceUnavailable)
		return
	}
	code, err := k.w.mailCode(ctx, u.email, 30*time.Second)
	if err != nil {
		if ctx.Err() == nil && in.kills.Load() == kills {
			k.w.rec.violate("register of %s on %s answered 202 and no code came: %v", u.email, in.name, err)
		}
		return
	}
	in = k.w.pick(nil)
	if in == nil {
		return
	}
	v := k.w.call(ctx, "verify", in, "POST", "/register/verify", "", map[string]any{"email": u.email, "code": code})
	if v.status != http.StatusCreated {
		k.unexpected(ctx, "verify", v, http.StatusServiceUnavailable)
		return
	}
	u.id = v.str("user", "id")
	s := sessionOf(v)
	u.sessions = append(u.sessions, s)
	k.users = append(k.users, u)
	k.expectMe(ctx, "verify", in, u, s, true)
}

func (k *worker) login(ctx context.Context, u *user) {
	in := k.w.pick(nil)
	if in == nil {
		return
	}
	a := k.w.call(ctx, "login", in, "POST", "/login", "", map[string]any{"email": u.email, "password": u.password})
	if a.status != http.StatusOK {
		k.unexpected(ctx, "login", a, http.StatusServiceUnavailable)
		return
	}
	s := sessionOf(a)
	u.sessions = append(u.sessions, s)
	k.expectMe(ctx, "login", in, u, s, false)
}

// refresh rotates a session's pair, presenting the same refresh token again
// after an answer that did not come or was 503 (what a client does within
// the reuse grace), and drops the session when it cannot tell.
func (k *worker) refresh(ctx context.Context, u *user, s *session) {
	began := time.Now()
	lost := false
	for attempt := 0; attempt < 3; attempt++ {
		in := k.w.pick(nil)
		if in == nil {
			return
		}
		a := k.w.call(ctx, "refresh", in, "POST", "/refresh", "", map[string]any{"refresh_token": s.refresh})
		switch {
		case a.status == http.StatusOK:
			if a.str("session_id") != s.id || a.str("user", "id") != u.id {
				k.w.rec.violate("refresh of session %s on %s answered session %q user %q", s.id, in.name, a.str("session_id"), a.str("user", "id"))
			}
			s.access, s.refresh = a.str("access_token"), a.str("refresh_token")
			// The new access token works on every instance.
			for _, other := range k.w.instances {
				if other.up.Load() {
					k.expectMe(ctx, "refresh", other, u, s, false)
				}
			}
			return
		case a.status == 0:
			lost = true // it may have committed: the retry must come within the grace
		case a.status == http.StatusUnauthorized && (lost || time.Since(began) >= refreshGrace):
			// The rotation may have committed with its answer lost, and
			// the retry came after the grace: reuse, as the contract says.
			u.drop(s)
			return
		case a.status != http.StatusServiceUnavailable:
			k.unexpected(ctx, "refresh of a live session", a)
			u.drop(s)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	u.drop(s)
}

// revoke deletes one of the user's sessions with another's token, then
// checks that another instance refuses the revoked access token within the
// promised second and no longer lists the session.
func (k *worker) revoke(ctx context.Context, u *user) {
	if len(u.sessions) < 2 {
		k.login(ctx, u)
		return
	}
	by, victim := u.sessions[0], u.sessions[1+rand.IntN(len(u.sessions)-1)]
	in := k.w.pick(nil)
	if in == nil {
		return
	}
	a := k.w.call(ctx, "revoke", in, "DELETE", "/sessions/"+victim.id, by.access, nil)
	done := time.Now()
	u.drop(victim)
	if a.status != http.StatusNoContent {
		k.unexpected(ctx, "revoke", a, http.StatusServiceUnavailable)
		return
	}
	other := k.w.pick(in)
	if other == nil {
		return
	}
	for {
		sent := time.Now()
		r := k.w.call(ctx, "me of a revoked session", other, "GET", "/me", victim.access, nil)
		switch {
		case r.status == http.StatusUnauthorized:
			k.w.rec.revoked(time.Since(done))
			k.expectNotListed(ctx, other, u, by, victim)
			return
		case r.status == 0:
			return // the other instance went away
		case sent.Sub(done) > revocationPromise:
			if ctx.Err() == nil {
				k.w.rec.violate("session %s revoked on %s (204) still answered %d on %s %s after the 204",
					victim.id, in.name, r.status, other.name, sent.Sub(done).Round(time.Millisecond))
			}
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (k *worker) me(ctx context.Context, u *user) {
	s := u.sessions[rand.IntN(len(u.sessions))]
	in := k.w.pick(nil)
	if in == nil {
		return
	}
	a := k.w.call(ctx, "me", in, "GET", "/me", s.access, nil)
	switch a.status {
	case http.StatusOK:
		if a.str("id") != u.id {
			k.w.rec.violate("GET /me on %s with %s's token answered user %q", in.name, u.id, a.str("id"))
		}
	default:
		k.unexpected(ctx, "me", a, http.StatusServiceUnavailable)
	}
}

// expectMe checks what a 2xx that issued s implies: GET /me with its access
// token answers the user (verified when it should be) on another instance
// than the one that answered, or for a refresh on the one named (the
// caller names each in turn).
func (k *worker) expectMe(ctx context.Context, op string, answered *instance, u *user, s *session, verified bool) {
	deadline := time.Now().Add(confirmFor)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		in := answered
		if op != "refresh" {
			in = k.w.pick(answered)
		}
		if in == nil || !in.up.Load() {
			return
		}
		a := k.w.call(ctx, "me after "+op, in, "GET", "/me", s.access, nil)
		switch {
		case a.status == http.StatusOK:
			if a.str("id") != u.id || (verified && a.str("email_verified") != "true") {
				k.w.rec.violate("GET /me on %s after %s answered %s; want user %s, verified %v", in.name, op, a.raw, u.id, verified)
			}
			return
		case a.status != 0 && a.status != http.StatusServiceUnavailable:
			k.w.rec.violate("GET /me on %s after %s of session %s answered %d %s", in.name, op, s.id, a.status, a.raw)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	if ctx.Err() == nil {
		k.w.rec.unconfirm("GET /me after %s of session %s", op, s.id)
	}
}

// expectNotListed checks that GET /sessions no longer lists a session
// revoked with a 204.
func (k *worker) expectNotListed(ctx context.Context, in *instance, u *user, by, victim *session) {
	deadline := time.Now().Add(confirmFor)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		a := k.w.call(ctx, "sessions after revoke", in, "GET", "/sessions", by.access, nil)
		switch a.status {
		case http.StatusOK:
			var list struct {
				Sessions []struct{ ID string } `json:"sessions"`
			}
			_ = json.Unmarshal([]byte(a.raw), &list)
			for _, s := range list.Sessions {
				if s.ID == victim.id {
					k.w.rec.violate("GET /sessions of %s on %s lists session %s after its revocation answered 204", u.id, in.name, victim.id)
				}
			}
			return
		case 0:
			return
		case http.StatusServiceUnavailable:
			time.Sleep(100 * time.Millisecond)
		default:
			k.w.rec.violate("GET /sessions of %s on %s answered %d %s", u.id, in.name, a.status, a.raw)
			return
		}
	}
	if ctx.Err() == nil {
		k.w.rec.unconfirm("GET /sessions after the revocation of %s", victim.id)
	}
}

// unexpected records an answer that is neither the success the workload
// expects nor one of the allowed refusals nor no answer at all.
func (k *worker) unexpected(ctx context.Context, op string, a answer, allowed ...int) {
	if a.status == 0 || slices.Contains(allowed, a.status) || a.status >= 500 || ctx.Err() != nil {
		return // no answer, an allowed refusal, or already recorded as a server error
	}
	k.w.rec.violate("%s on %s answered %d %s", op, a.in.name, a.status, a.raw)
}

func (u *user) drop(s *session) {
	u.sessions = slices.DeleteFunc(u.sessions, func(x *session) bool { return x == s })
}

var sixDigits = regexp.MustCompile(`\b[0-9]{6}\b`)

// mailCode waits for the code mailed to addr, through Mailpit's search API
// (each workload address receives one mail). testenv's Mailpit helpers stop
// the test on failure, which only the test's own goroutine may do.
func (w *workload) mailCode(ctx context.Context, addr string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for ctx.Err() == nil {
		var found struct {
			Messages []struct{ ID string } `json:"messages"`
		}
		err := w.mailpitJSON(ctx, "/api/v1/search?query="+url.QueryEscape(`to:"`+addr+`"`), &found)
		if err == nil && len(found.Messages) > 0 {
			var msg struct{ Text string }
			if err := w.mailpitJSON(ctx, "/api/v1/message/"+url.PathEscape(found.Messages[0].ID), &msg); err != nil {
				return "", err
			}
			if code := sixDigits.FindString(msg.Text); code != "" {
				return code, nil
			}
			return "", fmt.Errorf("no code in the mail to %s: %q", addr, msg.Text)
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no mail to %s within %s (last error %v)", addr, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "", ctx.Err()
}

func (w *workload) mailpitJSON(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.mailpit+path, nil)
	if err != nil {
		return err
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errors.New("Mailpit " + path + ": " + resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
