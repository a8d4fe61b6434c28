package testenv

import (
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
