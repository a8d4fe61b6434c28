package main

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/authd/authd/testenv"
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
