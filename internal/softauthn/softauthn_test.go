package softauthn

import (
	"encoding/json"
	"testing"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
	"github.com/google/uuid"
)

type user struct {
	id    []byte
	creds []webauthn.Credential
}

func (u *user) WebAuthnID() []byte                         { return u.id }
func (u *user) WebAuthnName() string                       { return "ada@example.com" }
func (u *user) WebAuthnDisplayName() string                { return "Ada" }
func (u *user) WebAuthnCredentials() []webauthn.Credential { return u.creds }

// TestAgainstGoWebAuthn checks the authenticator against an independent
// relying party implementation: what it makes verifies, and a spoiled
// signature does not.
func TestAgainstGoWebAuthn(t *testing.T) {
	rp, err := webauthn.New(&webauthn.Config{RPID: "localhost", RPDisplayName: "test", RPOrigins: []string{"http://localhost:8080"}})
	if err != nil {
		t.Fatal(err)
	}
	u := &user{id: []byte("0123456789abcdef")}
	auth := &Authenticator{AAGUID: uuid.New(), Transports: []string{"internal"}}
	client := Client{Origin: "http://localhost:8080"}

	creation, session, err := rp.BeginRegistration(u)
	if err != nil {
		t.Fatal(err)
	}
	reg, _, err := auth.Register(JSON(creation), client)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := protocol.ParseCredentialCreationResponseBytes(JSON(reg))
	if err != nil {
		t.Fatal(err)
	}
	cred, err := rp.CreateCredential(u, *session, parsed)
	if err != nil {
		t.Fatalf("registration does not verify: %v", err)
	}
	if got, _ := uuid.FromBytes(cred.Authenticator.AAGUID); got != auth.AAGUID || !cred.Flags.UserVerified || cred.Flags.BackupEligible {
		t.Fatalf("credential: %+v", cred)
	}
	u.creds = append(u.creds, *cred)

	handler := func(rawID, handle []byte) (webauthn.User, error) { return u, nil }
	for i, spoil := range []bool{false, true} {
		assertion, session, err := rp.BeginDiscoverableLogin()
		if err != nil {
			t.Fatal(err)
		}
		resp, err := auth.Login(JSON(assertion), client, nil)
		if err != nil {
			t.Fatal(err)
		}
		if spoil {
			resp.Response.Signature = Tamper(resp.Response.Signature)
		}
		var check map[string]any
		if err := json.Unmarshal(JSON(resp), &check); err != nil {
			t.Fatal(err)
		}
		parsed, err := protocol.ParseCredentialRequestResponseBytes(JSON(resp))
		if err != nil {
			t.Fatal(err)
		}
		_, got, err := rp.ValidatePasskeyLogin(handler, *session, parsed)
		if spoil {
			if err == nil {
				t.Fatal("a spoiled signature verified")
			}
			continue
		}
		if err != nil {
			t.Fatalf("login %d does not verify: %v", i, err)
		}
		if got.Authenticator.SignCount != 1 || got.Authenticator.CloneWarning {
			t.Fatalf("sign count after one login: %+v", got.Authenticator)
		}
	}
}
