package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/authd/authd/internal/notices"
	"github.com/authd/authd/internal/seal"
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

// resealOf runs keys reseal and decodes its report.
func resealOf(t *testing.T, e env, args ...string) (resealReport, result) {
	t.Helper()
	r := runCLI(t, e, append([]string{"keys", "reseal"}, args...)...)
	var rep resealReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("report: %v\n%s", err, r)
	}
	return rep, r
}

// counts is each table's count of one field of a report.
func counts(rep resealReport, field func(seal.ResealReport) int64) map[string]int64 {
	out := map[string]int64{}
	for _, t := range rep.Tables {
		out[t.Table] = field(t)
	}
	return out
}

// After the master key A is rotated to "B,A", keys reseal moves everything
// sealed under A to B (a dry run only counts it, and exits 1): then
// authctl with B alone opens the events and the keyring, and a second run
// has nothing to do. With a key that opens nothing, it reports every row
// as failed and exits 1.
func TestKeysResealMovesEverythingToTheFirstKey(t *testing.T) {
	t.Parallel()
	pool, url := testenv.Database(t)
	ctx := context.Background()
	keyA, keyB := testMasterKey, bytes.Repeat([]byte{'b'}, seal.KeySize)
	sealerA, err := seal.New(keyA)
	if err != nil {
		t.Fatal(err)
	}
	user, tenant := uuid.New(), uuid.New()
	register(t, newStore(t, pool), user, tenant, "reseal@example.com")
	if _, err := tokens.Open(ctx, pool, sealerA, tokens.Options{Issuer: "http://authd.test"}); err != nil {
		t.Fatal(err)
	}
	st, err := notices.NewFarewells(sealerA).Keep(uuid.New(), "gone@example.com", "en", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, st.SQL, st.Args...); err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString
	rotated := env{"DATABASE_URL": url, "AUTHD_MASTER_KEY": b64(keyB) + "," + b64(keyA)}
	onlyB := env{"DATABASE_URL": url, "AUTHD_MASTER_KEY": b64(keyB)}
	everyTable := map[string]int64{"user_keys": 1, "events": 1, "signing_keys": 1, "token_secrets": 1, "farewells": 1}
	none := map[string]int64{"user_keys": 0, "events": 0, "signing_keys": 0, "token_secrets": 0, "farewells": 0}
	left := func(r seal.ResealReport) int64 { return r.Left }
	resealed := func(r seal.ResealReport) int64 { return r.Resealed }

	rep, r := resealOf(t, rotated, "--dry-run")
	if r.code != exitFailure || !rep.DryRun || rep.Left != 5 || !maps.Equal(counts(rep, left), everyTable) || !maps.Equal(counts(rep, resealed), none) {
		t.Fatalf("dry run: want every table's row left, exit 1:\n%s", r)
	}
	if r := runCLI(t, onlyB, "events", "ls", "--stream", "user-"+user.String()); r.code == exitOK {
		t.Fatalf("after a dry run, the events opened with B alone:\n%s", r)
	}

	rep, r = resealOf(t, rotated)
	if r.code != exitOK || rep.KeyID != seal.KeyID(keyB) || rep.Left != 0 || !maps.Equal(counts(rep, resealed), everyTable) || !maps.Equal(counts(rep, left), none) {
		t.Fatalf("reseal: want every table's row re-sealed under B, exit 0:\n%s", r)
	}
	if r := runCLI(t, onlyB, "events", "ls", "--stream", "user-"+user.String()); r.code != exitOK || !strings.Contains(r.stdout, "reseal@example.com") {
		t.Fatalf("events ls with B alone:\n%s", r)
	}
	if r := runCLI(t, onlyB, "keys", "rotate"); r.code != exitOK {
		t.Fatalf("keys rotate with B alone:\n%s", r)
	}
	rep, r = resealOf(t, onlyB)
	if r.code != exitOK || rep.Left != 0 || !maps.Equal(counts(rep, resealed), none) {
		t.Fatalf("second reseal: want nothing to do, exit 0:\n%s", r)
	}

	other := env{"DATABASE_URL": url, "AUTHD_MASTER_KEY": b64(bytes.Repeat([]byte{'c'}, seal.KeySize))}
	rep, r = resealOf(t, other)
	failed := func(r seal.ResealReport) int64 { return r.Failed }
	if r.code != exitFailure || !strings.Contains(r.stderr, "open under no key held") ||
		!maps.Equal(counts(rep, failed), map[string]int64{"user_keys": 1, "events": 1, "signing_keys": 2, "token_secrets": 1, "farewells": 1}) {
		t.Fatalf("reseal with a key that opens nothing: want every row failed, exit 1:\n%s", r)
	}
}
