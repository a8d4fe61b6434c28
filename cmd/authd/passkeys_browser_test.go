package main

// The real-browser passkey test: Debian's headless Chromium, driven over the
// DevTools protocol (internal/cdp), with a DevTools virtual authenticator
// (CTAP2, internal transport, resident keys, user verification), on the demo
// page authd serves. The page registers a passkey with
// navigator.credentials.create and signs in with navigator.credentials.get.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/authd/authd/internal/cdp"
	"github.com/authd/authd/internal/testenv"
)

// chromiumPath is Debian's chromium (apt-get install -y chromium; .ci/run
// installs it).
const chromiumPath = "/usr/bin/chromium"

func TestPasskeyInRealBrowser(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("the real-browser passkey test needs Chromium at %s (%v): install it with `apt-get update && apt-get install -y chromium` (.ci/run does)", chromiumPath, err)
	}

	// authd on a port known in advance, so that the page's origin is one of
	// AUTHD_WEBAUTHN_ORIGINS. localhost, not 127.0.0.1: WebAuthn needs a
	// secure context and an RP id that is a domain.
	port := testenv.FreePort(t)
	origin := fmt.Sprintf("http://localhost:%d", port)
	c := newCluster(t, map[string]string{
		"AUTHD_ADDR":             fmt.Sprintf("127.0.0.1:%d", port),
		"AUTHD_WEBAUTHN_RP_ID":   "localhost",
		"AUTHD_WEBAUTHN_ORIGINS": origin,
	})
	in := pkStartAt(t, c, fmt.Sprintf("http://127.0.0.1:%d", port))
	const email = "grace@example.com"
	signup := c.signupVerified(t, in, email, "correct horse battery", nil)
	token, userID := signup.str("access_token"), signup.str("user", "id")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	browser, err := cdp.Launch(chromiumPath)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("chromium output:\n%s", clip(browser.Output(), 4000))
		}
		browser.Close()
	}()
	var consoleMu sync.Mutex
	var console []string
	browser.OnEvent(func(e cdp.Event) {
		if e.Method == "Runtime.consoleAPICalled" || e.Method == "Runtime.exceptionThrown" {
			consoleMu.Lock()
			console = append(console, e.Method+" "+clip(string(e.Params), 600))
			consoleMu.Unlock()
		}
	})
	defer func() {
		if t.Failed() {
			consoleMu.Lock()
			t.Logf("page console:\n%s", strings.Join(console, "\n"))
			consoleMu.Unlock()
		}
	}()

	page, err := browser.NewPage(ctx)
	if err != nil {
		t.Fatalf("open a page: %v", err)
	}
	must := func(method string, params, result any) {
		t.Helper()
		if err := browser.Call(ctx, page, method, params, result); err != nil {
			t.Fatal(err)
		}
	}
	must("Runtime.enable", nil, nil)
	must("WebAuthn.enable", map[string]any{"enableUI": false}, nil)
	var va struct {
		AuthenticatorID string `json:"authenticatorId"`
	}
	must("WebAuthn.addVirtualAuthenticator", map[string]any{"options": map[string]any{
		"protocol": "ctap2", "transport": "internal",
		"hasResidentKey": true, "hasUserVerification": true, "isUserVerified": true,
		"automaticPresenceSimulation": true,
	}}, &va)

	// The page takes the token from the fragment, registers a passkey named
	// "Chromium", then signs in with it.
	url := origin + "/api/v1/auth/passkey/demo#token=" + token + "&name=Chromium&autorun=1"
	must("Page.navigate", map[string]any{"url": url}, nil)
	var state string
	for state != "done" && state != "failed" {
		if ctx.Err() != nil {
			t.Fatalf("the page did not finish within 30s (state %q)", state)
		}
		time.Sleep(100 * time.Millisecond)
		_ = browser.Evaluate(ctx, page, `document.body ? document.body.dataset.state : ""`, &state)
	}
	var status, resultText string
	if err := browser.Evaluate(ctx, page, `document.getElementById("status").textContent`, &status); err != nil {
		t.Fatal(err)
	}
	if err := browser.Evaluate(ctx, page, `document.getElementById("result").textContent`, &resultText); err != nil {
		t.Fatal(err)
	}
	if shot := os.Getenv("AUTHD_BROWSER_SCREENSHOT"); shot != "" {
		var png struct{ Data string }
		if err := browser.Call(ctx, page, "Page.captureScreenshot", map[string]any{"format": "png"}, &png); err == nil {
			raw, _ := base64.StdEncoding.DecodeString(png.Data)
			_ = os.WriteFile(shot, raw, 0o644)
		}
	}
	if state != "done" {
		t.Fatalf("the page failed: %s\n%s", status, resultText)
	}

	var result struct {
		Registered struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"registered"`
		SignedIn struct {
			User            string   `json:"user"`
			UserID          string   `json:"user_id"`
			SessionID       string   `json:"session_id"`
			AMR             []string `json:"amr"`
			HasRefreshToken bool     `json:"has_refresh_token"`
		} `json:"signed_in"`
	}
	if err := json.Unmarshal([]byte(resultText), &result); err != nil {
		t.Fatalf("page result %q: %v", resultText, err)
	}
	if result.Registered.Name != "Chromium" || result.Registered.ID == "" {
		t.Fatalf("registered: %s", resultText)
	}
	s := result.SignedIn
	if s.User != email || s.UserID != userID || s.SessionID == "" || !s.HasRefreshToken || !slices.Contains(s.AMR, "user") {
		t.Fatalf("signed in: %s", resultText)
	}
	// The browser's virtual authenticator keeps device-bound credentials.
	if !slices.Equal(s.AMR, []string{"hwk", "user"}) {
		t.Fatalf("amr of Chromium's virtual authenticator: %v", s.AMR)
	}

	// The authenticator holds one discoverable credential whose user handle
	// is the user id, and it has signed once.
	var creds struct {
		Credentials []struct {
			CredentialID         string `json:"credentialId"`
			IsResidentCredential bool   `json:"isResidentCredential"`
			RPID                 string `json:"rpId"`
			UserHandle           string `json:"userHandle"`
			SignCount            int    `json:"signCount"`
		} `json:"credentials"`
	}
	must("WebAuthn.getCredentials", map[string]any{"authenticatorId": va.AuthenticatorID}, &creds)
	uid := uuid.MustParse(userID)
	if len(creds.Credentials) != 1 {
		t.Fatalf("virtual authenticator credentials: %+v", creds)
	}
	cr := creds.Credentials[0]
	if !cr.IsResidentCredential || cr.RPID != "localhost" || cr.UserHandle != base64.StdEncoding.EncodeToString(uid[:]) || cr.SignCount < 1 {
		t.Fatalf("virtual credential: %+v", cr)
	}

	// authd agrees: the passkey is listed, and was used.
	testenv.Eventually(t, 5*time.Second, func() bool {
		list := pkList(t, in, token)
		return len(list) == 1 && list[0]["id"] == result.Registered.ID && list[0]["name"] == "Chromium" && list[0]["last_used_at"] != nil
	})
	if me := in.must(t, 200, "GET", api+"/sessions", token, nil); !strings.Contains(me.raw, s.SessionID) {
		t.Fatalf("the passkey session is not among the user's sessions: %s", me.raw)
	}
}

// pkStartAt starts an instance of the cluster (whose env names its
// AUTHD_ADDR) and waits until base answers ready.
func pkStartAt(t *testing.T, c *cluster, base string) *instance {
	t.Helper()
	return runAuthd(t, c.env, base, io.Discard)
}
