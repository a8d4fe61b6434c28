package domain

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestGoogleSignupUserHasNoPasswordAndLinks(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	id, tenant := uuid.New(), uuid.New()
	g := &GoogleUser{}
	reg := NewGoogleUser(id, tenant, "ada@example.com", "Ada")
	g.Apply(reg, t0)
	if g.ID != id || g.TenantID != tenant || g.PasswordHash != "" || g.EmailVerified || g.Version != 1 {
		t.Fatalf("after UserRegistered: %+v", g)
	}
	link, err := g.LinkGoogle("sub-1")
	if err != nil || link == nil || link.UserID != id || link.Subject != "sub-1" {
		t.Fatalf("LinkGoogle = %+v, %v", link, err)
	}
	g.Apply(link, t0)
	if g.GoogleSubject != "sub-1" || g.Version != 2 {
		t.Fatalf("after GoogleLinked: %+v", g)
	}
	// The subject is public: the whole event is in its JSON.
	b, _ := json.Marshal(link)
	if string(b) != `{"user_id":"`+id.String()+`","subject":"sub-1"}` {
		t.Fatalf("GoogleLinked JSON %s", b)
	}
}

func TestLinkGoogleOnceAndNeverToAnother(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	g := &GoogleUser{}
	g.Apply(&UserRegistered{UserID: uuid.New(), Email: "ada@example.com"}, t0)
	g.Apply(&EmailVerified{UserID: g.ID}, t0)
	g.Apply(&GoogleLinked{UserID: g.ID, Subject: "sub-1"}, t0)
	if link, err := g.LinkGoogle("sub-1"); link != nil || err != nil {
		t.Fatalf("linking the same subject again = %+v, %v; want nothing", link, err)
	}
	if link, err := g.LinkGoogle("sub-2"); link != nil || !errors.Is(err, ErrLinkedToOtherGoogle) {
		t.Fatalf("linking another subject = %+v, %v; want ErrLinkedToOtherGoogle", link, err)
	}
}

func TestTakeOverDropsAnUnverifiedPassword(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	g := &GoogleUser{}
	reg := &UserRegistered{UserID: uuid.New(), Email: "ada@example.com", Name: "Mallory", TenantName: "Mallory Inc"}
	reg.Secret.PasswordHash = "$argon2id$someone-else's"
	g.Apply(reg, t0)
	events := g.TakeOver("Ada")
	if len(events) != 1 {
		t.Fatalf("TakeOver of an unverified account = %v", events)
	}
	for _, e := range events {
		g.Apply(e, t0)
	}
	if g.PasswordHash != "" || g.Name != "Ada" || g.TenantName != "" {
		t.Fatalf("after the takeover: password %q, name %q, tenant %q", g.PasswordHash, g.Name, g.TenantName)
	}

	g.Apply(&EmailVerified{UserID: g.ID}, t0)
	g.Apply(&PasswordReset{UserID: g.ID, At: t0}, t0)
	if events := g.TakeOver("Ada"); events != nil {
		t.Fatalf("TakeOver of a verified account = %v; want none (it keeps its password)", events)
	}
}
