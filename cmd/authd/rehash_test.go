package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/password"
)

// A password stored under parameters other than the hasher's (weaker ones
// from before an upgrade, here) is hashed again on the next right password,
// and the new hash is what signs in from then on.
func TestLoginRehashesAPasswordStoredUnderOtherParameters(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	in := c.start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const email, pw = "rehash@example.com", "correct horse battery staple"
	user := uuid.MustParse(c.signupVerified(t, in, email, pw, nil).str("user", "id"))

	store := eventstore.NewStore(c.dbPool(t), c.sealer(t), nil)
	stream := domain.UserStream(user)
	hashes := func() []string {
		t.Helper()
		events, err := store.Load(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range events {
			var s domain.PasswordSecret
			if len(e.Secret) > 0 && json.Unmarshal(e.Secret, &s) == nil && s.PasswordHash != "" {
				out = append(out, s.PasswordHash)
			}
		}
		return out
	}
	// What a failure prints: each hash's parameters, not its salt and key.
	params := func(hashes []string) []string {
		out := make([]string, len(hashes))
		for i, h := range hashes {
			parts := strings.SplitN(h, "$", 5)
			out[i] = strings.Join(parts[:min(4, len(parts))], "$")
		}
		return out
	}

	weak, err := password.NewHasher(password.Params{Memory: 8 * 1024, Time: 1}, 1, 0).Hash(ctx, pw)
	if err != nil {
		t.Fatal(err)
	}
	e, err := eventstore.Encode(&domain.PasswordRehashed{UserID: user, Secret: domain.PasswordSecret{PasswordHash: weak}})
	if err != nil {
		t.Fatal(err)
	}
	e.UserID = user
	if _, err := store.Append(ctx, stream, eventstore.AnyVersion, e); err != nil {
		t.Fatal(err)
	}

	login := map[string]any{"email": email, "password": pw}
	in.must(t, 200, "POST", api+"/login", "", login)
	got := hashes()
	owasp := "$argon2id$v=19$m=19456,t=2,p=1$"
	if len(got) != 3 || got[1] != weak || !strings.HasPrefix(got[2], owasp) {
		t.Fatalf("password hashes after a login with the weak one stored: %q; want the signup's, the weak one, and a new one starting %s", params(got), owasp)
	}
	in.must(t, 200, "POST", api+"/login", "", login)
	if again := hashes(); len(again) != 3 {
		t.Fatalf("a login with a current hash stored hashed again: %q", params(again))
	}
	if r := in.call(t, "POST", api+"/login", "", map[string]any{"email": email, "password": "not the password"}); r.status != 401 || r.errCode() != "invalid_credentials" {
		t.Fatalf("wrong password after the rehash = %d %s", r.status, r.raw)
	}
}
