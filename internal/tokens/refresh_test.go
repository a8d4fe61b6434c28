package tokens

import (
	"encoding/base64"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/google/uuid"
)

func TestRefreshTokenRoundTrip(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, gen := range []uint64{0, 1, 2, 1 << 40, math.MaxUint64} {
		sid := uuid.New()
		tok := f.k.RefreshToken(sid, gen)
		raw, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil || len(raw) != 57 || raw[0] != 1 {
			t.Fatalf("token %d bytes, version %v, err %v", len(raw), raw[:1], err)
		}
		gotSID, gotGen, err := f.k.ParseRefreshToken(tok)
		if err != nil {
			t.Fatalf("generation %d: %v", gen, err)
		}
		if gotSID != sid || gotGen != gen {
			t.Fatalf("parsed (%s, %d), want (%s, %d)", gotSID, gotGen, sid, gen)
		}
		if again := f.k.RefreshToken(sid, gen); again != tok {
			t.Fatal("same session and generation gave another token")
		}
		if f.k.RefreshToken(sid, gen+1) == tok || f.k.RefreshToken(uuid.New(), gen) == tok {
			t.Fatal("another session or generation gave the same token")
		}
	}
}

func TestRefreshTokenTamperingFails(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	tok := f.k.RefreshToken(uuid.New(), 7)
	raw, _ := base64.RawURLEncoding.DecodeString(tok)
	for i := range raw {
		for _, bit := range []byte{0x01, 0x80} {
			bad := append([]byte(nil), raw...)
			bad[i] ^= bit
			if _, _, err := f.k.ParseRefreshToken(base64.RawURLEncoding.EncodeToString(bad)); !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("byte %d ^ %#x: err = %v, want ErrInvalidToken", i, bit, err)
			}
		}
	}
	// Every character of the text too, so no second spelling of a token exists.
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for i := range tok {
		for _, r := range alphabet {
			if byte(r) == tok[i] {
				continue
			}
			bad := tok[:i] + string(r) + tok[i+1:]
			if _, _, err := f.k.ParseRefreshToken(bad); !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("char %d -> %c: err = %v", i, r, err)
			}
		}
	}
	for name, bad := range map[string]string{
		"empty":     "",
		"truncated": tok[:len(tok)-1],
		"extended":  tok + "A",
		"padded":    tok + "==",
		"std b64":   strings.NewReplacer("-", "+", "_", "/").Replace(tok) + "+",
		"spaces":    " " + tok[1:],
		"version 2": func() string {
			b := append([]byte(nil), raw...)
			b[0] = 2
			return base64.RawURLEncoding.EncodeToString(b)
		}(),
	} {
		if _, _, err := f.k.ParseRefreshToken(bad); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: err = %v, want ErrInvalidToken", name, err)
		}
	}
}

func TestRefreshTokenOfAnotherSecretFails(t *testing.T) {
	t.Parallel()
	a, b := newFixture(t), newFixture(t)
	sid := uuid.New()
	tok := a.k.RefreshToken(sid, 1)
	if _, _, err := b.k.ParseRefreshToken(tok); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("token of another database's secret: err = %v, want ErrInvalidToken", err)
	}
	if b.k.RefreshToken(sid, 1) == tok {
		t.Fatal("two databases derive the same refresh token")
	}
}

// FuzzParseRefreshToken checks that no input panics and that only what
// RefreshToken made is accepted. Its seeds run with every go test.
func FuzzParseRefreshToken(f *testing.F) {
	k := &Keyring{refreshSecret: []byte("0123456789abcdef0123456789abcdef")}
	valid := k.RefreshToken(uuid.MustParse("6ba7b810-9dad-11d1-80b4-00c04fd430c8"), 42)
	for _, seed := range []string{
		"", "A", valid, valid[:len(valid)-1], valid + "A", valid + "=",
		strings.Repeat("A", len(valid)), strings.Repeat("_", len(valid)), strings.Repeat("=", len(valid)),
		strings.Repeat("\xff", len(valid)), "AQ" + valid[2:], strings.Repeat("A", 1<<16),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, token string) {
		sid, gen, err := k.ParseRefreshToken(token)
		if err != nil {
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("error does not wrap ErrInvalidToken: %v", err)
			}
			return
		}
		if k.RefreshToken(sid, gen) != token {
			t.Fatalf("accepted %q, which is not the token of (%s, %d)", token, sid, gen)
		}
	})
}
