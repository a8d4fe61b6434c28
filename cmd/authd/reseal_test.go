package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/authd/authd/internal/testenv"
)

// authctl builds authctl from this tree and returns a function that runs
// it with c's environment and master key, returning its report and exit
// status.
func authctl(t *testing.T, c *cluster) func(key string, args ...string) (report map[string]any, code int) {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "authctl")
	if out, err := exec.Command(goTool, "build", "-o", bin, "github.com/authd/authd/cmd/authctl").CombinedOutput(); err != nil {
		t.Fatalf("build authctl: %v\n%s", err, out)
	}
	return func(key string, args ...string) (map[string]any, int) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = os.Environ()
		for k, v := range c.env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		cmd.Env = append(cmd.Env, "AUTHD_MASTER_KEY="+key)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		code := 0
		if err := cmd.Run(); err != nil {
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				t.Fatal(err)
			}
			code = exit.ExitCode()
		}
		var report map[string]any
		if err := json.Unmarshal(stdout.Bytes(), &report); err != nil {
			t.Fatalf("authctl %v: exit %d, report %v\nstdout:\n%s\nstderr:\n%s", args, code, err, stdout.String(), stderr.String())
		}
		return report, code
	}
}

// tableCounts is a reseal report's field (resealed, left) by table.
func tableCounts(t *testing.T, report map[string]any, field string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	tables, _ := report["tables"].([]any)
	for _, x := range tables {
		m, _ := x.(map[string]any)
		name, _ := m["table"].(string)
		out[name], _ = m[field].(float64)
	}
	return out
}

// The README's rotation to its end: an account made by authd under key A
// (2FA on, so its events carry secrets, and a session), keys reseal with
// "B,A" while that authd runs, and then an authd holding only B works for
// it: the password and the 2FA code sign in (the events open), GET /me
// answers, the session made before refreshes. A second reseal has nothing
// to do. Without the re-seal, an authd on B alone does not start (it
// cannot open the refresh secret).
func TestResealingLetsTheOldMasterKeyGo(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	ctl := authctl(t, c)
	keyA, keyB := c.env["AUTHD_MASTER_KEY"], base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{11}, 32))
	before := c.start(t)
	const email, pw = "reseal@example.com", "correct horse battery staple"
	access := c.signupVerified(t, before, email, pw, nil).str("access_token")
	app := &testenv.TOTPApp{Secret: before.must(t, 200, "POST", api+"/2fa/setup", access, nil).str("secret")}
	tfBackupCodes(t, before.must(t, 200, "POST", api+"/2fa/enable", access, map[string]any{"code": app.Next(t)}))
	challenge := tfChallenge(t, before.must(t, 200, "POST", api+"/login", "", map[string]any{"email": email, "password": pw}))
	session := before.must(t, 200, "POST", api+"/2fa/verify", "", map[string]any{"challenge_token": challenge, "code": app.Next(t)})
	checkTokens(t, session, email)

	report, code := ctl(keyB+","+keyA, "keys", "reseal")
	resealed := tableCounts(t, report, "resealed")
	if code != 0 || report["left"] != float64(0) || resealed["user_keys"] != 1 || resealed["events"] == 0 ||
		resealed["signing_keys"] != 1 || resealed["token_secrets"] == 0 {
		t.Fatalf("keys reseal with B,A: exit %d, %v", code, report)
	}

	c.env["AUTHD_MASTER_KEY"] = keyB
	after := c.start(t)
	challenge = tfChallenge(t, after.must(t, 200, "POST", api+"/login", "", map[string]any{"email": email, "password": pw}))
	tokens := after.must(t, 200, "POST", api+"/2fa/verify", "", map[string]any{"challenge_token": challenge, "code": app.Next(t)})
	checkTokens(t, tokens, email)
	if me := after.must(t, 200, "GET", api+"/me", tokens.str("access_token"), nil); me.str("email") != email {
		t.Fatalf("/me: %s", me.raw)
	}
	checkTokens(t, after.must(t, 200, "POST", api+"/refresh", "", map[string]any{"refresh_token": session.str("refresh_token")}), email)

	report, code = ctl(keyB, "keys", "reseal")
	if code != 0 || report["left"] != float64(0) {
		t.Fatalf("second keys reseal: exit %d, %v", code, report)
	}
	for table, n := range tableCounts(t, report, "resealed") {
		if n != 0 {
			t.Errorf("second keys reseal re-sealed %v rows of %s", n, table)
		}
	}
}
