package domain

import (
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
)

func applyAll(p *UserPasskeys, at time.Time, events []Event) {
	for _, e := range events {
		p.Apply(e, at)
	}
}

func TestPasskeysLifecycle(t *testing.T) {
	user := uuid.New()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	p := &UserPasskeys{}
	p.Apply(&UserRegistered{UserID: user}, t0) // other events only count
	cred := PasskeyCredential{ID: []byte{1, 2, 3}, PublicKey: []byte{9}, SignCount: 1}
	id := uuid.New()

	events, err := p.Add(user, id, "", uuid.MustParse("fbfc3007-154e-4ecc-8c0b-6e020557d7bd"), t0, cred)
	if err != nil {
		t.Fatal(err)
	}
	added := events[0].(*PasskeyAdded)
	if added.Name != "iCloud Keychain" || added.UserID != user || added.PasskeyID != id {
		t.Fatalf("added: %+v", added)
	}
	applyAll(p, t0, events)
	if p.Version != 2 || len(p.Passkeys) != 1 || p.Find(id) == nil || p.ByCredential([]byte{1, 2, 3}) == nil {
		t.Fatalf("after add: %+v", p)
	}
	if _, err := p.Add(user, uuid.New(), "again", uuid.Nil, t0, cred); !errors.Is(err, ErrPasskeyExists) {
		t.Fatalf("the same credential twice: %v", err)
	}
	other, _ := p.Add(user, uuid.New(), "", uuid.New(), t0, PasskeyCredential{ID: []byte{4}, PublicKey: []byte{9}})
	if other[0].(*PasskeyAdded).Name != DefaultPasskeyName {
		t.Fatalf("unknown AAGUID named %q", other[0].(*PasskeyAdded).Name)
	}

	events, err = p.Rename(user, id, "Laptop")
	if err != nil || len(events) != 1 {
		t.Fatalf("rename: %v %v", events, err)
	}
	applyAll(p, t0, events)
	if p.Find(id).Name != "Laptop" {
		t.Fatal("rename not applied")
	}
	if events, _ := p.Rename(user, id, "Laptop"); len(events) != 0 {
		t.Fatal("renaming to the same name made an event")
	}
	if _, err := p.Rename(user, uuid.New(), "x"); !errors.Is(err, ErrPasskeyNotFound) {
		t.Fatalf("rename unknown: %v", err)
	}

	t1 := t0.Add(time.Hour)
	events, err = p.Use(user, id, 2, true, false)
	if err != nil {
		t.Fatal(err)
	}
	applyAll(p, t1, events)
	if k := p.Find(id); k.Credential.SignCount != 2 || !k.LastUsedAt.Equal(t1) || !k.Credential.UserVerified {
		t.Fatalf("after use: %+v", k)
	}
	for _, count := range []uint32{2, 1, 0} {
		if _, err := p.Use(user, id, count, true, false); !errors.Is(err, ErrSignCountWentBack) {
			t.Fatalf("sign count %d after 2: %v", count, err)
		}
	}

	events, err = p.Remove(user, id)
	if err != nil {
		t.Fatal(err)
	}
	applyAll(p, t1, events)
	if p.Find(id) != nil || len(p.Passkeys) != 0 {
		t.Fatalf("after remove: %+v", p.Passkeys)
	}
	if _, err := p.Remove(user, id); !errors.Is(err, ErrPasskeyNotFound) {
		t.Fatalf("remove twice: %v", err)
	}
	if _, err := p.Use(user, id, 9, true, false); !errors.Is(err, ErrPasskeyNotFound) {
		t.Fatalf("use removed: %v", err)
	}
}

func TestSignCountRule(t *testing.T) {
	cases := []struct {
		stored, reported uint32
		ok               bool
	}{
		{0, 0, true},  // an authenticator without a counter
		{0, 1, true},  // first use
		{5, 6, true},  // moving on
		{5, 5, false}, // repeated: a clone
		{5, 4, false}, // back: a clone
		{5, 0, false}, // a counter that was there is gone
	}
	for _, c := range cases {
		if got := SignCountOK(c.stored, c.reported); got != c.ok {
			t.Errorf("SignCountOK(%d, %d) = %v", c.stored, c.reported, got)
		}
	}
}

func TestPasskeyLimitAndAMR(t *testing.T) {
	user := uuid.New()
	p := &UserPasskeys{}
	for i := range MaxPasskeys {
		events, err := p.Add(user, uuid.New(), "k", uuid.Nil, time.Now(), PasskeyCredential{ID: []byte{byte(i), 1}, PublicKey: []byte{1}})
		if err != nil {
			t.Fatal(err)
		}
		applyAll(p, time.Now(), events)
	}
	if _, err := p.Add(user, uuid.New(), "k", uuid.Nil, time.Now(), PasskeyCredential{ID: []byte{255, 255}, PublicKey: []byte{1}}); !errors.Is(err, ErrTooManyPasskeys) {
		t.Fatalf("over the limit: %v", err)
	}
	if got := PasskeyAMR(PasskeyCredential{}); len(got) != 2 || got[0] != "hwk" || got[1] != "user" {
		t.Fatalf("device-bound amr %v", got)
	}
	if got := PasskeyAMR(PasskeyCredential{BackupEligible: true}); len(got) != 1 || got[0] != "user" {
		t.Fatalf("synced amr %v", got)
	}
}
