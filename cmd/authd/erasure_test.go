package main

// Erasure end to end (API.md: "Erasure", issue 17): real HTTP, Postgres,
// NATS and Mailpit. A user who used every feature deletes the account;
// then no table (a pg_dump of the database), no message of the stream and
// no projection rebuilt afterwards holds anything of the person.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/softauthn"
	"github.com/authd/authd/internal/testenv"
	"github.com/authd/authd/projections"
)

// client is where a request comes from, as authd is told it through a
// trusted proxy.
type client struct{ ip, userAgent string }

// as sends a request of c with token (none when empty).
func (in *instance) as(t *testing.T, c client, method, path, token string, body any) response {
	t.Helper()
	h := hdr("X-Forwarded-For", c.ip, "User-Agent", c.userAgent)
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	var raw []byte
	if body != nil {
		raw = jsonBody(t, body)
	}
	return in.rawCall(t, method, path, h, raw)
}

// traces lists which of needles the text holds.
func traces(text string, needles []string) []string {
	var found []string
	for _, n := range needles {
		if strings.Contains(strings.ToLower(text), strings.ToLower(n)) {
			found = append(found, n)
		}
	}
	return found
}

// dumpTraces is what a pg_dump of the cluster's database (data only, every
// table) holds of needles.
func (c *cluster) dumpTraces(t *testing.T, needles []string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "pg_dump", "--data-only", "--dbname", c.env["DATABASE_URL"]).Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			t.Fatalf("pg_dump: %v: %s", err, exit.Stderr)
		}
		t.Fatalf("pg_dump (apt-get install postgresql-client): %v", err)
	}
	return traces(string(out), needles)
}

// streamTraces is what the messages of the cluster's stream hold of needles,
// and the types of the messages that hold them.
func (c *cluster) streamTraces(t *testing.T, stream jetstream.Stream, needles []string) (found, types []string, deleted bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && seq > 0; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // deleted: what an erasure does
		}
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		var headers strings.Builder
		for k, vs := range m.Header {
			fmt.Fprintf(&headers, "%s: %s\n", k, strings.Join(vs, ","))
		}
		if f := traces(headers.String()+string(m.Data), needles); len(f) > 0 {
			found = append(found, f...)
			e, _ := eventstore.FromMessage(m.Header, m.Data)
			types = append(types, e.Type)
		}
		if strings.HasSuffix(m.Subject, ".AccountDeleted") {
			deleted = true
		}
	}
	return found, types, deleted
}

// rebuildTraces rebuilds every projection from the log and says what their
// read models then hold of needles.
func (c *cluster) rebuildTraces(t *testing.T, needles []string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pool := c.dbPool(t)
	store := eventstore.NewStore(pool, c.sealer(t), nil)
	var found []string
	for _, p := range projections.All() {
		if _, err := projections.Rebuild(ctx, pool, store, p, 0, nil); err != nil {
			t.Fatalf("rebuild %s: %v", p.Name(), err)
		}
		for _, table := range p.Tables() {
			var rows string
			if err := pool.QueryRow(ctx, `SELECT coalesce(string_agg(r::text, E'\n'), '') FROM `+table+` r`).Scan(&rows); err != nil {
				t.Fatalf("read %s: %v", table, err)
			}
			for _, f := range traces(rows, needles) {
				found = append(found, table+": "+f)
			}
		}
	}
	return found
}

// TestErasureLeavesNoTrace: a user signs up, names themselves, turns two-
// factor on and signs in with a backup code, adds a passkey and signs in
// with it, signs in from two networks with two user agents, changes their
// name and their address; then deletes the account. Within API.md's 10 s,
// a dump of every table, every message of the stream and a fresh rebuild
// of every projection hold none of the addresses, names, networks and user
// agents; AccountDeleted (ids only) is in the stream; the farewell went to
// the last address once; every old token answers 401; the address signs up
// again.
func TestErasureLeavesNoTrace(t *testing.T) {
	t.Parallel()
	c := newCluster(t, map[string]string{"AUTHD_NOTICES": "on", "AUTHD_TRUSTED_PROXIES": "127.0.0.1/32"})
	a, b := c.start(t), c.start(t)
	run := strings.ToLower(uuid.NewString()[:8])
	first, second := "zelda-"+run+"@example.com", "zelda.moved-"+run+"@example.com"
	name, renamed, pw := "Zelda Quixote "+run, "Zelda Q. Renamed "+run, "correct horse battery"
	home := client{ip: "203.0.113.97", userAgent: "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0 Zq" + run}
	phone := client{ip: "198.51.100.203", userAgent: "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148 Zp" + run}
	needles := []string{first, second, name, renamed, "203.0.113.", "198.51.100.", "Zq" + run, "Zp" + run}

	// Sign up from home, with a name.
	seen := len(mailsTo(t, c, first))
	if r := a.as(t, home, "POST", api+"/register", "", map[string]any{"email": first, "password": pw, "name": name}); r.status != 202 {
		t.Fatalf("register = %d %s", r.status, r.raw)
	}
	signup := a.as(t, home, "POST", api+"/register/verify", "", map[string]any{"email": first, "code": c.nextCode(t, first, seen)})
	if signup.status != 201 {
		t.Fatalf("verify = %d %s", signup.status, signup.raw)
	}
	tokens := []response{signup}
	access := signup.str("access_token")

	// Two-factor with backup codes, and a sign-in from the phone with one.
	secret := a.as(t, home, "POST", api+"/2fa/setup", access, nil).str("secret")
	app := &testenv.TOTPApp{Secret: secret}
	en := a.as(t, home, "POST", api+"/2fa/enable", access, map[string]any{"code": app.Next(t)})
	backup := tfBackupCodes(t, en)
	challenge := b.as(t, phone, "POST", api+"/login", "", map[string]any{"email": first, "password": pw})
	fromPhone := b.as(t, phone, "POST", api+"/2fa/verify", "", map[string]any{"challenge_token": tfChallenge(t, challenge), "code": backup[0]})
	if fromPhone.status != 200 {
		t.Fatalf("a sign-in with a backup code = %d %s", fromPhone.status, fromPhone.raw)
	}
	tokens = append(tokens, fromPhone)

	// A passkey, and a sign-in with it from the phone.
	authenticator := &softauthn.Authenticator{AAGUID: uuid.New()}
	reg, _ := pkRegister(t, a, access, authenticator, "Zelda's key "+run)
	if reg.status != 201 {
		t.Fatalf("passkey registration = %d %s", reg.status, reg.raw)
	}
	needles = append(needles, "Zelda's key "+run)
	assertion, err := authenticator.Login(pkLoginOptions(t, b), pkClient, nil)
	if err != nil {
		t.Fatal(err)
	}
	withPasskey := b.as(t, phone, "POST", api+"/passkey/login/verify", "", map[string]any{"credential": assertion})
	if withPasskey.status != 200 {
		t.Fatalf("a passkey sign-in = %d %s", withPasskey.status, withPasskey.raw)
	}
	tokens = append(tokens, withPasskey)

	// A new name, and a new address.
	a.as(t, home, "PATCH", api+"/me", access, map[string]any{"name": renamed})
	seen = len(mailsTo(t, c, second))
	if r := a.as(t, home, "POST", api+"/me/email", access, map[string]any{"new_email": second}); r.status != 202 {
		t.Fatalf("email change = %d %s", r.status, r.raw)
	}
	if r := a.as(t, home, "POST", api+"/me/email/verify", access, map[string]any{"code": c.nextCode(t, second, seen)}); r.status != 200 || r.str("email") != second {
		t.Fatalf("email change verify = %d %s", r.status, r.raw)
	}
	// A refresh from home moves the session's address.
	refreshed := a.as(t, home, "POST", api+"/refresh", "", map[string]any{"refresh_token": signup.str("refresh_token")})
	if refreshed.status != 200 {
		t.Fatalf("refresh = %d %s", refreshed.status, refreshed.raw)
	}
	tokens = append(tokens, refreshed)
	access = refreshed.str("access_token")
	if events, _ := activityOf(t, a, access, ""); len(events) < 5 {
		t.Fatalf("activity %v; want the account's history", events)
	}
	c.noticesSettled(t)
	pool := c.dbPool(t)
	if found := c.dumpTraces(t, needles); len(found) == 0 {
		t.Fatal("the dump holds nothing of the person before the deletion: the search finds nothing")
	}

	if r := a.as(t, home, "DELETE", api+"/me", access, nil); r.status != 204 {
		t.Fatalf("DELETE /me = %d %s", r.status, r.raw)
	}
	deletedAt := time.Now()
	for _, tok := range tokens {
		requireEnded(t, a, b, tok, "a session of the deleted account")
	}

	// Within 10 s of the answer: nothing left, by polling for it.
	stream := c.stream(t)
	var dump, msgs, rebuilt, types []string
	var terminal bool
	deadline := deletedAt.Add(10 * time.Second)
	for {
		dump = c.dumpTraces(t, needles)
		msgs, types, terminal = c.streamTraces(t, stream, needles)
		rebuilt = c.rebuildTraces(t, needles)
		if len(dump)+len(msgs)+len(rebuilt) == 0 && terminal {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10 s after the deletion: the dump holds %q; the stream holds %q in %v (AccountDeleted there: %v); the rebuilt read models hold %q",
				dump, msgs, types, terminal, rebuilt)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("erased within %v of the answer", time.Since(deletedAt).Round(time.Millisecond))
	var held int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM unique_keys WHERE owner = $1`, signup.str("user", "id")).Scan(&held); err != nil {
		t.Fatal(err)
	}
	if held != 0 {
		t.Errorf("the deleted account still holds %d unique keys (its address, passkey)", held)
	}

	// The farewell goes to the last address, once, and its copy of the
	// address goes with it.
	testenv.Eventually(t, 30*time.Second, func() bool { return noticesTo(t, c, second)["AccountDeleted"] == 1 })
	testenv.Eventually(t, 10*time.Second, func() bool {
		var kept int
		if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM farewells`).Scan(&kept); err != nil {
			t.Fatal(err)
		}
		return kept == 0
	})
	c.noticesSettled(t)
	if n := noticesTo(t, c, second)["AccountDeleted"]; n != 1 {
		t.Errorf("%d farewell notices; want one", n)
	}

	// The addresses are free: both sign up again.
	for _, email := range []string{first, second} {
		again := c.signupVerified(t, b, email, "another good passphrase", http.Header{})
		if again.str("user", "id") == signup.str("user", "id") {
			t.Errorf("%s signed up again as the deleted account", email)
		}
	}
}
