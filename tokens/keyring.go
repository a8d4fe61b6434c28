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

	"github.com/authd/authd/seal"
)

const (
	// AccessTTL is how long an access token is valid.
	AccessTTL = 24 * time.Hour

	// Leeway is the clock skew tolerated between the instances that issue and
	// verify a token.
	Leeway = 30 * time.Second

	// RetireAfter is how long a key keeps verifying after it stopped signing:
	// the last token it signed must have expired, and the margin covers the
	// instances that go on signing with it until their next Reload.
	RetireAfter = AccessTTL + Leeway + time.Hour

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
	pool   *pgxpool.Pool
	sealer *seal.Sealer
	issuer string
	now    func() time.Time
	parser *jwt.Parser

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
	signKID string
	signKey ed25519.PrivateKey
	public  map[string]ed25519.PublicKey
	kids    []string // oldest first, as in the table
	jwks    []byte

	verified *verifiedCache
}

// Open loads the keys from the database, creating the first signing key and
// the refresh-token secret when there are none. Two instances opening a fresh
// database at once end up with the same single key. now is the clock for
// token times and key ages; nil means time.Now.
func Open(ctx context.Context, pool *pgxpool.Pool, sealer *seal.Sealer, issuer string, now func() time.Time) (*Keyring, error) {
	if issuer == "" {
		return nil, errors.New("tokens: empty issuer")
	}
	if now == nil {
		now = time.Now
	}
	k := &Keyring{
		pool:   pool,
		sealer: sealer,
		issuer: issuer,
		now:    now,
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
	secret, err := k.loadRefreshSecret(ctx)
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

func (k *Keyring) loadRefreshSecret(ctx context.Context) ([]byte, error) {
	aad := []byte("token_secrets:" + refreshSecretName)
	fresh := make([]byte, refreshSecretSize)
	if _, err := rand.Read(fresh); err != nil {
		return nil, fmt.Errorf("tokens: generate refresh secret: %w", err)
	}
	sealKID, sealed, err := k.sealer.Seal(fresh, aad)
	if err != nil {
		return nil, fmt.Errorf("tokens: seal refresh secret: %w", err)
	}
	// Insert-then-read: whichever instance got there first, all use its secret.
	if _, err := k.pool.Exec(ctx, `
		INSERT INTO token_secrets (name, sealed, seal_kid, created_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (name) DO NOTHING`,
		refreshSecretName, sealed, sealKID, k.now()); err != nil {
		return nil, fmt.Errorf("tokens: store refresh secret: %w", err)
	}
	if err := k.pool.QueryRow(ctx, `SELECT sealed, seal_kid FROM token_secrets WHERE name = $1`,
		refreshSecretName).Scan(&sealed, &sealKID); err != nil {
		return nil, fmt.Errorf("tokens: read refresh secret: %w", err)
	}
	secret, err := k.sealer.Open(sealKID, sealed, aad)
	if err != nil {
		return nil, fmt.Errorf("tokens: open refresh secret: %w", err)
	}
	if len(secret) != refreshSecretSize {
		return nil, fmt.Errorf("tokens: refresh secret is %d bytes, want %d", len(secret), refreshSecretSize)
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
	// exactly one key is made; the caller re-reads to find the winner's.
	if _, err := k.pool.Exec(ctx, `
		INSERT INTO signing_keys (kid, seq, alg, public_key, private_sealed, private_kid, created_at)
		SELECT $1, coalesce(max(seq), 0) + 1, $2, $3, $4, $5, $6 FROM signing_keys
		HAVING count(*) FILTER (WHERE retired_at IS NULL) = 0
		ON CONFLICT (seq) DO NOTHING`,
		kid, algEdDSA, []byte(pub), sealed, sealKID, k.now()); err != nil {
		return fmt.Errorf("tokens: create first signing key: %w", err)
	}
	return nil
}

// Rotate adds a new key that becomes the signing key of this instance at once
// and of the others at their next Reload. Older keys keep verifying until
// Retire drops them.
func (k *Keyring) Rotate(ctx context.Context) (kid string, err error) {
	kid, pub, sealKID, sealed, err := k.newKeyRow()
	if err != nil {
		return "", err
	}
	// A concurrent rotation takes the same seq; retrying with a fresh snapshot
	// puts ours after it, so both rotations happen and the later one signs.
	for range 5 {
		tag, err := k.pool.Exec(ctx, `
			INSERT INTO signing_keys (kid, seq, alg, public_key, private_sealed, private_kid, created_at)
			SELECT $1, coalesce(max(seq), 0) + 1, $2, $3, $4, $5, $6 FROM signing_keys
			ON CONFLICT (seq) DO NOTHING`,
			kid, algEdDSA, []byte(pub), sealed, sealKID, k.now())
		if err != nil {
			return "", fmt.Errorf("tokens: rotate signing key: %w", err)
		}
		if tag.RowsAffected() == 1 {
			if err := k.Reload(ctx); err != nil {
				return "", err
			}
			return kid, nil
		}
	}
	return "", errors.New("tokens: rotate signing key: too many concurrent rotations")
}

// Retire marks retired the keys that stopped signing (a newer key was created)
// more than olderThan ago, and returns their kids. Retired keys leave the JWKS
// and their tokens stop verifying, here at once and elsewhere at the next
// Reload. Pass RetireAfter normally; a shorter time cuts off tokens that have
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
		  AND EXISTS (SELECT 1 FROM signing_keys n WHERE n.seq > k.seq AND n.created_at <= $2)
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
// or retirement. Run it periodically (e.g. every 30 s); Verify also runs it,
// at most once a second, when it meets a kid it does not know.
func (k *Keyring) Reload(ctx context.Context) error {
	k.reloadMu.Lock()
	defer k.reloadMu.Unlock()

	rows, err := k.pool.Query(ctx, `
		SELECT kid, alg, public_key, private_sealed, private_kid
		FROM signing_keys WHERE retired_at IS NULL ORDER BY seq`)
	if err != nil {
		return fmt.Errorf("tokens: read signing keys: %w", err)
	}
	type row struct {
		kid, alg, sealKID string
		pub, sealed       []byte
	}
	var all []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.kid, &r.alg, &r.pub, &r.sealed, &r.sealKID); err != nil {
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
	}
	prev := k.keys.Load()
	if prev != nil && slices.Equal(prev.kids, next.kids) {
		return nil // nothing changed: keep the cached JWKS and private key
	}

	newest := all[len(all)-1]
	next.signKID = newest.kid
	if prev != nil && prev.signKID == newest.kid {
		next.signKey = prev.signKey
	} else {
		seed, err := k.sealer.Open(newest.sealKID, newest.sealed, keyAAD(newest.kid))
		if err != nil {
			return fmt.Errorf("tokens: open signing key %s: %w", newest.kid, err)
		}
		if len(seed) != ed25519.SeedSize {
			return fmt.Errorf("tokens: signing key %s: seed is %d bytes", newest.kid, len(seed))
		}
		priv := ed25519.NewKeyFromSeed(seed)
		// The public column is not sealed; a mismatch would issue tokens that
		// nobody can verify.
		if !bytes.Equal(priv.Public().(ed25519.PublicKey), newest.pub) {
			return fmt.Errorf("tokens: signing key %s does not match its public key", newest.kid)
		}
		next.signKey = priv
	}
	jwks, err := buildJWKS(next)
	if err != nil {
		return err
	}
	next.jwks = jwks
	k.keys.Store(next)
	return nil
}

// SigningKID is the kid of the key that Issue signs with.
func (k *Keyring) SigningKID() string {
	return k.keys.Load().signKID
}

// JWKS is the RFC 7517 key set of every key that still verifies, newest
// first, for /.well-known/jwks.json. The caller must not modify it.
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

// keyAAD binds a sealed private key to its row.
func keyAAD(kid string) []byte {
	return []byte("signing_keys:" + kid)
}
