package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"
)

func TestQuantileNearestRank(t *testing.T) {
	ds := make([]time.Duration, 100)
	for i := range ds {
		ds[i] = time.Duration(100-i) * time.Millisecond // unsorted on purpose
	}
	l := summarize(ds)
	if l.N != 100 || l.P50 != 50 || l.P90 != 90 || l.P99 != 99 || l.Max != 100 || l.P999 != 100 {
		t.Fatalf("summarize = %+v", l)
	}
	if l := summarize([]time.Duration{3 * time.Millisecond}); l.P50 != 3 || l.P99 != 3 || l.Max != 3 {
		t.Fatalf("one sample: %+v", l)
	}
	if l := summarize(nil); l.N != 0 {
		t.Fatalf("no samples: %+v", l)
	}
}

func TestOnlyLoopbackTargets(t *testing.T) {
	for _, u := range []string{"http://127.0.0.1:8080", "http://localhost:1/", "http://[::1]:8080", "http://127.9.9.9:80"} {
		if _, err := loopbackURL("-url", u); err != nil {
			t.Errorf("%s refused: %v", u, err)
		}
	}
	for _, u := range []string{"http://10.0.0.1:8080", "http://example.com", "http://0.0.0.0:8080", "ftp://127.0.0.1",
		"127.0.0.1:8080", "http://user:pw@127.0.0.1:1", "http://127.0.0.1.example.com:80", "http://[::ffff:8.8.8.8]:80"} {
		if _, err := loopbackURL("-url", u); err == nil {
			t.Errorf("%s accepted", u)
		}
	}
}

func TestFlagBounds(t *testing.T) {
	var out bytes.Buffer
	for _, args := range [][]string{
		{"-c", "0"}, {"-c", "5000"}, {"-d", "0s"}, {"-d", "2h"}, {"-rate", "-1"}, {"-scenario", "nope"},
		{"-users", "0"}, {"-engine", "curl"}, {"-n", "-3"}, {"-url", "http://192.168.1.1:80"},
		{"-challenges", "0"}, {"-challenges", "20001"},
	} {
		if _, err := parseFlags(args, &out); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
	c, err := parseFlags(nil, &out)
	if err != nil || c.url != "http://127.0.0.1:8080" || c.scenario != "me" || c.conns != 16 || c.duration != 15*time.Second {
		t.Fatalf("defaults: %+v, %v", c, err)
	}
}

// sleeper is a worker whose every request takes d.
type sleeper struct {
	d time.Duration
	n atomic.Int64
}

func (s *sleeper) Do(ctx context.Context) (int, error) {
	s.n.Add(1)
	if err := sleepCtx(ctx, s.d); err != nil {
		return 0, err
	}
	return 200, nil
}

// A server that can answer 20 requests/s offered 100/s: the open loop must
// charge the queueing to the requests (latency grows through the run) and
// count the requests it never got to send, instead of reporting a steady
// 50 ms the way a closed loop would.
func TestOpenLoopChargesTheBacklog(t *testing.T) {
	w := &sleeper{d: 50 * time.Millisecond}
	res := phase{duration: time.Second, rate: 100, timeout: 5 * time.Second}.run(t.Context(), []worker{w})
	r := buildReport(res)
	if r.Scheduled != 100 {
		t.Errorf("scheduled %d, want 100", r.Scheduled)
	}
	if r.Requests < 15 || r.Requests > 25 {
		t.Errorf("answered %d, want about 20", r.Requests)
	}
	if r.Unsent != r.Scheduled-r.Requests {
		t.Errorf("unsent %d, want %d", r.Unsent, r.Scheduled-r.Requests)
	}
	// The 20th request was due at 190 ms and sent at about 1 s.
	if r.Latency.Max < 700 {
		t.Errorf("max latency %.1f ms: the backlog was not charged", r.Latency.Max)
	}
	if r.LatencyWithUnsent == nil || r.LatencyWithUnsent.N != int(r.Scheduled) {
		t.Errorf("latency with unsent: %+v", r.LatencyWithUnsent)
	}

	// The same worker closed loop: every request is its own 50 ms.
	res = phase{duration: 500 * time.Millisecond, timeout: 5 * time.Second}.run(t.Context(), []worker{&sleeper{d: 50 * time.Millisecond}})
	r = buildReport(res)
	if r.Latency.Max > 100 || r.Requests < 8 || r.Unsent != 0 {
		t.Errorf("closed loop: %+v", r)
	}
}

func TestOpenLoopKeepsItsRate(t *testing.T) {
	ws := []worker{&sleeper{d: time.Millisecond}, &sleeper{d: time.Millisecond}}
	res := phase{duration: time.Second, rate: 200, timeout: time.Second}.run(t.Context(), ws)
	r := buildReport(res)
	if r.Requests < 195 || r.Requests > 200 || r.Unsent > 5 {
		t.Errorf("answered %d, unsent %d of %d due", r.Requests, r.Unsent, r.Scheduled)
	}
	if r.Latency.P50 > 20 {
		t.Errorf("p50 %.1f ms for 1 ms requests", r.Latency.P50)
	}
}

func TestMaxRequestsBoundsARun(t *testing.T) {
	w := &sleeper{}
	res := phase{duration: 10 * time.Second, maxReqs: 50, timeout: time.Second}.run(t.Context(), []worker{w, w, w})
	if got := buildReport(res).Requests; got != 50 {
		t.Fatalf("%d requests, want 50", got)
	}
}

// fakeAuthd speaks the parts of API.md authbench uses, strictly: a refresh
// token works once, each signup's code goes to the fake Mailpit, TOTP is
// enabled only with the current code of its secret, and a login challenge
// and a backup code each answer once.
type fakeAuthd struct {
	mu         sync.Mutex
	codes      map[string]string // email -> code
	password   map[string]string
	refresh    map[string]string // current refresh token -> email
	access     map[string]string // access token -> email
	secret     map[string]string // email -> TOTP secret, set up or enabled
	backup     map[string]map[string]bool
	challenges map[string]string // challenge token -> email
	mails      []fakeMail
	n          int
	busy       atomic.Int64 // answer this many logins 503 first
	reused     atomic.Int64
	verified   atomic.Int64 // challenges answered
	// forwardedFor counts the logins by their X-Forwarded-For, "" for none,
	// and whether their email has an account.
	forwardedFor map[string]map[bool]int
}

type fakeMail struct {
	id, to, text string
	at           time.Time
}

func newFakeAuthd() *fakeAuthd {
	return &fakeAuthd{codes: map[string]string{}, password: map[string]string{}, refresh: map[string]string{}, access: map[string]string{},
		secret: map[string]string{}, backup: map[string]map[string]bool{}, challenges: map[string]string{},
		forwardedFor: map[string]map[bool]int{}}
}

func (f *fakeAuthd) tokens(email string) map[string]string {
	f.n++
	a, r := fmt.Sprintf("access-%d", f.n), fmt.Sprintf("refresh-%d", f.n)
	f.access[a], f.refresh[r] = email, email
	return map[string]string{"access_token": a, "refresh_token": r, "session_id": "s"}
}

// signedIn is a login's answer: tokens, or a challenge for a user with TOTP on.
func (f *fakeAuthd) signedIn(email string) any {
	if f.backup[email] == nil {
		return f.tokens(email)
	}
	f.n++
	token := fmt.Sprintf("challenge-%d", f.n)
	f.challenges[token] = email
	return map[string]any{"two_factor_required": true, "challenge_token": token, "methods": []string{"totp", "backup_code"}, "expires_in": 300}
}

func (f *fakeAuthd) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var in map[string]string
	if r.Method == http.MethodPost && r.ContentLength != 0 { // POST /2fa/setup has no body
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			http.Error(w, "bad json", 400)
			return
		}
	}
	reply := func(status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(v)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch r.URL.Path {
	case "/healthz":
		reply(200, map[string]string{"status": "ok"})
	case "/metrics":
		fmt.Fprintln(w, "# HELP process_cpu_seconds_total x\nprocess_cpu_seconds_total 1.5")
	case apiPrefix + "/register":
		code := fmt.Sprintf("%06d", 100000+len(f.codes))
		f.codes[in["email"]], f.password[in["email"]] = code, in["password"]
		f.mails = append(f.mails, fakeMail{id: fmt.Sprint(len(f.mails)), to: strings.ToUpper(in["email"]), text: "Your code:\n\n    " + code + "\n\nbye", at: time.Now()})
		reply(202, map[string]string{"status": "verification_sent"})
	case apiPrefix + "/register/verify":
		if f.codes[in["email"]] != in["code"] {
			reply(400, map[string]any{"error": map[string]string{"code": "invalid_code"}})
			return
		}
		reply(201, f.tokens(in["email"]))
	case apiPrefix + "/login":
		xff := r.Header.Get("X-Forwarded-For")
		if f.forwardedFor[xff] == nil {
			f.forwardedFor[xff] = map[bool]int{}
		}
		_, known := f.password[in["email"]]
		f.forwardedFor[xff][known]++
		if f.busy.Add(-1) >= 0 {
			w.Header().Set("Retry-After", "1")
			reply(503, map[string]any{"error": map[string]string{"code": "unavailable"}})
			return
		}
		if p, ok := f.password[in["email"]]; !ok || p != in["password"] {
			reply(401, map[string]any{"error": map[string]string{"code": "invalid_credentials"}})
			return
		}
		reply(200, f.signedIn(in["email"]))
	case apiPrefix + "/refresh":
		email, ok := f.refresh[in["refresh_token"]]
		if !ok {
			f.reused.Add(1)
			reply(401, map[string]any{"error": map[string]string{"code": "invalid_refresh_token"}})
			return
		}
		delete(f.refresh, in["refresh_token"])
		reply(200, f.tokens(email))
	case apiPrefix + "/me":
		if f.access[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")] == "" {
			reply(401, map[string]any{"error": map[string]string{"code": "unauthorized"}})
			return
		}
		reply(200, map[string]string{"id": "u"})
	case apiPrefix + "/2fa/setup":
		email := f.access[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
		if email == "" {
			reply(401, map[string]any{"error": map[string]string{"code": "unauthorized"}})
			return
		}
		key, _ := totp.Generate(totp.GenerateOpts{Issuer: "fake", AccountName: email})
		f.secret[email] = key.Secret()
		reply(200, map[string]string{"secret": key.Secret(), "provisioning_uri": key.URL()})
	case apiPrefix + "/2fa/enable":
		email := f.access[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
		if email == "" || f.secret[email] == "" || f.backup[email] != nil {
			reply(409, map[string]any{"error": map[string]string{"code": "conflict"}})
			return
		}
		if !totp.Validate(in["code"], f.secret[email]) {
			reply(400, map[string]any{"error": map[string]string{"code": "invalid_code"}})
			return
		}
		var codes []string
		f.backup[email] = map[string]bool{}
		for i := range 10 {
			f.n++
			c := fmt.Sprintf("%04d-%04d", f.n%10000, i)
			codes = append(codes, c)
			f.backup[email][c] = true
		}
		reply(200, map[string]any{"backup_codes": codes})
	case apiPrefix + "/2fa/verify":
		email, ok := f.challenges[in["challenge_token"]]
		if !ok {
			reply(401, map[string]any{"error": map[string]string{"code": "invalid_challenge"}})
			return
		}
		delete(f.challenges, in["challenge_token"])
		if !f.backup[email][in["code"]] {
			reply(400, map[string]any{"error": map[string]string{"code": "invalid_code"}})
			return
		}
		delete(f.backup[email], in["code"])
		f.verified.Add(1)
		reply(200, f.tokens(email))
	default:
		reply(404, nil)
	}
}

// mailpitAPI serves the fake's mails the way Mailpit's API lists them:
// newest first, a page at a time.
func (f *fakeAuthd) mailpitAPI() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/messages", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		type addr struct{ Address string }
		var list []map[string]any
		for i := len(f.mails) - 1; i >= 0; i-- {
			m := f.mails[i]
			list = append(list, map[string]any{"ID": m.id, "Created": m.at, "To": []addr{{m.to}}})
		}
		var start, limit int
		fmt.Sscan(r.URL.Query().Get("start"), &start)
		fmt.Sscan(r.URL.Query().Get("limit"), &limit)
		list = list[min(start, len(list)):min(start+limit, len(list))]
		json.NewEncoder(w).Encode(map[string]any{"messages": list})
	})
	mux.HandleFunc("GET /api/v1/message/{id}", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, m := range f.mails {
			if m.id == r.PathValue("id") {
				json.NewEncoder(w).Encode(map[string]string{"ID": m.id, "Text": m.text})
				return
			}
		}
		http.NotFound(w, r)
	})
	return mux
}

func TestScenariosAgainstAFakeAuthd(t *testing.T) {
	f := newFakeAuthd()
	authd := httptest.NewServer(f)
	defer authd.Close()
	mp := httptest.NewServer(f.mailpitAPI())
	defer mp.Close()
	for _, engine := range []string{"nethttp", "raw"} {
		for _, sc := range []string{"me", "refresh", "login", "verify2fa"} {
			t.Run(engine+"/"+sc, func(t *testing.T) {
				f.busy.Store(3) // the setup must ride out 503s
				f.reused.Store(0)
				f.verified.Store(0)
				var out, errOut bytes.Buffer
				// verify2fa: 4 users, one per connection (25 challenges need 3).
				err := run(t.Context(), []string{"-url", authd.URL, "-mailpit", mp.URL, "-scenario", sc, "-engine", engine,
					"-c", "4", "-users", "2", "-challenges", "25", "-d", "300ms", "-warmup", "100ms", "-json"}, &out, &errOut)
				if err != nil {
					t.Fatalf("%v\n%s", err, errOut.String())
				}
				var rep Report
				if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
					t.Fatalf("JSON report: %v\n%s", err, out.String())
				}
				if rep.Requests == 0 || rep.Statuses["200"] != rep.Requests || rep.Errors != 0 {
					t.Fatalf("report: %+v\n%s", rep, errOut.String())
				}
				// A worker dials at its first request, and verify2fa's 25
				// challenges may all go to the other workers. net/http's
				// Transport may dial again when a busy machine starves its
				// connection goroutines (seen under the whole suite on two
				// cores); the raw engine owns its connections outright.
				most := int64(4)
				if engine == "nethttp" {
					most = 8
				}
				if rep.Dials > most || (sc != "verify2fa" && rep.Dials < 4) {
					t.Errorf("%d connections opened by 4 workers", rep.Dials)
				}
				if n := f.reused.Load(); n != 0 {
					t.Errorf("%d refresh tokens presented after rotation", n)
				}
				if !strings.Contains(errOut.String(), "p99") {
					t.Errorf("no human summary on stderr with -json:\n%s", errOut.String())
				}
				if sc != "verify2fa" {
					return
				}
				// The warmup answers at most a tenth of the challenges, the
				// measurement the rest, and the run ends when they are used up.
				if rep.Users != 4 || rep.Requests < 23 || f.verified.Load() != 25 || rep.DurationS >= 0.3 {
					t.Errorf("%d users, %d verifies measured in %.3fs, %d answered in all; want 4, at least 23 in under 0.3s, 25",
						rep.Users, rep.Requests, rep.DurationS, f.verified.Load())
				}
			})
		}
	}
}

func TestRefusesToRunWithoutMailpit(t *testing.T) {
	authd := httptest.NewServer(newFakeAuthd())
	defer authd.Close()
	var out, errOut bytes.Buffer
	err := run(t.Context(), []string{"-url", authd.URL, "-scenario", "me", "-d", "100ms"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "-mailpit") {
		t.Fatalf("err = %v", err)
	}
}

func TestFloodScenarioAgainstAFakeAuthd(t *testing.T) {
	f := newFakeAuthd()
	authd := httptest.NewServer(f)
	defer authd.Close()
	mp := httptest.NewServer(f.mailpitAPI())
	defer mp.Close()
	var out, errOut bytes.Buffer
	err := run(t.Context(), []string{"-url", authd.URL, "-mailpit", mp.URL, "-scenario", "flood", "-engine", "raw",
		"-users", "2", "-d", "500ms", "-warmup", "0s", "-flood-rate", "400", "-flood-addrs", "300", "-flood-c", "8",
		"-owner-rate", "20", "-me-rate", "40", "-refresh-rate", "20", "-json"}, &out, &errOut)
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	var rep FloodReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("JSON report: %v\n%s", err, out.String())
	}
	steady := []string{"owner login", "GET /me", "POST /refresh"}
	for _, phase := range []struct {
		name string
		reps map[string]Report
		want []string
	}{{"before", rep.Before, steady}, {"during", rep.During, append([]string{"flood login"}, steady...)}} {
		if len(phase.reps) != len(phase.want) {
			t.Errorf("%s: streams %v, want %q", phase.name, slices.Collect(maps.Keys(phase.reps)), phase.want)
		}
		for _, name := range phase.want {
			r := phase.reps[name]
			want := "200"
			if name == "flood login" {
				want = "401" // unknown emails
			}
			if r.Requests == 0 || r.Statuses[want] != r.Requests || r.Errors != 0 {
				t.Errorf("%s, %s: %d answered, statuses %v, %d errors; want all %s", phase.name, name, r.Requests, r.Statuses, r.Errors, want)
			}
		}
	}
	// The flood came from its addresses, each in a /24 of its own, with
	// emails no account has; the owner's logins came without a forwarded
	// address, as from its own network.
	nets := map[string]bool{}
	for xff, byKnown := range f.forwardedFor {
		if xff == "" {
			if byKnown[false] != 0 || byKnown[true] == 0 {
				t.Errorf("logins without X-Forwarded-For: %v, want only the owner's", byKnown)
			}
			continue
		}
		if byKnown[true] != 0 {
			t.Errorf("%d logins of an account from flood address %s", byKnown[true], xff)
		}
		nets[xff[:strings.LastIndexByte(xff, '.')]] = true
	}
	if flood := rep.During["flood login"].Requests; int64(len(nets)) != min(flood, 300) {
		t.Errorf("the flood's %d logins came from %d /24s, want %d", flood, len(nets), min(flood, 300))
	}
	if !strings.Contains(errOut.String(), "with the flood") {
		t.Errorf("no human summary on stderr with -json:\n%s", errOut.String())
	}
}
