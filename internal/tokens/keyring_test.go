package tokens

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authd/authd/internal/seal"
	"github.com/authd/authd/internal/testenv"
)

const testIssuer = "http://authd.test"

func newClock() *testenv.Clock { return testenv.NewClock(time.Now().Truncate(time.Second)) }

func openKeyring(t testing.TB, pool *pgxpool.Pool, sealer *seal.Sealer, now func() time.Time) *Keyring {
	t.Helper()
	k, err := Open(context.Background(), pool, sealer, Options{Issuer: testIssuer, Now: now})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return k
}

// fixture is one database with one keyring on it.
type fixture struct {
	pool   *pgxpool.Pool
	sealer *seal.Sealer
	clock  *testenv.Clock
	k      *Keyring
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	pool, _ := testenv.Database(t)
	f := &fixture{pool: pool, sealer: testenv.Sealer(t), clock: newClock()}
	f.k = openKeyring(t, pool, f.sealer, f.clock.Now)
	return f
}

func countKeys(t *testing.T, pool *pgxpool.Pool) (all, live int) {
	t.Helper()
	err := pool.QueryRow(context.Background(),
		`SELECT count(*), count(*) FILTER (WHERE retired_at IS NULL) FROM signing_keys`).Scan(&all, &live)
	if err != nil {
		t.Fatal(err)
	}
	return all, live
}

func jwksKIDs(t *testing.T, k *Keyring) []string {
	t.Helper()
	var set struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(k.JWKS(), &set); err != nil {
		t.Fatalf("JWKS is not JSON: %v", err)
	}
	var kids []string
	for _, key := range set.Keys {
		kids = append(kids, key.Kid)
	}
	return kids
}

func TestFirstStartCreatesOneKeyAndSecondOpenReusesIt(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	if all, live := countKeys(t, f.pool); all != 1 || live != 1 {
		t.Fatalf("after first Open: %d keys, %d live; want 1, 1", all, live)
	}
	var secrets int
	if err := f.pool.QueryRow(context.Background(), `SELECT count(*) FROM token_secrets`).Scan(&secrets); err != nil {
		t.Fatal(err)
	}
	if secrets != 1 {
		t.Fatalf("token_secrets rows = %d, want 1", secrets)
	}

	again := openKeyring(t, f.pool, f.sealer, f.clock.Now)
	if all, _ := countKeys(t, f.pool); all != 1 {
		t.Fatalf("second Open made another key: %d keys", all)
	}
	if again.SigningKID() != f.k.SigningKID() {
		t.Fatalf("second Open signs with %s, first with %s", again.SigningKID(), f.k.SigningKID())
	}
	if !bytes.Equal(again.JWKS(), f.k.JWKS()) {
		t.Fatalf("JWKS differ:\n%s\n%s", again.JWKS(), f.k.JWKS())
	}
	sid := uuid.New()
	if again.RefreshToken(sid, 3) != f.k.RefreshToken(sid, 3) {
		t.Fatal("second Open derives different refresh tokens: the secret was not reused")
	}
}

func TestConcurrentFirstOpensMakeOneKey(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	sealer := testenv.Sealer(t)
	const n = 8
	rings := make([]*Keyring, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			rings[i], errs[i] = Open(context.Background(), pool, sealer, Options{Issuer: testIssuer})
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open %d: %v", i, err)
		}
	}
	if all, _ := countKeys(t, pool); all != 1 {
		t.Fatalf("%d concurrent Opens made %d keys, want 1", n, all)
	}
	sid := uuid.New()
	for i, k := range rings[1:] {
		if k.SigningKID() != rings[0].SigningKID() {
			t.Fatalf("keyring %d signs with %s, keyring 0 with %s", i+1, k.SigningKID(), rings[0].SigningKID())
		}
		if k.RefreshToken(sid, 1) != rings[0].RefreshToken(sid, 1) {
			t.Fatalf("keyring %d has another refresh secret", i+1)
		}
	}
}

func TestOpenWithAnotherMasterKeyFails(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	_, err := Open(context.Background(), f.pool, testenv.Sealer(t), Options{Issuer: testIssuer})
	if !errors.Is(err, seal.ErrUnknownKey) {
		t.Fatalf("Open with a foreign master key: err = %v, want seal.ErrUnknownKey", err)
	}
}

func TestOpenRejectsEmptyIssuer(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	if _, err := Open(context.Background(), pool, testenv.Sealer(t), Options{}); err == nil {
		t.Fatal("Open with an empty issuer succeeded")
	}
}

func TestPrivateKeyIsSealedAtRest(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	var pub, sealed []byte
	var sealKID, alg string
	if err := f.pool.QueryRow(ctx,
		`SELECT alg, public_key, private_sealed, private_kid FROM signing_keys WHERE kid = $1`,
		f.k.SigningKID()).Scan(&alg, &pub, &sealed, &sealKID); err != nil {
		t.Fatal(err)
	}
	priv := f.k.signingKey()
	if alg != "EdDSA" || !bytes.Equal(pub, priv.Public().(ed25519.PublicKey)) {
		t.Fatalf("row alg %q, public key does not match the signing key", alg)
	}
	if bytes.Contains(sealed, priv.Seed()) || bytes.Contains(sealed, priv) {
		t.Fatal("private_sealed contains the raw private key")
	}
	// And it really is the key, sealed under the master key and bound to its kid.
	seed, err := f.sealer.Open(sealKID, sealed, keyAAD(f.k.SigningKID()))
	if err != nil || !bytes.Equal(seed, priv.Seed()) {
		t.Fatalf("unsealing the stored key: %v", err)
	}
	if _, err := f.sealer.Open(sealKID, sealed, keyAAD("another-kid")); err == nil {
		t.Fatal("the sealed key opens under another kid: it is not bound to its row")
	}

	var secretSealed []byte
	if err := f.pool.QueryRow(ctx, `SELECT sealed FROM token_secrets WHERE name = $1`, refreshSecretName).Scan(&secretSealed); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(secretSealed, f.k.refreshSecret) {
		t.Fatal("token_secrets holds the refresh secret in the clear")
	}
}

// A rotated-in key is published at once and signs only once every client
// that caches the JWKS (max-age) has it; then every instance that has
// reloaded since the rotation switches at the same moment, without another
// reload.
func TestRotatePublishesTheNewKeyBeforeItSigns(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	b := openKeyring(t, f.pool, f.sealer, f.clock.Now)
	oldKID := f.k.SigningKID()
	c := testClaims()
	oldToken, err := f.k.Issue(c)
	if err != nil {
		t.Fatal(err)
	}
	if ActivationDelay < JWKSMaxAge+ReloadEvery {
		t.Fatalf("ActivationDelay %v is shorter than the JWKS max-age %v plus the reload interval %v", ActivationDelay, JWKSMaxAge, ReloadEvery)
	}

	newKID, activatesAt, err := f.k.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if newKID == oldKID || !activatesAt.Equal(f.clock.Now().Add(ActivationDelay)) {
		t.Fatalf("Rotate = %s activating at %v; want a new kid activating at now + %v", newKID, activatesAt, ActivationDelay)
	}
	if err := b.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	signsWith := func(when string, want string) {
		t.Helper()
		for name, k := range map[string]*Keyring{"a": f.k, "b": b} {
			tok, err := k.Issue(c)
			if err != nil {
				t.Fatal(err)
			}
			if got := headerKID(t, tok); got != want || k.SigningKID() != want {
				t.Fatalf("%s: instance %s signs with %s (SigningKID %s), want %s", when, name, got, k.SigningKID(), want)
			}
			for vname, v := range map[string]*Keyring{"a": f.k, "b": b} {
				if _, err := v.Verify(ctx, tok); err != nil {
					t.Fatalf("%s: a token of %s does not verify on %s: %v", when, name, vname, err)
				}
			}
		}
	}
	// Published at once, on both instances, newest first; not yet signing.
	for name, k := range map[string]*Keyring{"a": f.k, "b": b} {
		if kids := jwksKIDs(t, k); len(kids) != 2 || kids[0] != newKID || kids[1] != oldKID {
			t.Fatalf("JWKS of %s right after the rotation = %v, want [%s %s]", name, kids, newKID, oldKID)
		}
	}
	signsWith("right after the rotation", oldKID)
	f.clock.Advance(ActivationDelay - time.Second)
	signsWith("a second before the activation", oldKID)
	f.clock.Advance(time.Second)
	signsWith("at the activation", newKID)
	if _, err := f.k.Verify(ctx, oldToken); err != nil {
		t.Fatalf("a token of the old key after the switch: %v", err)
	}
	// An instance started later signs with the active key at once.
	if k := openKeyring(t, f.pool, f.sealer, f.clock.Now); k.SigningKID() != newKID {
		t.Fatalf("an instance opened after the activation signs with %s, want %s", k.SigningKID(), newKID)
	}
}

// RotateNow is for a leaked key: the new key signs at once, and Retire with
// no wait cuts the leaked key's tokens off, cached ones too.
func TestRotateNowAndRetireCutOffALeakedKey(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	leaked := f.k.SigningKID()
	tok, err := f.k.Issue(testClaims())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.k.Verify(ctx, tok); err != nil { // and so cached
		t.Fatal(err)
	}
	kid, err := f.k.RotateNow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if f.k.SigningKID() != kid {
		t.Fatalf("after RotateNow the signing key is %s, want %s", f.k.SigningKID(), kid)
	}
	retired, err := f.k.Retire(ctx, 0)
	if err != nil || len(retired) != 1 || retired[0] != leaked {
		t.Fatalf("Retire(0) after RotateNow = %v, %v; want [%s]", retired, err, leaked)
	}
	if _, err := f.k.Verify(ctx, tok); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("a cached token of the retired key: err = %v, want ErrInvalidToken", err)
	}
}

func TestConcurrentRotationsBothHappen(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	other := openKeyring(t, f.pool, f.sealer, f.clock.Now)
	var wg sync.WaitGroup
	var errA, errB error
	wg.Go(func() { _, _, errA = f.k.Rotate(context.Background()) })
	wg.Go(func() { _, _, errB = other.Rotate(context.Background()) })
	wg.Wait()
	if errA != nil || errB != nil {
		t.Fatalf("concurrent rotations: %v, %v", errA, errB)
	}
	if all, _ := countKeys(t, f.pool); all != 3 {
		t.Fatalf("keys after two rotations = %d, want 3", all)
	}
	if err := f.k.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := other.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if f.k.SigningKID() != other.SigningKID() {
		t.Fatalf("instances disagree on the signing key after reload: %s vs %s", f.k.SigningKID(), other.SigningKID())
	}
}

func TestOtherInstanceSeesRotation(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	b := openKeyring(t, f.pool, f.sealer, f.clock.Now)

	// An unknown kid makes b read the keys again, once.
	kid1, err := f.k.RotateNow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tok1, err := f.k.Issue(testClaims())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Verify(ctx, tok1); err != nil {
		t.Fatalf("b verifying a token of a key rotated in by a: %v", err)
	}
	if b.SigningKID() != kid1 {
		t.Fatalf("b signs with %s after its reload, want %s", b.SigningKID(), kid1)
	}

	// Within a second, another unknown kid does not reach the DB.
	kid2, err := f.k.RotateNow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tok2, err := f.k.Issue(testClaims())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Verify(ctx, tok2); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("second unknown kid within the rate limit: err = %v, want ErrInvalidToken", err)
	}
	if b.SigningKID() != kid1 {
		t.Fatal("b reloaded twice within a second")
	}
	time.Sleep(unknownKIDReloadEvery + 100*time.Millisecond)
	if _, err := b.Verify(ctx, tok2); err != nil {
		t.Fatalf("unknown kid after the rate limit: %v", err)
	}
	if b.SigningKID() != kid2 {
		t.Fatalf("b signs with %s after its second reload, want %s", b.SigningKID(), kid2)
	}

	// A periodic Reload picks up a rotation without any token asking for it.
	kid3, err := f.k.RotateNow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if b.SigningKID() != kid3 || !bytes.Equal(b.JWKS(), f.k.JWKS()) {
		t.Fatalf("after Reload: b signs with %s (want %s), JWKS equal: %v", b.SigningKID(), kid3, bytes.Equal(b.JWKS(), f.k.JWKS()))
	}
}

func TestRetire(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	b := openKeyring(t, f.pool, f.sealer, f.clock.Now)
	oldKID := f.k.SigningKID()
	oldToken, err := f.k.Issue(testClaims())
	if err != nil {
		t.Fatal(err)
	}

	// The only key is the signing key: never retired, however old.
	f.clock.Advance(48 * time.Hour)
	if retired, err := f.k.Retire(ctx, 0); err != nil || len(retired) != 0 {
		t.Fatalf("Retire with one key: retired %v, err %v", retired, err)
	}

	newKID, _, err := f.k.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A key that does not sign yet retires nothing, even with no wait: the
	// old key is still the one signing.
	if retired, err := f.k.Retire(ctx, 0); err != nil || len(retired) != 0 {
		t.Fatalf("Retire(0) while the new key waits to sign: retired %v, err %v", retired, err)
	}
	f.clock.Advance(ActivationDelay)
	// Not yet: the old key stopped signing only now.
	if retired, err := f.k.Retire(ctx, RetireAfter); err != nil || len(retired) != 0 {
		t.Fatalf("Retire right after the new key took over: retired %v, err %v", retired, err)
	}
	f.clock.Advance(RetireAfter + time.Second)
	retired, err := f.k.Retire(ctx, RetireAfter)
	if err != nil {
		t.Fatal(err)
	}
	if len(retired) != 1 || retired[0] != oldKID {
		t.Fatalf("retired %v, want [%s]", retired, oldKID)
	}
	if kids := jwksKIDs(t, f.k); len(kids) != 1 || kids[0] != newKID {
		t.Fatalf("JWKS kids after Retire = %v, want [%s]", kids, newKID)
	}
	// Make the old token otherwise valid, so only the retirement can fail it.
	c := testClaims()
	c.IssuedAt = f.clock.Now()
	stillValid, err := issueWithKID(f, oldKID, c)
	if err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{"expired": oldToken, "unexpired": stillValid} {
		if _, err := f.k.Verify(ctx, tok); !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("%s token of a retired key: err = %v, want ErrInvalidToken", name, err)
		}
	}
	// Another instance drops it at its next reload.
	if err := b.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Verify(ctx, stillValid); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("b after reload: err = %v, want ErrInvalidToken", err)
	}
	if all, live := countKeys(t, f.pool); all != 2 || live != 1 {
		t.Fatalf("keys: %d, live %d; want 2, 1", all, live)
	}
	if _, err := f.k.Retire(ctx, -time.Second); err == nil {
		t.Fatal("Retire with a negative age succeeded")
	}
}

// issueWithKID signs c with a stored key that the keyring may no longer use.
func issueWithKID(f *fixture, kid string, c Claims) (string, error) {
	var sealed []byte
	var sealKID string
	if err := f.pool.QueryRow(context.Background(),
		`SELECT private_sealed, private_kid FROM signing_keys WHERE kid = $1`, kid).Scan(&sealed, &sealKID); err != nil {
		return "", err
	}
	seed, err := f.sealer.Open(sealKID, sealed, keyAAD(kid))
	if err != nil {
		return "", err
	}
	return signWith(f.k, kid, ed25519.NewKeyFromSeed(seed), c)
}

// A server secret is made once and read back by every later caller, also
// after the master key is rotated (a new key first, the old one still
// listed): what it keys does not start afresh.
func TestServerSecretOutlivesAMasterKeyRotation(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	ctx := context.Background()
	keys := testenv.Rotation(t)
	before, rotated := keys.Before, keys.Rotated
	first, err := ServerSecret(ctx, pool, before, "test_secret", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	again, err := ServerSecret(ctx, pool, rotated, "test_secret", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, again) || len(first) != 32 {
		t.Fatalf("the secret after the rotation differs (%d and %d bytes)", len(first), len(again))
	}
	other, err := ServerSecret(ctx, pool, rotated, "another_secret", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(first, other) {
		t.Fatal("two secrets of different names are the same")
	}
}

// A kept secret starts as the seed its first caller gives (the key authd
// used to derive) and stays that, whatever seed a later caller derives
// after a rotation.
func TestKeptServerSecretStartsFromItsFirstSeed(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	ctx := context.Background()
	keys := testenv.Rotation(t)
	before, rotated, oldKey, newKey := keys.Before, keys.Rotated, keys.Old, keys.New
	seed := seal.Derive(oldKey, "kept")
	first, err := KeptServerSecret(ctx, pool, before, "kept", seed, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, seed) {
		t.Fatal("the first caller's secret is not its seed")
	}
	again, err := KeptServerSecret(ctx, pool, rotated, "kept", seal.Derive(newKey, "kept"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, seed) {
		t.Fatal("after the rotation the secret follows the new key")
	}
	if _, err := KeptServerSecret(ctx, pool, rotated, "short", seed[:16], time.Now()); err == nil {
		t.Fatal("a 16-byte seed was taken")
	}
}
