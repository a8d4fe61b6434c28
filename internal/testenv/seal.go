package testenv

import (
	"bytes"
	"crypto/rand"
	"testing"

	"github.com/authd/authd/internal/seal"
)

// Sealer returns a sealer under a master key of its own, drawn at random.
func Sealer(t testing.TB) *seal.Sealer {
	t.Helper()
	key := make([]byte, seal.KeySize)
	_, _ = rand.Read(key)
	s, err := seal.New(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// KeyRotation is a master key rotation as tests stage it: two fixed keys,
// and a sealer on the old key alone, on the new key first and the old after
// it, and on the new key alone.
type KeyRotation struct {
	Old, New               []byte
	Before, Rotated, After *seal.Sealer
}

// Rotation returns a KeyRotation.
func Rotation(t testing.TB) KeyRotation {
	t.Helper()
	r := KeyRotation{Old: bytes.Repeat([]byte{1}, seal.KeySize), New: bytes.Repeat([]byte{2}, seal.KeySize)}
	for _, s := range []struct {
		to   **seal.Sealer
		keys [][]byte
	}{{&r.Before, [][]byte{r.Old}}, {&r.Rotated, [][]byte{r.New, r.Old}}, {&r.After, [][]byte{r.New}}} {
		var err error
		if *s.to, err = seal.New(s.keys...); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// ResealReport is the report of table among reports; the test fails when
// there is none.
func ResealReport(t testing.TB, reports []seal.ResealReport, table string) seal.ResealReport {
	t.Helper()
	for _, r := range reports {
		if r.Table == table {
			return r
		}
	}
	t.Fatalf("no report of %s in %+v", table, reports)
	return seal.ResealReport{}
}
