// Package seal encrypts secrets at rest with AES-256-GCM under a master key
// that is named by a key id, so keys can be rotated while old data still opens.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
)

// KeySize is the length of a master key in bytes.
const KeySize = 32

// ErrUnknownKey means data was sealed under a key this Sealer does not hold.
var ErrUnknownKey = errors.New("seal: unknown key id")

// Sealer seals with its current key and opens with any key it holds.
type Sealer struct {
	current string
	aeads   map[string]cipher.AEAD
}

// New returns a Sealer that seals with the first key and opens with all of them.
// A key's id is derived from the key itself, so nobody has to name keys.
func New(keys ...[]byte) (*Sealer, error) {
	if len(keys) == 0 {
		return nil, errors.New("seal: no key")
	}
	s := &Sealer{aeads: make(map[string]cipher.AEAD, len(keys))}
	for i, k := range keys {
		if len(k) != KeySize {
			return nil, fmt.Errorf("seal: key %d is %d bytes, want %d", i, len(k), KeySize)
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, fmt.Errorf("seal: key %d: %w", i, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("seal: key %d: %w", i, err)
		}
		id := KeyID(k)
		if i == 0 {
			s.current = id
		}
		s.aeads[id] = aead
	}
	return s, nil
}

// ParseKey decodes a base64 (standard or URL, padded or not) master key.
func ParseKey(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if k, err := enc.DecodeString(s); err == nil {
			if len(k) != KeySize {
				return nil, fmt.Errorf("master key is %d bytes, want %d", len(k), KeySize)
			}
			return k, nil
		}
	}
	return nil, errors.New("master key is not base64")
}

// KeyID names a key without revealing it: the first 8 bytes of a hash of it.
func KeyID(key []byte) string {
	sum := sha256.Sum256(append([]byte("authd-seal-kid:"), key...))
	return hex.EncodeToString(sum[:8])
}

// Seal encrypts plaintext bound to context (e.g. the id of the row that holds
// it, so a sealed value cannot be moved to another row) and returns the key id
// and nonce||ciphertext.
func (s *Sealer) Seal(plaintext, context []byte) (kid string, sealed []byte, err error) {
	aead := s.aeads[s.current]
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plaintext)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", nil, fmt.Errorf("seal: nonce: %w", err)
	}
	return s.current, aead.Seal(nonce, nonce, plaintext, context), nil
}

// Open decrypts what Seal returned, with the same context.
func (s *Sealer) Open(kid string, sealed, context []byte) ([]byte, error) {
	aead, ok := s.aeads[kid]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownKey, kid)
	}
	if len(sealed) < aead.NonceSize() {
		return nil, errors.New("seal: sealed value too short")
	}
	nonce, ct := sealed[:aead.NonceSize()], sealed[aead.NonceSize():]
	pt, err := aead.Open(nil, nonce, ct, context)
	if err != nil {
		return nil, fmt.Errorf("seal: open with key %q: %w", kid, err)
	}
	return pt, nil
}

// Derive returns a 32-byte key for one purpose from a master key, so that
// each use (code hashing, say) has its own key and none is the master itself.
func Derive(master []byte, purpose string) []byte {
	m := hmac.New(sha256.New, master)
	m.Write([]byte("authd-derive-v1:" + purpose))
	return m.Sum(nil)
}
