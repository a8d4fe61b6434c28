package main

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/authd/authd/internal/softauthn"
	"github.com/authd/authd/internal/testenv"
)

// readsCluster is a cluster on a NATS of the test's own whose writes wait
// little for their projections, so that a write answers while its read
// models are still behind once that NATS is killed.
func readsCluster(t *testing.T) (*cluster, *instance, func()) {
	t.Helper()
	c, srv := natsCluster(t, map[string]string{"AUTHD_READ_YOUR_WRITES_TIMEOUT": "100ms"})
	return c, c.start(t), srv.Kill
}

// projected waits until the users read model shows email with the given
// email_verified: the projections have caught up with what came before.
func projected(t *testing.T, c *cluster, email string, verified bool) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.env["DATABASE_URL"])
	if err != nil {
		t.Fatalf("connect to the test database: %v", err)
	}
	defer conn.Close(ctx)
	testenv.Eventually(t, 15*time.Second, func() bool {
		var v bool
		err := conn.QueryRow(ctx, `SELECT email_verified FROM users WHERE email = $1`, email).Scan(&v)
		return err == nil && v == verified
	})
}

// A verification and GET /me right after it show the email as verified,
// though the users read model, behind (NATS down), still has the account as
// it was before.
func TestMeWhileTheReadModelLagsShowsTheVerification(t *testing.T) {
	t.Parallel()
	c, in, killNATS := readsCluster(t)

	// Projected unverified before NATS goes, verified after.
	const pending = "pending-then-verified@example.com"
	seen := len(mailsTo(t, c, pending))
	in.must(t, 202, "POST", api+"/register", "", map[string]any{"email": pending, "password": "correct horse battery", "name": "Pending"})
	projected(t, c, pending, false)
	killNATS()
	v := in.must(t, 201, "POST", api+"/register/verify", "", map[string]any{"email": pending, "code": c.nextCode(t, pending, seen)})
	if v.body["user"].(map[string]any)["email_verified"] != true {
		t.Fatalf("verify answered %s; want the user as verified", v.raw)
	}
	me := in.call(t, "GET", api+"/me", v.str("access_token"), nil)
	if me.status != 200 || me.body["email_verified"] != true || me.str("email") != pending {
		t.Fatalf("GET /me right after verify = %d %s; want 200 with email_verified true", me.status, me.raw)
	}
}

// GET /me with the tokens a sign-up just answered shows the new account,
// which the users read model (NATS down) has never seen, rather than a 401
// that signs the client out.
func TestMeWhileTheReadModelLagsShowsTheNewAccount(t *testing.T) {
	t.Parallel()
	c, in, killNATS := readsCluster(t)
	killNATS()

	const fresh = "signed-up-while-nats-down@example.com"
	s := c.signupVerified(t, in, fresh, "correct horse battery", nil)
	me := in.call(t, "GET", api+"/me", s.str("access_token"), nil)
	if me.status != 200 || me.str("id") != s.str("user", "id") || me.body["email_verified"] != true {
		t.Fatalf("GET /me with a token just issued = %d %s; want 200 and the new account", me.status, me.raw)
	}
	if me.str("tenant", "id") != s.str("user", "tenant", "id") || me.str("tenant", "name") == "" {
		t.Fatalf("GET /me = %s; want the tenant of %s", me.raw, s.raw)
	}
}

// GET /sessions right after a sign-in and a revocation lists what the log
// has, though the sessions read model is behind (NATS down): the new session
// is listed, the revoked one is not.
func TestSessionsWhileTheReadModelLagsListTheWrites(t *testing.T) {
	t.Parallel()
	c, in, killNATS := readsCluster(t)

	const email, pw = "sessions-lag@example.com", "correct horse battery"
	first := c.signupVerified(t, in, email, pw, nil)
	second := in.must(t, 200, "POST", api+"/login", "", map[string]any{"email": email, "password": pw})
	testenv.Eventually(t, 15*time.Second, func() bool {
		l := in.must(t, 200, "GET", api+"/sessions", second.str("access_token"), nil)
		return len(l.body["sessions"].([]any)) == 2
	})
	killNATS()

	third := in.must(t, 200, "POST", api+"/login", "", map[string]any{"email": email, "password": pw})
	in.must(t, 204, "DELETE", api+"/sessions/"+first.str("session_id"), third.str("access_token"), nil)

	l := in.must(t, 200, "GET", api+"/sessions", third.str("access_token"), nil)
	var got []string
	current := ""
	for _, s := range l.body["sessions"].([]any) {
		m := s.(map[string]any)
		got = append(got, m["id"].(string))
		if m["current"] == true {
			current = m["id"].(string)
			if m["device"] != "Chrome on macOS" || m["ip"] != "127.0.0.1" {
				t.Errorf("the new session lists %v; want its device and address", m)
			}
		}
	}
	// Newest first.
	want := []string{third.str("session_id"), second.str("session_id")}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] || current != want[0] {
		t.Fatalf("GET /sessions = %s; want %v with the first current", l.raw, want)
	}
}

// Turning two-factor on while the twofactor read model is behind (NATS
// down): GET /2fa/status and /me say it is on, with the backup codes just
// issued, rather than off.
func TestTwoFactorStatusWhileTheReadModelLagsShowsTheEnable(t *testing.T) {
	t.Parallel()
	c, in, killNATS := readsCluster(t)
	const email = "tf-lag@example.com"
	s := c.signupVerified(t, in, email, "correct horse battery", nil)
	access := s.str("access_token")
	projected(t, c, email, true)
	killNATS()

	setup := in.must(t, 200, "POST", api+"/2fa/setup", access, nil)
	k := &testenv.TOTPApp{Secret: setup.str("secret")}
	enabled := in.must(t, 200, "POST", api+"/2fa/enable", access, map[string]any{"code": k.Next(t)})
	tfStatus(t, in, access, true, len(tfBackupCodes(t, enabled)))
}

// A passkey registered while the passkeys read model is behind (NATS down)
// is listed at once, as its registration answered.
func TestPasskeyListWhileTheReadModelLagsShowsTheNewPasskey(t *testing.T) {
	t.Parallel()
	c, in, killNATS := readsCluster(t)
	const email = "pk-lag@example.com"
	s := c.signupVerified(t, in, email, "correct horse battery", nil)
	access := s.str("access_token")
	projected(t, c, email, true)
	killNATS()

	r, _ := pkRegister(t, in, access, &softauthn.Authenticator{AAGUID: uuid.New()}, "Laptop")
	if r.status != 201 && r.status != 200 {
		t.Fatalf("register a passkey = %d %s", r.status, r.raw)
	}
	got := pkList(t, in, access)
	if len(got) != 1 || got[0]["name"] != "Laptop" || got[0]["id"] != r.str("id") {
		t.Fatalf("GET /passkey/list = %v after registering %s; want that passkey", got, r.raw)
	}
}

// "Sign out everywhere else" while the sessions read model is behind (NATS
// down) also ends the session started after it fell behind: the list it
// revokes is the log's, not the read model's.
func TestRevokeOtherSessionsWhileTheReadModelLagsEndsTheNewOne(t *testing.T) {
	t.Parallel()
	c, in, killNATS := readsCluster(t)
	const email, pw = "revoke-others-lag@example.com", "correct horse battery"
	first := c.signupVerified(t, in, email, pw, nil)
	projected(t, c, email, true)
	killNATS()

	late := in.must(t, 200, "POST", api+"/login", "", map[string]any{"email": email, "password": pw})
	r := in.must(t, 200, "DELETE", api+"/sessions", first.str("access_token"), nil)
	if r.body["revoked"] != float64(1) {
		t.Fatalf("DELETE /sessions = %s; want the session started meanwhile revoked", r.raw)
	}
	if again := in.call(t, "POST", api+"/refresh", "", map[string]any{"refresh_token": late.str("refresh_token")}); again.status != 401 {
		t.Fatalf("refresh of a session signed out everywhere else = %d %s; want 401", again.status, again.raw)
	}
}
