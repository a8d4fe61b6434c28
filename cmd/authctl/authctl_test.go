package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/natsbus"
	"github.com/authd/authd/internal/seal"
	"github.com/authd/authd/internal/testenv"
)

// env is the environment run reads in a test.
type env map[string]string

// get is e's value of k. Like authd's environment, an env has authd's
// master key (testMasterKey) unless it says otherwise.
func (e env) get(k string) string {
	if v, ok := e[k]; ok || k != "AUTHD_MASTER_KEY" {
		return v
	}
	return base64.StdEncoding.EncodeToString(testMasterKey)
}

// testMasterKey is the master key of the tests' stores (newStore) and, unless
// a test says otherwise, of the authctl they run.
var testMasterKey = []byte("authctl-tests-master-key-32bytes")

// withNATS points authctl at cfg's server, stream and subjects.
func (e env) withNATS(cfg natsbus.Config) env {
	e["NATS_URL"] = cfg.URL
	e["AUTHD_NATS_STREAM"] = cfg.Stream
	e["AUTHD_NATS_SUBJECT_PREFIX"] = cfg.SubjectPrefix
	if cfg.URL == "" {
		e["AUTHD_EMBEDDED_NATS_ADDR"] = cfg.EmbeddedAddr
	}
	return e
}

type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

func runCLI(t *testing.T, e env, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, e.get, &stdout, &stderr)
	return result{code, stdout.String(), stderr.String()}
}

// linesOf is what b holds, a line each.
func linesOf(b *testenv.SyncBuffer) []string {
	s := strings.TrimSuffix(b.String(), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// background runs a long-running command (events tail) until stop.
type background struct {
	stdout, stderr testenv.SyncBuffer
	cancel         context.CancelFunc
	done           chan int
}

func startCLI(t *testing.T, e env, args ...string) *background {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b := &background{cancel: cancel, done: make(chan int, 1)}
	go func() { b.done <- run(ctx, args, e.get, &b.stdout, &b.stderr) }()
	t.Cleanup(func() { b.stop(t) })
	return b
}

// stop interrupts the command, as SIGINT would, and returns its exit status.
func (b *background) stop(t *testing.T) int {
	t.Helper()
	b.cancel()
	select {
	case code := <-b.done:
		b.done <- code // a second stop (the cleanup) gets it too
		return code
	case <-time.After(15 * time.Second):
		t.Fatalf("command did not stop when interrupted; stderr:\n%s", b.stderr.String())
		return -1
	}
}

// waitLines waits until the command has printed n lines.
func (b *background) waitLines(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if lines := linesOf(&b.stdout); len(lines) >= n {
			return lines
		}
		select {
		case code := <-b.done:
			b.done <- code
			t.Fatalf("command exited %d before printing %d lines; stdout:\n%s\nstderr:\n%s", code, n, b.stdout.String(), b.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("printed %d lines, want %d; stderr:\n%s", len(linesOf(&b.stdout)), n, b.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newStore(t *testing.T, pool *pgxpool.Pool) *eventstore.Store {
	t.Helper()
	sealer, err := seal.New(testMasterKey)
	if err != nil {
		t.Fatal(err)
	}
	return eventstore.NewStore(pool, sealer, nil)
}

// userEvent encodes e as the user's event, with its envelope ids set.
func userEvent(t *testing.T, e domain.Event, user, tenant uuid.UUID) eventstore.Event {
	t.Helper()
	ev, err := eventstore.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	ev.UserID, ev.TenantID = user, tenant
	ev.Metadata = eventstore.Metadata{IP: "192.0.2.7", UserAgent: "authctl-test", RequestID: "req-1"}
	return ev
}

const secretText = "$argon2id$v=19$m=65536,t=3,p=4$c2VjcmV0LXNhbHQ$TOP-SECRET-HASH"

func register(t *testing.T, store *eventstore.Store, user, tenant uuid.UUID, email string) eventstore.Cursor {
	t.Helper()
	ev := userEvent(t, &domain.UserRegistered{
		UserID: user, TenantID: tenant, Email: email, Name: "Ada",
		Secret: domain.PasswordSecret{PasswordHash: secretText},
	}, user, tenant)
	c, err := store.Append(context.Background(), "user-"+user.String(), 0, ev)
	if err != nil {
		t.Fatal(err)
	}
	return c.Last
}

// waitReadable waits until n events are readable from the log: transactions
// of other tests on the same server hold the readable end back for a moment.
func waitReadable(t *testing.T, store *eventstore.Store, n int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, _, err := store.Backlog(context.Background(), eventstore.Cursor{})
		if err != nil {
			t.Fatal(err)
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events readable, want %d", got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkEnvelope checks that line is one published envelope and returns it.
func checkEnvelope(t *testing.T, line string) eventstore.Event {
	t.Helper()
	if strings.Contains(line, "TOP-SECRET") || strings.Contains(line, "argon2id") || strings.Contains(line, "password") {
		t.Fatalf("an envelope carries the sealed part: %s", line)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal([]byte(line), &fields); err != nil {
		t.Fatalf("not one JSON object per line: %q: %v", line, err)
	}
	var keys []string
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	want := []string{"data", "id", "metadata", "occurred_at", "position", "stream_id", "tenant_id", "type", "user_id", "version"}
	if !slices.Equal(keys, want) {
		t.Fatalf("envelope fields %v, want %v", keys, want)
	}
	e, err := eventstore.FromMessage(nats.Header{eventstore.HeaderTx: {"0"}}, []byte(line))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestUsageMistakesExitTwo(t *testing.T) {
	t.Parallel()
	// None of these gets as far as reading the configuration or connecting.
	e := env{"DATABASE_URL": "postgres://nobody@127.0.0.1:1/none?sslmode=disable", "NATS_URL": "nats://127.0.0.1:1"}
	for _, tc := range []struct {
		args       []string
		wantStderr string
	}{
		{nil, "Commands:"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"projections"}, "needs a subcommand: status, rebuild"},
		{[]string{"projections", "fly"}, `unknown command "projections fly"`},
		{[]string{"projections", "rebuild"}, "(one of: " + projectionNames() + ") or give --all"},
		{[]string{"projections", "rebuild", "nope"}, `unknown projection "nope"; valid names: ` + projectionNames()},
		{[]string{"projections", "rebuild", "users", "--all"}, "not both"},
		{[]string{"projections", "rebuild", "users", "--batch", "0"}, "--batch must be at least 1"},
		{[]string{"projections", "status", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"projections", "status", "extra"}, "takes no arguments"},
		{[]string{"events", "tail", "--user", "not-a-uuid"}, `--user "not-a-uuid" is not a UUID`},
		{[]string{"events", "tail", "--type", "auth.>"}, "is not an event type"},
		{[]string{"events", "ls"}, "--stream is required"},
		{[]string{"health", "ftp://example.com"}, "is not an http:// or https:// URL"},
		{[]string{"health", "http://a", "http://b"}, "at most one URL"},
		{[]string{"help", "nothing"}, `unknown command "nothing"`},
	} {
		r := runCLI(t, e, tc.args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, tc.wantStderr) || r.stdout != "" {
			t.Errorf("authctl %s: %s\nwant exit 2 and stderr containing %q", strings.Join(tc.args, " "), r, tc.wantStderr)
		}
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	r := runCLI(t, env{}, "help")
	if r.code != exitOK || r.stderr != "" {
		t.Fatal(r)
	}
	for _, cmd := range []string{"migrate", "projections status", "projections rebuild", "events tail", "events ls", "health", "help"} {
		if !strings.Contains(r.stdout, "  "+cmd+" ") {
			t.Errorf("usage does not list %q:\n%s", cmd, r.stdout)
		}
	}
	t.Logf("usage text:\n%s", r.stdout)

	r = runCLI(t, env{}, "projections", "rebuild", "-h")
	if r.code != exitOK || !strings.Contains(r.stdout, "-batch int") || !strings.Contains(r.stdout, "(default 1000)") {
		t.Fatal(r)
	}
	if r = runCLI(t, env{}, "help", "events", "tail"); r.code != exitOK || !strings.Contains(r.stdout, "-from-start") {
		t.Fatal(r)
	}
}

func TestBadConfigurationFails(t *testing.T) {
	t.Parallel()
	r := runCLI(t, env{"DATABASE_URL": "mysql://root@localhost/authd"}, "projections", "status")
	if r.code != exitFailure || !strings.HasPrefix(r.stderr, "authctl: projections status: read configuration from the environment: ") ||
		!strings.Contains(r.stderr, "DATABASE_URL") {
		t.Fatal(r)
	}
}

func TestMigrateCreatesTheDatabaseAndIsIdempotent(t *testing.T) {
	t.Parallel()
	admin, err := pgx.ParseConfig(testenv.PostgresURL())
	if err != nil {
		t.Fatal(err)
	}
	name := "authd_test_" + testenv.Suffix()
	url := fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", admin.User, admin.Host, admin.Port, name)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, testenv.PostgresURL())
		if err != nil {
			t.Errorf("drop %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("drop %s: %v", name, err)
		}
	})
	e := env{"DATABASE_URL": url}

	r := runCLI(t, e, "migrate")
	if r.code != exitOK {
		t.Fatal(r)
	}
	for _, want := range []string{"applied 00001_eventstore.sql (version 1, ", "applied 00002_users.sql (version 2, ", fmt.Sprintf("database %q is up to date (", name), " applied)\n"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("first migrate does not say %q:\n%s", want, r)
		}
	}
	t.Logf("first run:\n%s", r.stdout)

	r = runCLI(t, e, "migrate")
	if r.code != exitOK || strings.Contains(r.stdout, "applied 0") || r.stdout != fmt.Sprintf("database %q is up to date (nothing to apply)\n", name) {
		t.Fatalf("second migrate: %s", r)
	}
	t.Logf("second run:\n%s", r.stdout)

	// The database really is migrated: the status of a fresh log reads.
	if r = runCLI(t, e, "projections", "status"); r.code != exitOK || !strings.Contains(r.stdout, "never run") {
		t.Fatal(r)
	}
}

func TestEventsLsPrintsPublicEnvelopes(t *testing.T) {
	t.Parallel()
	pool, url := testenv.Database(t)
	store := newStore(t, pool)
	user, tenant := uuid.New(), uuid.New()
	register(t, store, user, tenant, "ada@example.com")
	verified := userEvent(t, &domain.EmailVerified{UserID: user}, user, tenant)
	if _, err := store.Append(context.Background(), "user-"+user.String(), 1, verified); err != nil {
		t.Fatal(err)
	}
	loaded, err := store.Load(context.Background(), "user-"+user.String())
	if err != nil || !strings.Contains(string(loaded[0].Secret), "TOP-SECRET") {
		t.Fatalf("setup: the secret was not stored (%v)", err)
	}

	r := runCLI(t, env{"DATABASE_URL": url}, "events", "ls", "--stream", "user-"+user.String())
	if r.code != exitOK || r.stderr != "" {
		t.Fatal(r)
	}
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), r.stdout)
	}
	first, second := checkEnvelope(t, lines[0]), checkEnvelope(t, lines[1])
	if first.Type != domain.TypeUserRegistered || first.Version != 1 || first.StreamID != "user-"+user.String() ||
		first.UserID != user || first.TenantID != tenant || first.Metadata.RequestID != "req-1" {
		t.Errorf("first envelope %+v", first)
	}
	var data domain.UserRegistered
	if err := json.Unmarshal(first.Data, &data); err != nil || data.Email != "ada@example.com" || data.UserID != user {
		t.Errorf("first envelope data %s (%v)", first.Data, err)
	}
	if second.Type != domain.TypeEmailVerified || second.Version != 2 || second.Position <= first.Position {
		t.Errorf("second envelope %+v", second)
	}
	// The same bytes the relay publishes.
	want, err := loaded[0].MarshalEnvelope()
	if err != nil || lines[0] != string(want) {
		t.Errorf("envelope differs from MarshalEnvelope:\n got %s\nwant %s", lines[0], want)
	}

	r = runCLI(t, env{"DATABASE_URL": url}, "events", "ls", "--stream", "user-nobody")
	if r.code != exitFailure || r.stderr != "authctl: events ls: stream \"user-nobody\" has no events\n" {
		t.Fatal(r)
	}
}

// events ls opens personal fields with authd's master key, and shows those
// of an erased user as [erased], ids and request id intact. Without the
// master key it refuses: it could show neither.
func TestEventsLsShowsErasedPersonalFields(t *testing.T) {
	t.Parallel()
	pool, url := testenv.Database(t)
	store := newStore(t, pool)
	ctx := context.Background()
	user, tenant := uuid.New(), uuid.New()
	register(t, store, user, tenant, "ada@example.com")
	stream := "user-" + user.String()

	r := runCLI(t, env{"DATABASE_URL": url}, "events", "ls", "--stream", stream)
	if r.code != exitOK || !strings.Contains(r.stdout, "ada@example.com") || !strings.Contains(r.stdout, "192.0.2.7") || strings.Contains(r.stdout, "erased") {
		t.Fatalf("a live user's events: %s", r)
	}

	if _, err := store.Write(ctx, eventstore.Change{Also: []eventstore.Statement{eventstore.Shred(user)}}); err != nil {
		t.Fatal(err)
	}
	r = runCLI(t, env{"DATABASE_URL": url}, "events", "ls", "--stream", stream)
	if r.code != exitOK || strings.Contains(r.stdout, "ada@example.com") || strings.Contains(r.stdout, "192.0.2.7") {
		t.Fatalf("an erased user's events: %s", r)
	}
	var erased struct {
		UserID   uuid.UUID           `json:"user_id"`
		Metadata eventstore.Metadata `json:"metadata"`
		Data     map[string]string   `json:"data"`
		Erased   bool                `json:"erased"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &erased); err != nil {
		t.Fatal(err)
	}
	if !erased.Erased || erased.UserID != user || erased.Metadata != (eventstore.Metadata{IP: "[erased]", UserAgent: "[erased]", RequestID: "req-1"}) ||
		erased.Data["email"] != "[erased]" || erased.Data["name"] != "[erased]" || erased.Data["tenant_name"] != "[erased]" || erased.Data["user_id"] != user.String() {
		t.Errorf("erased envelope %s", r.stdout)
	}

	r = runCLI(t, env{"DATABASE_URL": url, "AUTHD_MASTER_KEY": "", "AUTHD_DATA_DIR": t.TempDir()}, "events", "ls", "--stream", stream)
	if r.code != exitFailure || !strings.Contains(r.stderr, "no AUTHD_MASTER_KEY") || r.stdout != "" {
		t.Fatalf("without the master key: %s", r)
	}
}

type projectionJSON struct {
	Name       string             `json:"name"`
	NeverRun   bool               `json:"never_run"`
	Checkpoint *eventstore.Cursor `json:"checkpoint"`
	StreamSeq  *uint64            `json:"stream_seq"`
	LagEvents  int64              `json:"lag_events"`
	LagSeconds float64            `json:"lag_seconds"`
	UpdatedAt  *time.Time         `json:"updated_at"`
}

type statusJSON struct {
	Projections []projectionJSON `json:"projections"`
	Relay       struct {
		Name       string             `json:"name"`
		NeverRun   bool               `json:"never_run"`
		Checkpoint *eventstore.Cursor `json:"checkpoint"`
		LagEvents  int64              `json:"lag_events"`
		LagSeconds float64            `json:"lag_seconds"`
		UpdatedAt  *time.Time         `json:"updated_at"`
	} `json:"relay"`
}

func statusOf(t *testing.T, e env) statusJSON {
	t.Helper()
	r := runCLI(t, e, "projections", "status", "--json")
	if r.code != exitOK || r.stderr != "" {
		t.Fatal(r)
	}
	var s statusJSON
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		t.Fatalf("status --json: %v\n%s", err, r.stdout)
	}
	var names []string
	for _, p := range s.Projections {
		names = append(names, p.Name)
	}
	if strings.Join(names, ", ") != projectionNames() {
		t.Fatalf("status lists %v, want every projection: %s", names, projectionNames())
	}
	return s
}

// users is the users projection's entry.
func (s statusJSON) users(t *testing.T) projectionJSON {
	t.Helper()
	for _, p := range s.Projections {
		if p.Name == "users" {
			return p
		}
	}
	t.Fatal("status lists no users projection")
	return projectionJSON{}
}

// statusLine returns the table line of a projection or of the relay.
func statusLine(t *testing.T, out, kind, name string) []string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 2 && f[0] == kind && f[1] == name {
			return f
		}
	}
	t.Fatalf("no %s %s line in:\n%s", kind, name, out)
	return nil
}

func TestProjectionsStatusAndRebuild(t *testing.T) {
	t.Parallel()
	pool, url := testenv.Database(t)
	store := newStore(t, pool)
	e := env{"DATABASE_URL": url, "AUTHD_NATS_STREAM": "AUTH_EVENTS_STATUS"}

	const users = 300
	tenant := uuid.New()
	ch := eventstore.Change{}
	for i := range users {
		u := uuid.New()
		ch.Appends = append(ch.Appends, eventstore.StreamAppend{Stream: "user-" + u.String(), Events: []eventstore.Event{
			userEvent(t, &domain.UserRegistered{UserID: u, TenantID: tenant, Email: fmt.Sprintf("u%d@example.com", i)}, u, tenant),
		}})
	}
	committed, err := store.Write(context.Background(), ch)
	if err != nil {
		t.Fatal(err)
	}
	waitReadable(t, store, users)

	// Before any run: no checkpoint row, the whole log is the lag.
	r := runCLI(t, e, "projections", "status")
	if r.code != exitOK || r.stderr != "" {
		t.Fatal(r)
	}
	t.Logf("status before:\n%s", r.stdout)
	if f := statusLine(t, r.stdout, "projection", "users"); strings.Join(f[2:4], " ") != "never run" || f[4] != "300" {
		t.Errorf("users before a run: %q", f)
	}
	if f := statusLine(t, r.stdout, "relay", "AUTH_EVENTS_STATUS"); f[2] != "0/0" || f[3] != "300" {
		t.Errorf("relay before a run: %q", f)
	}
	s := statusOf(t, e)
	for _, p := range s.Projections {
		if !p.NeverRun || p.LagEvents != users {
			t.Errorf("%s before a run: %+v", p.Name, p)
		}
	}
	if p := s.users(t); !p.NeverRun || p.Checkpoint != nil || p.UpdatedAt != nil || p.LagEvents != users || p.LagSeconds < 0 {
		t.Errorf("users before a run: %+v", p)
	}
	if s.Relay.NeverRun || s.Relay.Checkpoint == nil || !s.Relay.Checkpoint.IsZero() || s.Relay.LagEvents != users || s.Relay.UpdatedAt == nil {
		t.Errorf("relay before a run: %+v", s.Relay)
	}

	r = runCLI(t, e, "projections", "rebuild", "users", "--batch", "64")
	if r.code != exitOK {
		t.Fatal(r)
	}
	t.Logf("rebuild:\n%s", r)
	if !regexp.MustCompile(`^users: rebuilt from 300 events in [0-9.]+m?s \([0-9]+ events/s\)\n$`).MatchString(r.stdout) {
		t.Errorf("rebuild said %q", r.stdout)
	}
	// stderr is no terminal here: plain log lines, no progress bar.
	if !strings.Contains(r.stderr, "rebuilding projection") || strings.Contains(r.stderr, "\r") {
		t.Errorf("rebuild progress on stderr: %q", r.stderr)
	}
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM users WHERE tenant_id = $1`, tenant).Scan(&n); err != nil || n != users {
		t.Fatalf("users table has %d rows (%v), want %d", n, err, users)
	}

	s = statusOf(t, e)
	p := s.users(t)
	if p.NeverRun || p.Checkpoint == nil || *p.Checkpoint != committed.Last || p.LagEvents != 0 || p.LagSeconds != 0 || p.UpdatedAt == nil || p.StreamSeq == nil {
		t.Errorf("users after the rebuild: %+v (want checkpoint %s)", p, committed.Last)
	}
	r = runCLI(t, e, "projections", "status")
	if f := statusLine(t, r.stdout, "projection", "users"); r.code != exitOK || f[2] != committed.Last.String() || f[3] != "0" || f[4] != "0s" || !strings.Contains(r.stdout, " ago)") {
		t.Errorf("users after the rebuild: %q\n%s", f, r)
	}

	// --all rebuilds every projection, again from the whole log.
	r = runCLI(t, e, "projections", "rebuild", "--all")
	if r.code != exitOK {
		t.Fatal(r)
	}
	for _, name := range strings.Split(projectionNames(), ", ") {
		if !strings.Contains(r.stdout, name+": rebuilt from 300 events in ") {
			t.Errorf("rebuild --all did not rebuild %s:\n%s", name, r)
		}
	}
	for _, p := range statusOf(t, e).Projections {
		if p.NeverRun || p.LagEvents != 0 {
			t.Errorf("%s after rebuild --all: %+v", p.Name, p)
		}
	}
}

func TestRebuildOfAnUnmigratedDatabaseSaysSo(t *testing.T) {
	t.Parallel()
	_, url := testenv.Database(t)
	// A database with the log but not the read model: as if migration 2 were pending.
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(context.Background(), `DROP TABLE users`); err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, env{"DATABASE_URL": url}, "projections", "rebuild", "users")
	if r.code != exitFailure || !strings.Contains(r.stderr, "\nauthctl: projections rebuild: rebuild users: ") || !strings.Contains(r.stderr, "run: authctl migrate") {
		t.Fatal(r)
	}
}

func TestEventsTail(t *testing.T) {
	t.Parallel()
	natsCfg := testenv.NATSConfig(t, testenv.MachineNATS)
	bus := testenv.OpenNATS(t, natsCfg)
	pool, url := testenv.Database(t)
	store := newStore(t, pool)
	e := env{"DATABASE_URL": url}.withNATS(natsCfg)

	tail := startCLI(t, e, "events", "tail", "--type", "UserRegistered")
	waitForConsumers(t, bus, natsCfg.Stream, 1)

	alice, bob, tenant := uuid.New(), uuid.New(), uuid.New()
	register(t, store, alice, tenant, "alice@example.com")
	register(t, store, bob, tenant, "bob@example.com")
	verified := userEvent(t, &domain.EmailVerified{UserID: alice}, alice, tenant)
	if _, err := store.Append(context.Background(), "user-"+alice.String(), 1, verified); err != nil {
		t.Fatal(err)
	}
	relay := eventstore.NewRelay(store, bus, eventstore.RelayConfig{Backoff: 50 * time.Millisecond}, testenv.Logger(t), nil)
	ctx, stopRelay := context.WithCancel(context.Background())
	relayDone := make(chan struct{})
	go func() { relay.Run(ctx); close(relayDone) }()
	t.Cleanup(func() { stopRelay(); <-relayDone })

	lines := tail.waitLines(t, 2)
	// Let the EmailVerified event, published last, reach the tail too if the
	// type filter were letting it through.
	waitForStreamMsgs(t, bus, natsCfg.Stream, 3)
	time.Sleep(200 * time.Millisecond)
	if code := tail.stop(t); code != exitOK {
		t.Fatalf("tail exited %d when interrupted; stderr:\n%s", code, tail.stderr.String())
	}
	lines = linesOf(&tail.stdout)
	if len(lines) != 2 {
		t.Fatalf("tail printed %d lines, want the 2 UserRegistered:\n%s", len(lines), tail.stdout.String())
	}
	for i, want := range []uuid.UUID{alice, bob} {
		ev := checkEnvelope(t, lines[i])
		if ev.Type != domain.TypeUserRegistered || ev.UserID != want {
			t.Errorf("line %d: %+v, want %s's registration", i, ev, want)
		}
	}
	if !strings.Contains(tail.stderr.String(), "subject="+natsCfg.SubjectPrefix+".UserRegistered") {
		t.Errorf("tail did not log its subject: %s", tail.stderr.String())
	}

	// From the start, one user: her registration and verification, not Bob's.
	tail = startCLI(t, e, "events", "tail", "--from-start", "--user", alice.String())
	lines = tail.waitLines(t, 2)
	if code := tail.stop(t); code != exitOK {
		t.Fatalf("tail exited %d", code)
	}
	lines = linesOf(&tail.stdout)
	if len(lines) != 2 {
		t.Fatalf("tail --user printed %d lines, want 2:\n%s", len(lines), tail.stdout.String())
	}
	if a, b := checkEnvelope(t, lines[0]), checkEnvelope(t, lines[1]); a.Type != domain.TypeUserRegistered || a.UserID != alice ||
		b.Type != domain.TypeEmailVerified || b.UserID != alice {
		t.Errorf("tail --user printed %s and %s", a.Type, b.Type)
	}
}

// TestEventsTailReachesTheEmbeddedServer runs with NATS_URL empty, as beside
// an authd with its embedded server: authctl connects to
// AUTHD_EMBEDDED_NATS_ADDR and starts no server of its own.
func TestEventsTailReachesTheEmbeddedServer(t *testing.T) {
	t.Parallel()
	natsCfg := testenv.NATSConfig(t, testenv.EmbeddedNATS)
	bus := testenv.OpenNATS(t, natsCfg) // authd's embedded server
	e := env{}.withNATS(natsCfg)

	tail := startCLI(t, e, "events", "tail", "--from-start")
	user := uuid.New()
	ev := userEvent(t, &domain.UserRegistered{UserID: user, Email: "e@example.com"}, user, uuid.Nil)
	ev.ID, ev.StreamID, ev.Version, ev.Position, ev.OccurredAt = uuid.New(), "user-"+user.String(), 1, 1, time.Now()
	body, err := ev.MarshalEnvelope()
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg(bus.Subject(ev.Type))
	msg.Data = body
	msg.Header.Set(nats.MsgIdHdr, ev.ID.String())
	msg.Header.Set(eventstore.HeaderTx, "7")
	if _, err := bus.JetStream().PublishMsg(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	lines := tail.waitLines(t, 1)
	if got := checkEnvelope(t, lines[0]); got.ID != ev.ID || got.UserID != user {
		t.Fatalf("tail printed %s", lines[0])
	}
	if code := tail.stop(t); code != exitOK {
		t.Fatalf("tail exited %d", code)
	}
}

func TestEventsTailNeverStartsAServer(t *testing.T) {
	t.Parallel()
	port := testenv.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	r := runCLI(t, env{"AUTHD_EMBEDDED_NATS_ADDR": addr, "AUTHD_DATA_DIR": t.TempDir()}, "events", "tail")
	if r.code != exitFailure || !strings.HasPrefix(r.stderr, "authctl: events tail: connect to NATS at nats://"+addr) {
		t.Fatal(r)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("something listens on %s after authctl ran", addr)
	}

	// A server without authd's stream: a clear error, and no stream created.
	natsCfg := testenv.NATSConfig(t, testenv.MachineNATS)
	r = runCLI(t, env{}.withNATS(natsCfg), "events", "tail")
	if r.code != exitFailure || !strings.Contains(r.stderr, fmt.Sprintf("JetStream stream %q not found", natsCfg.Stream)) {
		t.Fatal(r)
	}
}

func waitForConsumers(t *testing.T, bus *natsbus.Bus, stream string, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s, err := bus.JetStream().Stream(context.Background(), stream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Consumers >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream %s has %d consumers, want %d", stream, info.State.Consumers, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitForStreamMsgs(t *testing.T, bus *natsbus.Bus, stream string, n uint64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s, err := bus.JetStream().Stream(context.Background(), stream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream %s holds %d messages, want %d", stream, info.State.Msgs, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestHealth(t *testing.T) {
	t.Parallel()
	status := http.StatusOK
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		code := status
		mu.Unlock()
		switch r.URL.Path {
		case "/readyz":
			w.WriteHeader(code)
			fmt.Fprintf(w, `{"status":%q}`, http.StatusText(code))
		case "/slow":
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	setStatus := func(c int) { mu.Lock(); status = c; mu.Unlock() }

	r := runCLI(t, env{}, "health", srv.URL+"/readyz")
	if r.code != exitOK || r.stdout != `{"status":"OK"}`+"\n" || r.stderr != "" {
		t.Fatal(r)
	}
	// The default URL is /readyz on AUTHD_ADDR, reached on loopback.
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	if r = runCLI(t, env{"AUTHD_ADDR": ":" + port}, "health"); r.code != exitOK {
		t.Fatal(r)
	}

	setStatus(http.StatusServiceUnavailable)
	r = runCLI(t, env{"AUTHD_ADDR": "0.0.0.0:" + port}, "health")
	if r.code != exitFailure || r.stdout != `{"status":"Service Unavailable"}`+"\n" ||
		r.stderr != "authctl: health: GET http://127.0.0.1:"+port+"/readyz: 503 Service Unavailable\n" {
		t.Fatal(r)
	}

	start := time.Now()
	r = runCLI(t, env{}, "health", srv.URL+"/slow")
	if r.code != exitFailure || !strings.Contains(r.stderr, "no answer within 3s") || time.Since(start) > 6*time.Second {
		t.Fatal(r)
	}

	srv.Close()
	if r = runCLI(t, env{}, "health", srv.URL+"/readyz"); r.code != exitFailure || !strings.Contains(r.stderr, "connection refused") {
		t.Fatal(r)
	}
}

func TestReadyzURL(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]string{
		":8080":          "http://127.0.0.1:8080/readyz",
		"0.0.0.0:9000":   "http://127.0.0.1:9000/readyz",
		"[::]:8080":      "http://127.0.0.1:8080/readyz",
		"127.0.0.1:8081": "http://127.0.0.1:8081/readyz",
		"[::1]:8080":     "http://[::1]:8080/readyz",
		"localhost:8080": "http://localhost:8080/readyz",
	} {
		if got := readyzURL(addr); got != want {
			t.Errorf("readyzURL(%q) = %q, want %q", addr, got, want)
		}
	}
}

func TestWithAppName(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"postgres://u@h/db":                              "postgres://u@h/db?application_name=authctl",
		"postgres://u@h/db?sslmode=disable":              "postgres://u@h/db?sslmode=disable&application_name=authctl",
		"postgresql://u:p%40ss@h/db?application_name=me": "postgresql://u:p%40ss@h/db?application_name=me",
		"host=h dbname=db":                               "host=h dbname=db",
	} {
		if got := withAppName(in); got != want {
			t.Errorf("withAppName(%q) = %q, want %q", in, got, want)
		}
	}
}
