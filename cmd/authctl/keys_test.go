package main

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/authd/authd/internal/testenv"
	"github.com/authd/authd/internal/tokens"
)

func TestKeysRotateAddsASigningKey(t *testing.T) {
	t.Parallel()
	pool, url := testenv.Database(t)
	e := env{"DATABASE_URL": url, "AUTHD_MASTER_KEY": base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32)))}
	for want := 2; want <= 3; want++ {
		r := runCLI(t, e, "keys", "rotate")
		if r.code != exitOK || !strings.Contains(r.stdout, "new signing key") {
			t.Fatal(r)
		}
		var n int
		if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM signing_keys WHERE retired_at IS NULL`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != want {
			t.Fatalf("%d live signing keys after rotating, want %d", n, want)
		}
	}
	if r := runCLI(t, e, "keys", "rotate", "extra"); r.code != exitUsage {
		t.Fatal(r)
	}
}

// A rotated-in key is published before it signs: it activates once every
// JWKS cached before it (max-age) has expired. --now, for a leaked key,
// activates it at once.
func TestKeysRotatePublishesBeforeSigning(t *testing.T) {
	t.Parallel()
	pool, url := testenv.Database(t)
	e := env{"DATABASE_URL": url, "AUTHD_MASTER_KEY": base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32)))}
	newest := func() (wait time.Duration) {
		t.Helper()
		var secs float64
		if err := pool.QueryRow(context.Background(),
			`SELECT extract(epoch FROM activates_at - created_at) FROM signing_keys ORDER BY seq DESC LIMIT 1`).Scan(&secs); err != nil {
			t.Fatal(err)
		}
		return time.Duration(secs * float64(time.Second))
	}
	r := runCLI(t, e, "keys", "rotate")
	if r.code != exitOK || !strings.Contains(r.stdout, "published; it signs from") {
		t.Fatal(r)
	}
	if wait := newest(); wait != tokens.ActivationDelay || wait < tokens.JWKSMaxAge {
		t.Fatalf("a rotated key activates %v after it is created, want %v (more than the JWKS max-age)", wait, tokens.ActivationDelay)
	}
	r = runCLI(t, e, "keys", "rotate", "--now")
	if r.code != exitOK || !strings.Contains(r.stdout, "signs now") {
		t.Fatal(r)
	}
	if wait := newest(); wait != 0 {
		t.Fatalf("a key rotated --now activates %v after it is created, want at once", wait)
	}
}
