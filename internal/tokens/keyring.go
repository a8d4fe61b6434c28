// Package tokens issues and verifies access JWTs with rotatable EdDSA keys
// kept sealed in Postgres, and derives opaque refresh tokens.
package tokens

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authd/authd/internal/seal"
)

const (
	// DefaultAccessTTL is how long an access token is valid unless configured
	// otherwise (AUTHD_ACCESS_TOKEN_TTL).
	DefaultAccessTTL = 24 * time.Hour

	// MaxAccessTTL is the longest access-token lifetime Open accepts: key
	// retirement (RetireAfter) and the revocations every instance keeps
	// (domain.AccessTokenTTL) are sized for it.
	MaxAccessTTL = 24 * time.Hour

	// Leeway is the clock skew tolerated between the instances that issue and
	// verify a token.
	Leeway = 30 * time.Second

	// RetireAfter is how long a key keeps verifying after it stopped signing:
	// the last token it signed must have expired, and the margin covers the
	// instances that go on signing with it until their next Reload.
	RetireAfter = MaxAccessTTL + Leeway + time.Hour

	// JWKSMaxAge is how long clients may keep /.well-known/jwks.json (its
	// Cache-Control max-age, which package http sets from it).
	JWKSMaxAge = 5 * time.Minute

	// ReloadEvery is how often authd reloads the keys (cmd/authd's
	// housekeeping): how stale an instance's JWKS can be.
	ReloadEvery = 30 * time.Second

	// ActivationDelay is how long a rotated-in key is published before it
	// signs: a client that fetched the JWKS just before the rotation, from an
	// instance that had not reloaded yet, keeps that copy for JWKSMaxAge, and
	// must have the new key before it meets a token it signed.
	ActivationDelay = ReloadEvery + JWKSMaxAge + Leeway

	// unknownKIDReloadEvery bounds how often a token with a kid we do not hold
	// may make us read the keys again, so forged kids cannot hammer the DB.
	unknownKIDReloadEvery = time.Second

	// maxTokenLen bounds the work done on an untrusted token before its
	// signature is checked; ours are well under 1 KiB.
	maxTokenLen = 8 << 10

	algEdDSA          = "EdDSA"
	refreshSecretName = "refresh_mac"
	refreshSecretSize = 32
)

// Keyring holds the signing keys and the refresh-token secret in memory.
// It is safe for concurrent use; Issue, Verify and JWKS never touch the DB
// except for Verify's rate-limited reload on an unknown kid.
type Keyring struct {
	pool      *pgxpool.Pool
	sealer    *seal.Sealer
	issuer    string
	accessTTL time.Duration
	now       func() time.Time
	parser    *jwt.Parser

	// refreshSecret never changes after Open: rotating it would log every
	// session out, which is a decision for a migration, not for a reload.
	refreshSecret []byte

	keys atomic.Pointer[keyset]

	// reloadMu serializes reloads so a slow read cannot overwrite a newer one.
	reloadMu sync.Mutex

	missMu         sync.Mutex
	lastMissReload time.Time // guarded by missMu; wall clock, not k.now
}

// keyset is an immutable snapshot of the usable keys, swapped as a whole.
type keyset struct {
	// signers are the key that signed at the Reload and every key rotated in
	// after it, oldest first: each takes over at its activation time, on
	// every instance at once, without waiting for a Reload.
	signers []signer
	public  map[string]ed25519.PublicKey
	kids    []string    // oldest first, as in the table
	starts  []time.Time // each kid's activation time
	jwks    []byte

	verified *verifiedCache
}

// signer is a key that signs from activatesAt on.
type signer struct {
	kid         string
	key         ed25519.PrivateKey
	activatesAt time.Time
}

// signer is the newest key active at now.
func (ks *keyset) signer(now time.Time) signer {
	for _, s := range slices.Backward(ks.signers[1:]) {
		if !now.Before(s.activatesAt) {
			return s
		}
	}
	return ks.signers[0]
}

// Options configure a Keyring.
type Options struct {
	// Issuer is every token's iss; required.
	Issuer string
	// AccessTTL is how long the access tokens Issue signs live, and the
	// longest exp − iat Verify accepts: at most MaxAccessTTL; 0 means
	// DefaultAccessTTL.
	AccessTTL time.Duration
	// Now is the clock for token times, key ages and activations; nil means
	// time.Now.
	Now func() time.Time
}

// Open loads the keys from the database, creating the first signing key and
// the refresh-token secret when there are none. Two instances opening a fresh
// database at once end up with the same single key.
func Open(ctx context.Context, pool *pgxpool.Pool, sealer *seal.Sealer, o Options) (*Keyring, error) {
	if o.Issuer == "" {
		return nil, errors.New("tokens: empty issuer")
	}
	if o.AccessTTL == 0 {
		o.AccessTTL = DefaultAccessTTL
	}
	if o.AccessTTL < 0 || o.AccessTTL > MaxAccessTTL {
		return nil, fmt.Errorf("tokens: access-token lifetime %v is outside (0, %v]", o.AccessTTL, MaxAccessTTL)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	issuer, now := o.Issuer, o.Now
	k := &Keyring{
		pool:      pool,
		sealer:    sealer,
		issuer:    issuer,
		accessTTL: o.AccessTTL,
		now:       now,
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{algEdDSA}),
			jwt.WithIssuer(issuer),
			jwt.WithLeeway(Leeway),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithStrictDecoding(),
			jwt.WithTimeFunc(now),
		),
	}
	secret, err := ServerSecret(ctx, k.pool, k.sealer, refreshSecretName, k.now())
	if err != nil {
		return nil, err
	}
	k.refreshSecret = secret
	if err := k.Reload(ctx); err != nil && !errors.Is(err, errNoKey) {
		return nil, err
	}
	if k.keys.Load() == nil {
		if err := k.createFirstKey(ctx); err != nil {
			return nil, err
		}
		if err := k.Reload(ctx); err != nil {
			return nil, err
		}
	}
	return k, nil
}

var errNoKey = errors.New("tokens: no signing key")

// ServerSecret is the 32-byte random secret named name, shared by every
// instance: kept sealed under the master key in token_secrets, made by
// whichever instance asks first. Unlike a key derived from the master key,
// it outlives a rotation of the master key (the rotated-out key still opens
// it), so what it keys (the refresh tokens, the rate limits' stored keys)
// does not start afresh.
func ServerSecret(ctx context.Context, pool *pgxpool.Pool, sealer *seal.Sealer, name string, now time.Time) ([]byte, error) {
	fresh := make([]byte, refreshSecretSize)
	if _, err := rand.Read(fresh); err != nil {
		return nil, fmt.Errorf("tokens: generate secret %s: %w", name, err)
	}
	return serverSecret(ctx, pool, sealer, name, fresh, now)
}

// KeptServerSecret is ServerSecret for a secret that authd used to derive
// from the first master key: the instance that asks first stores seed, the
// key it derived, so that what it keyed already (backup codes, codes in
// flight) still checks; from then on it is a secret of its own, which a
// rotation of the master key leaves as it is. Upgrade before rotating: an
// instance first started with a new key first seeds it from that key.
func KeptServerSecret(ctx context.Context, pool *pgxpool.Pool, sealer *seal.Sealer, name string, seed []byte, now time.Time) ([]byte, error) {
	if len(seed) != refreshSecretSize {
		return nil, fmt.Errorf("tokens: seed of secret %s is %d bytes, want %d", name, len(seed), refreshSecretSize)
	}
	return serverSecret(ctx, pool, sealer, name, seed, now)
}

func serverSecret(ctx context.Context, pool *pgxpool.Pool, sealer *seal.Sealer, name string, fresh []byte, now time.Time) ([]byte, error) {
	aad := secretAAD(name)
	sealKID, sealed, err := sealer.Seal(fresh, aad)
	if err != nil {
		return nil, fmt.Errorf("tokens: seal secret %s: %w", name, err)
	}
	// Insert-then-read: whichever instance got there first, all use its secret.
	if _, err := pool.Exec(ctx, `
		INSERT INTO token_secrets (name, sealed, seal_kid, created_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (name) DO NOTHING`,
		name, sealed, sealKID, now); err != nil {
		return nil, fmt.Errorf("tokens: store secret %s: %w", name, err)
	}
	if err := pool.QueryRow(ctx, `SELECT sealed, seal_kid FROM token_secrets WHERE name = $1`,
		name).Scan(&sealed, &sealKID); err != nil {
		return nil, fmt.Errorf("tokens: read secret %s: %w", name, err)
	}
	secret, err := sealer.Open(sealKID, sealed, aad)
	if err != nil {
		return nil, fmt.Errorf("tokens: open secret %s: %w", name, err)
	}
	if len(secret) != refreshSecretSize {
		return nil, fmt.Errorf("tokens: secret %s is %d bytes, want %d", name, len(secret), refreshSecretSize)
	}
	return secret, nil
}

// newKeyRow generates a key and seals its private half for storage.
func (k *Keyring) newKeyRow() (kid string, pub ed25519.PublicKey, sealKID string, sealed []byte, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", nil, "", nil, fmt.Errorf("tokens: generate signing key: %w", err)
	}
	kid = thumbprint(pub)
	// Only the seed is stored: the rest of the private key derives from it.
	sealKID, sealed, err = k.sealer.Seal(priv.Seed(), keyAAD(kid))
	if err != nil {
		return "", nil, "", nil, fmt.Errorf("tokens: seal signing key: %w", err)
	}
	return kid, pub, sealKID, sealed, nil
}

func (k *Keyring) createFirstKey(ctx context.Context) error {
	kid, pub, sealKID, sealed, err := k.newKeyRow()
	if err != nil {
		return err
	}
	// Inserts only when no usable key exists. Two instances racing either see
	// each other's row (HAVING fails) or compute the same seq (ON CONFLICT), so
	// exactly one key is made; the caller re-reads to find the winner's. It
	// signs at once: no client can hold a JWKS or a token from before it.
	now := k.now()
	if _, err := k.pool.Exec(ctx, `
		INSERT INTO signing_keys (kid, seq, alg, public_key, private_sealed, private_kid, created_at, activates_at)
		SELECT $1, coalesce(max(seq), 0) + 1, $2, $3, $4, $5, $6, $6 FROM signing_keys
		HAVING count(*) FILTER (WHERE retired_at IS NULL) = 0
		ON CONFLICT (seq) DO NOTHING`,
		kid, algEdDSA, []byte(pub), sealed, sealKID, now); err != nil {
		return fmt.Errorf("tokens: create first signing key: %w", err)
	}
	return nil
}

// Rotate adds a new key that is published in the JWKS at once and signs from
// ActivationDelay on, on every instance that has reloaded by then (the
// others pick it up at their next Reload): clients that cache the JWKS for
// its max-age have it before they meet a token it signed. Older keys keep
// verifying until Retire drops them. It returns the new kid and when it
// starts signing.
func (k *Keyring) Rotate(ctx context.Context) (kid string, activatesAt time.Time, err error) {
	return k.rotate(ctx, ActivationDelay)
}

// RotateNow adds a new key that signs at once, for a key that leaked: clients
// holding a cached JWKS refuse its tokens until they fetch the JWKS again.
func (k *Keyring) RotateNow(ctx context.Context) (kid string, err error) {
	kid, _, err = k.rotate(ctx, 0)
	return kid, err
}

// rotate adds a key that signs delay after now.
func (k *Keyring) rotate(ctx context.Context, delay time.Duration) (kid string, activatesAt time.Time, err error) {
	now := k.now()
	activatesAt = now.Add(delay)
	kid, pub, sealKID, sealed, err := k.newKeyRow()
	if err != nil {
		return "", time.Time{}, err
	}
	// A concurrent rotation takes the same seq; retrying with a fresh snapshot
	// puts ours after it, so both rotations happen and the later one signs
	// once active.
	for range 5 {
		tag, err := k.pool.Exec(ctx, `
			INSERT INTO signing_keys (kid, seq, alg, public_key, private_sealed, private_kid, created_at, activates_at)
			SELECT $1, coalesce(max(seq), 0) + 1, $2, $3, $4, $5, $6, $7 FROM signing_keys
			ON CONFLICT (seq) DO NOTHING`,
			kid, algEdDSA, []byte(pub), sealed, sealKID, now, activatesAt)
		if err != nil {
			return "", time.Time{}, fmt.Errorf("tokens: rotate signing key: %w", err)
		}
		if tag.RowsAffected() == 1 {
			if err := k.Reload(ctx); err != nil {
				return "", time.Time{}, err
			}
			return kid, activatesAt, nil
		}
	}
	return "", time.Time{}, errors.New("tokens: rotate signing key: too many concurrent rotations")
}

// Retire marks retired the keys that stopped signing (a newer key became
// active) more than olderThan ago, and returns their kids. Retired keys leave
// the JWKS and their tokens stop verifying, here at once and elsewhere at the
// next Reload. Pass RetireAfter normally; a shorter time cuts off tokens that have
// not expired yet, which is what a leaked key calls for. The signing key is
// never retired.
func (k *Keyring) Retire(ctx context.Context, olderThan time.Duration) (retired []string, err error) {
	if olderThan < 0 {
		return nil, fmt.Errorf("tokens: retire: negative age %v", olderThan)
	}
	now := k.now()
	rows, err := k.pool.Query(ctx, `
		UPDATE signing_keys k SET retired_at = $1
		WHERE k.retired_at IS NULL
		  AND EXISTS (SELECT 1 FROM signing_keys n WHERE n.seq > k.seq AND n.activates_at <= $2)
		RETURNING k.kid`, now, now.Add(-olderThan))
	if err != nil {
		return nil, fmt.Errorf("tokens: retire keys: %w", err)
	}
	for rows.Next() {
		var kid string
		if err := rows.Scan(&kid); err != nil {
			rows.Close()
			return nil, fmt.Errorf("tokens: retire keys: %w", err)
		}
		retired = append(retired, kid)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("tokens: retire keys: %w", err)
	}
	if err := k.Reload(ctx); err != nil {
		return retired, err
	}
	return retired, nil
}

// Reload reads the keys again, so this instance picks up another's rotation
// or retirement. Run it periodically (every ReloadEvery); Verify also runs it,
// at most once a second, when it meets a kid it does not know.
func (k *Keyring) Reload(ctx context.Context) error {
	k.reloadMu.Lock()
	defer k.reloadMu.Unlock()

	rows, err := k.pool.Query(ctx, `
		SELECT kid, alg, public_key, private_sealed, private_kid, activates_at
		FROM signing_keys WHERE retired_at IS NULL ORDER BY seq`)
	if err != nil {
		return fmt.Errorf("tokens: read signing keys: %w", err)
	}
	var all []keyRow
	for rows.Next() {
		var r keyRow
		if err := rows.Scan(&r.kid, &r.alg, &r.pub, &r.sealed, &r.sealKID, &r.activatesAt); err != nil {
			rows.Close()
			return fmt.Errorf("tokens: read signing keys: %w", err)
		}
		all = append(all, r)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("tokens: read signing keys: %w", err)
	}
	if len(all) == 0 {
		return errNoKey
	}

	next := &keyset{public: make(map[string]ed25519.PublicKey, len(all)), verified: newVerifiedCache()}
	for _, r := range all {
		if r.alg != algEdDSA {
			return fmt.Errorf("tokens: signing key %s has algorithm %q, want %s", r.kid, r.alg, algEdDSA)
		}
		if len(r.pub) != ed25519.PublicKeySize {
			return fmt.Errorf("tokens: signing key %s: public key is %d bytes", r.kid, len(r.pub))
		}
		next.public[r.kid] = ed25519.PublicKey(r.pub)
		next.kids = append(next.kids, r.kid)
		next.starts = append(next.starts, r.activatesAt)
	}
	prev := k.keys.Load()
	if prev != nil && slices.Equal(prev.kids, next.kids) && slices.EqualFunc(prev.starts, next.starts, time.Time.Equal) {
		return nil // nothing changed: keep the cached JWKS and private keys
	}

	// The newest key active now signs, and each key after it takes over at
	// its activation time. When none is active yet (this instance's clock is
	// behind the one that rotated), the oldest signs: something must.
	now := k.now()
	first := 0
	for i, r := range all {
		if !now.Before(r.activatesAt) {
			first = i
		}
	}
	held := map[string]ed25519.PrivateKey{}
	if prev != nil {
		for _, s := range prev.signers {
			held[s.kid] = s.key
		}
	}
	for _, r := range all[first:] {
		priv, ok := held[r.kid]
		if !ok {
			if priv, err = k.openKey(r); err != nil {
				return err
			}
		}
		next.signers = append(next.signers, signer{kid: r.kid, key: priv, activatesAt: r.activatesAt})
	}
	jwks, err := buildJWKS(next)
	if err != nil {
		return err
	}
	next.jwks = jwks
	k.keys.Store(next)
	return nil
}

// keyRow is a signing_keys row as Reload reads it.
type keyRow struct {
	kid, alg, sealKID string
	pub, sealed       []byte
	activatesAt       time.Time
}

// openKey unseals a row's private key and checks it against its public key.
func (k *Keyring) openKey(r keyRow) (ed25519.PrivateKey, error) {
	seed, err := k.sealer.Open(r.sealKID, r.sealed, keyAAD(r.kid))
	if err != nil {
		return nil, fmt.Errorf("tokens: open signing key %s: %w", r.kid, err)
	}
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("tokens: signing key %s: seed is %d bytes", r.kid, len(seed))
	}
	priv := ed25519.NewKeyFromSeed(seed)
	// The public column is not sealed; a mismatch would issue tokens that
	// nobody can verify.
	if !bytes.Equal(priv.Public().(ed25519.PublicKey), r.pub) {
		return nil, fmt.Errorf("tokens: signing key %s does not match its public key", r.kid)
	}
	return priv, nil
}

// SigningKID is the kid of the key that Issue signs with now.
func (k *Keyring) SigningKID() string {
	return k.keys.Load().signer(k.now()).kid
}

// AccessTTL is how long the access tokens Issue signs live.
func (k *Keyring) AccessTTL() time.Duration {
	return k.accessTTL
}

// JWKS is the RFC 7517 key set of every key that still verifies or is about
// to sign, newest first, for /.well-known/jwks.json. The caller must not modify it.
func (k *Keyring) JWKS() []byte {
	return k.keys.Load().jwks
}

type jsonWebKey struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
}

func buildJWKS(ks *keyset) ([]byte, error) {
	set := struct {
		Keys []jsonWebKey `json:"keys"`
	}{Keys: make([]jsonWebKey, 0, len(ks.kids))}
	for _, kid := range slices.Backward(ks.kids) {
		set.Keys = append(set.Keys, jsonWebKey{
			Kty: "OKP",
			Crv: "Ed25519",
			X:   base64.RawURLEncoding.EncodeToString(ks.public[kid]),
			Kid: kid,
			Alg: algEdDSA,
			Use: "sig",
		})
	}
	b, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("tokens: encode JWKS: %w", err)
	}
	return b, nil
}

// thumbprint is the RFC 7638 JWK thumbprint of an Ed25519 public key: a kid
// that names the key itself, so kids never collide and clients can check it.
func thumbprint(pub ed25519.PublicKey) string {
	canonical := `{"crv":"Ed25519","kty":"OKP","x":"` + base64.RawURLEncoding.EncodeToString(pub) + `"}`
	sum := sha256.Sum256([]byte(canonical))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// secretAAD binds a sealed token secret to its row.
func secretAAD(name string) []byte {
	return []byte("token_secrets:" + name)
}

// keyAAD binds a sealed private key to its row.
func keyAAD(kid string) []byte {
	return []byte("signing_keys:" + kid)
}
