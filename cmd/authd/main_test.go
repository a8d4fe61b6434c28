package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/authd/authd/internal/testenv"
)

func TestAuthdStartsReadyAndShutsDownCleanly(t *testing.T) {
	t.Parallel()
	_, dbURL := testenv.Database(t)
	port := testenv.FreePort(t)
	env := map[string]string{
		"DATABASE_URL":             dbURL + "&pool_max_conns=40", // pool settings must not reach Postgres
		"AUTHD_ADDR":               fmt.Sprintf("127.0.0.1:%d", port),
		"AUTHD_DATA_DIR":           t.TempDir(),
		"AUTHD_EMBEDDED_NATS_ADDR": fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, func(k string) string { return env[k] }, io.Discard, runtime.GOMAXPROCS(0)) }()

	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
			err = fmt.Errorf("%d %s", resp.StatusCode, body)
		}
		select {
		case err := <-done:
			t.Fatalf("authd exited before it was ready: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("authd not ready: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	for path, want := range map[string]string{
		"/healthz":              `"ok"`,
		"/metrics":              "authd_relay_leader",
		"/api/v1/auth/no-route": `{"error":{"code":"not_found"`,
	} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), want) {
			t.Errorf("GET %s = %d %s; want it to contain %s", path, resp.StatusCode, body, want)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("shutdown: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("authd did not shut down")
	}
}

func TestBadConfigurationNamesEveryBadVariable(t *testing.T) {
	t.Parallel()
	env := map[string]string{"AUTHD_REFRESH_REUSE_GRACE": "soon", "AUTHD_RATE_LIMIT": "maybe"}
	err := run(context.Background(), func(k string) string { return env[k] }, io.Discard, runtime.GOMAXPROCS(0))
	if err == nil || !strings.Contains(err.Error(), "AUTHD_REFRESH_REUSE_GRACE") || !strings.Contains(err.Error(), "AUTHD_RATE_LIMIT") {
		t.Fatalf("run = %v; want an error naming both variables", err)
	}
}
