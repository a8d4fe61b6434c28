package seal

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// DevKey returns the development master key kept in dir, creating it on first
// use. It exists so `go run ./cmd/authd` works with no configuration; created
// reports whether this call made a new key, which the caller should warn about.
func DevKey(dir string) (key []byte, created bool, err error) {
	path := filepath.Join(dir, "master.key")
	b, err := os.ReadFile(path)
	if err == nil {
		k, err := ParseKey(strings.TrimSpace(string(b)))
		if err != nil {
			return nil, false, fmt.Errorf("dev master key %s: %w", path, err)
		}
		return k, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("read dev master key: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("create data dir for the dev master key: %w", err)
	}
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, false, fmt.Errorf("generate dev master key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) { // another instance made it first
		return DevKey(dir)
	}
	if err != nil {
		return nil, false, fmt.Errorf("write dev master key: %w", err)
	}
	if _, err := f.WriteString(base64.StdEncoding.EncodeToString(k) + "\n"); err != nil {
		f.Close()
		return nil, false, fmt.Errorf("write dev master key: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, false, fmt.Errorf("write dev master key: %w", err)
	}
	return k, true, nil
}
