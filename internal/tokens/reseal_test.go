package tokens

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/authd/authd/internal/seal"
	"github.com/authd/authd/internal/testenv"
)

// After a rotation of the master key, Reseal moves every signing key (a
// retired one too) and every server secret to the new key: a Keyring
// opened with the new key alone signs and verifies with the same keys and
// makes the same refresh tokens, and a second run has nothing to do.
func TestResealMovesSigningKeysAndSecretsToTheFirstKey(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	ctx := context.Background()
	keys := testenv.Rotation(t)
	before, rotated, newKey := keys.Before, keys.Rotated, keys.New
	clock := newClock()
	k := openKeyring(t, pool, before, clock.Now)
	if _, err := k.RotateNow(ctx); err != nil {
		t.Fatal(err)
	}
	clock.Advance(RetireAfter + time.Minute)
	if _, err := k.RotateNow(ctx); err != nil {
		t.Fatal(err)
	}
	if retired, err := k.Retire(ctx, RetireAfter); err != nil || len(retired) != 1 {
		t.Fatalf("retired %v (%v), want the first key", retired, err)
	}
	secret, err := ServerSecret(ctx, pool, before, "test_secret", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	session := uuid.New()
	now := clock.Now()
	token, err := k.Issue(Claims{UserID: uuid.New(), TenantID: uuid.New(), SessionID: session, IssuedAt: now, ExpiresAt: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}

	reports, err := Reseal(ctx, pool, rotated, seal.ResealOptions{Batch: 1})
	if err != nil {
		t.Fatal(err)
	}
	if r := testenv.ResealReport(t, reports, "signing_keys"); r.Resealed != 3 || r.Left != 0 || r.Failed != 0 {
		t.Errorf("signing_keys: %+v, want 3 re-sealed", r)
	}
	if r := testenv.ResealReport(t, reports, "token_secrets"); r.Resealed != 2 || r.Left != 0 || r.Failed != 0 {
		t.Errorf("token_secrets: %+v, want 2 re-sealed", r)
	}
	var stale int
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM signing_keys WHERE private_kid <> $1) + (SELECT count(*) FROM token_secrets WHERE seal_kid <> $1)`,
		seal.KeyID(newKey)).Scan(&stale); err != nil || stale != 0 {
		t.Fatalf("%d rows not under the new key (%v)", stale, err)
	}

	newOnly, err := seal.New(newKey)
	if err != nil {
		t.Fatal(err)
	}
	after := openKeyring(t, pool, newOnly, clock.Now)
	if c, err := after.Verify(ctx, token); err != nil || c.SessionID != session {
		t.Fatalf("a token signed before, verified with the new key alone: %+v (%v)", c, err)
	}
	if after.SigningKID() != k.SigningKID() {
		t.Fatalf("signs with %s, before with %s", after.SigningKID(), k.SigningKID())
	}
	if after.RefreshToken(session, 3) != k.RefreshToken(session, 3) {
		t.Fatal("the refresh secret changed")
	}
	if again, err := ServerSecret(ctx, pool, newOnly, "test_secret", time.Now()); err != nil || !bytes.Equal(again, secret) {
		t.Fatalf("the server secret with the new key alone: %v", err)
	}

	again, err := Reseal(ctx, pool, rotated, seal.ResealOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range again {
		if r.Resealed != 0 || r.Left != 0 || r.Changed != 0 {
			t.Errorf("second run: %+v, want nothing to do", r)
		}
	}
}

// A row changed between Reseal's read and its update (sealed anew under
// the old key, as a second process would) is not overwritten, and is
// reported left.
func TestResealLeavesASigningKeyChangedMeanwhile(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	ctx := context.Background()
	keys := testenv.Rotation(t)
	before, rotated, oldKey := keys.Before, keys.Rotated, keys.Old
	k := openKeyring(t, pool, before, time.Now)
	kid := k.SigningKID()
	var box []byte
	if err := pool.QueryRow(ctx, `SELECT private_sealed FROM signing_keys`).Scan(&box); err != nil {
		t.Fatal(err)
	}
	seed, err := before.Open(seal.KeyID(oldKey), box, keyAAD(kid))
	if err != nil {
		t.Fatal(err)
	}
	sealKID, other, err := before.Seal(seed, keyAAD(kid))
	if err != nil {
		t.Fatal(err)
	}
	table := signingKeysTable(pool)
	swap := table.Swap
	table.Swap = func(ctx context.Context, rows []seal.ResealRow[string]) ([]string, error) {
		if _, err := pool.Exec(ctx, `UPDATE signing_keys SET private_kid = $1, private_sealed = $2`, sealKID, other); err != nil {
			t.Fatal(err)
		}
		return swap(ctx, rows)
	}
	r, err := seal.Reseal(ctx, rotated, table, seal.ResealOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Resealed != 0 || r.Changed != 1 || r.Left != 1 {
		t.Errorf("report %+v, want 1 changed and left, none re-sealed", r)
	}
	var now []byte
	if err := pool.QueryRow(ctx, `SELECT private_sealed FROM signing_keys`).Scan(&now); err != nil || !bytes.Equal(now, other) {
		t.Fatalf("the concurrent change was overwritten (%v)", err)
	}
}

// A secret that opens under no key held is counted, named and left, and
// the other rows are re-sealed all the same.
func TestResealReportsASecretThatDoesNotOpen(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	ctx := context.Background()
	keys := testenv.Rotation(t)
	before, rotated := keys.Before, keys.Rotated
	openKeyring(t, pool, before, time.Now)
	if _, err := ServerSecret(ctx, pool, testenv.Sealer(t), "lost", time.Now()); err != nil {
		t.Fatal(err)
	}
	reports, err := Reseal(ctx, pool, rotated, seal.ResealOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r := testenv.ResealReport(t, reports, "token_secrets"); r.Resealed != 1 || r.Failed != 1 || r.Left != 1 || len(r.Errors) != 1 {
		t.Errorf("token_secrets: %+v, want 1 re-sealed, 1 failed and left", r)
	}
	if r := testenv.ResealReport(t, reports, "signing_keys"); r.Resealed != 1 || r.Left != 0 {
		t.Errorf("signing_keys: %+v, want 1 re-sealed", r)
	}
}
