package seal

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
)

func key(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpenRoundTrip(t *testing.T) {
	s, err := New(key(t))
	if err != nil {
		t.Fatal(err)
	}
	kid, sealed, err := s.Seal([]byte("hunter2"), []byte("event-1"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("hunter2")) {
		t.Fatal("sealed value contains the plaintext")
	}
	pt, err := s.Open(kid, sealed, []byte("event-1"))
	if err != nil || string(pt) != "hunter2" {
		t.Fatalf("Open = %q, %v", pt, err)
	}
	if _, err := s.Open(kid, sealed, []byte("event-2")); err == nil {
		t.Fatal("a sealed value opened under another context")
	}
	sealed[len(sealed)-1] ^= 1
	if _, err := s.Open(kid, sealed, []byte("event-1")); err == nil {
		t.Fatal("a tampered sealed value opened")
	}
}

func TestRotationKeepsOldKeysOpening(t *testing.T) {
	oldKey, newKey := key(t), key(t)
	old, _ := New(oldKey)
	kid, sealed, _ := old.Seal([]byte("secret"), nil)

	rotated, err := New(newKey, oldKey)
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := rotated.Open(kid, sealed, nil); err != nil || string(pt) != "secret" {
		t.Fatalf("old value after rotation: %q, %v", pt, err)
	}
	newKid, _, _ := rotated.Seal([]byte("x"), nil)
	if newKid != KeyID(newKey) {
		t.Fatal("rotated sealer does not seal with the new key")
	}
	if _, err := old.Open(newKid, sealed, nil); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("want ErrUnknownKey, got %v", err)
	}
}

func TestNewRejectsBadKeys(t *testing.T) {
	if _, err := New(); err == nil {
		t.Fatal("no key accepted")
	}
	if _, err := New([]byte("short")); err == nil {
		t.Fatal("short key accepted")
	}
	if _, err := ParseKey("bm90IDMyIGJ5dGVz"); err == nil {
		t.Fatal("a 12-byte key parsed")
	}
}

func TestDevKeyIsCreatedOnceAndKept(t *testing.T) {
	dir := t.TempDir() + "/data"
	k1, created, err := DevKey(dir)
	if err != nil || !created || len(k1) != KeySize {
		t.Fatalf("first DevKey = %d bytes, created %v, %v", len(k1), created, err)
	}
	k2, created, err := DevKey(dir)
	if err != nil || created || !bytes.Equal(k1, k2) {
		t.Fatalf("second DevKey: created %v, same %v, %v", created, bytes.Equal(k1, k2), err)
	}
}
