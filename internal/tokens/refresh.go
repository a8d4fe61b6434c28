package tokens

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"

	"github.com/google/uuid"
)

// A refresh token is base64url(version || session id || generation || MAC),
// the MAC being HMAC-SHA256(refresh secret, label || session id || generation).
// Nothing is stored: the session's current generation says which token is
// live, and the same (session, generation) always gives the same token, so
// the current pair can be answered again within the reuse grace.
const (
	refreshVersion byte = 1
	refreshLabel        = "authd-refresh-v1"
	refreshRawLen       = 1 + 16 + 8 + sha256.Size
)

// RefreshToken is the refresh token of a session at a rotation generation.
func (k *Keyring) RefreshToken(sessionID uuid.UUID, generation uint64) string {
	raw := make([]byte, 0, refreshRawLen)
	raw = append(raw, refreshVersion)
	raw = append(raw, sessionID[:]...)
	raw = binary.BigEndian.AppendUint64(raw, generation)
	raw = k.refreshMAC(raw, sessionID, generation)
	return base64.RawURLEncoding.EncodeToString(raw)
}

// ParseRefreshToken checks a refresh token's MAC and returns the session and
// generation it names. Whether that generation is still the session's current
// one is for the caller to decide.
func (k *Keyring) ParseRefreshToken(token string) (sessionID uuid.UUID, generation uint64, err error) {
	// Checking the length first keeps a huge input from being decoded at all.
	if len(token) != base64.RawURLEncoding.EncodedLen(refreshRawLen) {
		return uuid.Nil, 0, fmt.Errorf("%w: refresh token has the wrong length", ErrInvalidToken)
	}
	// Strict, so that exactly one string encodes a given token.
	raw, err := base64.RawURLEncoding.Strict().DecodeString(token)
	if err != nil || len(raw) != refreshRawLen {
		return uuid.Nil, 0, fmt.Errorf("%w: refresh token is not base64url", ErrInvalidToken)
	}
	if raw[0] != refreshVersion {
		return uuid.Nil, 0, fmt.Errorf("%w: refresh token version %d", ErrInvalidToken, raw[0])
	}
	sessionID = uuid.UUID(raw[1:17])
	generation = binary.BigEndian.Uint64(raw[17:25])
	var want [sha256.Size]byte
	if !hmac.Equal(raw[25:], k.refreshMAC(want[:0], sessionID, generation)) {
		return uuid.Nil, 0, fmt.Errorf("%w: refresh token MAC mismatch", ErrInvalidToken)
	}
	return sessionID, generation, nil
}

// refreshMAC appends the MAC of (sessionID, generation) to dst.
func (k *Keyring) refreshMAC(dst []byte, sessionID uuid.UUID, generation uint64) []byte {
	m := hmac.New(sha256.New, k.refreshSecret)
	m.Write([]byte(refreshLabel))
	m.Write(sessionID[:])
	var g [8]byte
	binary.BigEndian.PutUint64(g[:], generation)
	m.Write(g[:])
	return m.Sum(dst)
}
