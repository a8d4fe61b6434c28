package domain

import (
	"bytes"
	"errors"
	"time"

	"github.com/google/uuid"
)

// Event types of a user's passkeys. They live on the user's stream: adding,
// renaming and removing a passkey are decisions about the account, and a
// passkey sign-in updates the sign count that the next one is checked against
// (see Kinds).
const (
	TypePasskeyAdded   = "PasskeyAdded"
	TypePasskeyRenamed = "PasskeyRenamed"
	TypePasskeyUsed    = "PasskeyUsed"
	TypePasskeyRemoved = "PasskeyRemoved"
)

// MaxPasskeys bounds how many passkeys one account may hold: every one is
// loaded with the account and listed in each registration's exclude list.
const MaxPasskeys = 50

// DefaultPasskeyName names a passkey whose authenticator is not known.
const DefaultPasskeyName = "Passkey"

// Errors of the passkey decisions.
var (
	ErrPasskeyNotFound = errors.New("no such passkey")
	ErrPasskeyExists   = errors.New("this passkey is already registered")
	ErrTooManyPasskeys = errors.New("too many passkeys")
)

// PasskeyCredential is what verifies a passkey's sign-ins: the WebAuthn
// credential record. None of it is secret (the private key never leaves the
// authenticator), but the credential id and public key identify a person's
// authenticator across sites that share it, so PasskeyAdded keeps them in the
// sealed part that is never published.
type PasskeyCredential struct {
	ID                []byte   `json:"id"`
	PublicKey         []byte   `json:"public_key"` // COSE_Key
	SignCount         uint32   `json:"sign_count"`
	Transports        []string `json:"transports,omitempty"`
	Attachment        string   `json:"attachment,omitempty"`
	AttestationType   string   `json:"attestation_type,omitempty"`
	AttestationFormat string   `json:"attestation_format,omitempty"`
	UserPresent       bool     `json:"user_present"`
	UserVerified      bool     `json:"user_verified"`
	BackupEligible    bool     `json:"backup_eligible"`
	BackupState       bool     `json:"backup_state"`
}

// PasskeyAdded registers a passkey with the account. The public part says
// which passkey and what it is called; the credential record is sealed.
type PasskeyAdded struct {
	PasskeyID uuid.UUID `json:"passkey_id"`
	UserID    uuid.UUID `json:"user_id"`
	Name      string    `json:"name" personal:"true"`
	AAGUID    uuid.UUID `json:"aaguid"`
	CreatedAt time.Time `json:"created_at"`

	Credential PasskeyCredential `json:"-"`
}

func (e *PasskeyAdded) Secrets() any { return &e.Credential }

// PasskeyRenamed gives a passkey a new name.
type PasskeyRenamed struct {
	PasskeyID uuid.UUID `json:"passkey_id"`
	UserID    uuid.UUID `json:"user_id"`
	Name      string    `json:"name" personal:"true"`
}

// PasskeyUsed records a verified passkey sign-in and the authenticator's
// state it reported: the sign count the next sign-in must exceed.
type PasskeyUsed struct {
	PasskeyID    uuid.UUID `json:"passkey_id"`
	UserID       uuid.UUID `json:"user_id"`
	SignCount    uint32    `json:"sign_count"`
	UserVerified bool      `json:"user_verified"`
	BackupState  bool      `json:"backup_state"`
}

// PasskeyRemoved takes a passkey off the account: it can no longer sign in.
type PasskeyRemoved struct {
	PasskeyID uuid.UUID `json:"passkey_id"`
	UserID    uuid.UUID `json:"user_id"`
}

// Passkey is one of a user's passkeys on the write side.
type Passkey struct {
	ID         uuid.UUID
	Name       string
	AAGUID     uuid.UUID
	CreatedAt  time.Time
	LastUsedAt time.Time // zero until first used
	Credential PasskeyCredential
}

// UserPasskeys is the passkey part of a user's account, rebuilt from the
// user's stream. Version counts every event of the stream, so a decision
// made here appends at the version the whole stream was seen at.
type UserPasskeys struct {
	UserID   uuid.UUID
	Passkeys []Passkey // in the order they were added
	Version  int64
}

// Apply folds one event of the user's stream; it ignores the events that
// are not about passkeys but counts them.
func (p *UserPasskeys) Apply(e Event, at time.Time) {
	p.Version++
	switch e := e.(type) {
	case *PasskeyAdded:
		p.UserID = e.UserID
		created := e.CreatedAt
		if created.IsZero() {
			created = at
		}
		p.Passkeys = append(p.Passkeys, Passkey{
			ID: e.PasskeyID, Name: e.Name, AAGUID: e.AAGUID, CreatedAt: created, Credential: e.Credential,
		})
	case *PasskeyRenamed:
		if k := p.Find(e.PasskeyID); k != nil {
			k.Name = e.Name
		}
	case *PasskeyUsed:
		if k := p.Find(e.PasskeyID); k != nil {
			k.LastUsedAt = at
			k.Credential.SignCount = e.SignCount
			k.Credential.BackupState = e.BackupState
			k.Credential.UserVerified = k.Credential.UserVerified || e.UserVerified
		}
	case *PasskeyRemoved:
		for i := range p.Passkeys {
			if p.Passkeys[i].ID == e.PasskeyID {
				p.Passkeys = append(p.Passkeys[:i:i], p.Passkeys[i+1:]...)
				break
			}
		}
	}
}

// Find returns the passkey with the given id, or nil.
func (p *UserPasskeys) Find(id uuid.UUID) *Passkey {
	for i := range p.Passkeys {
		if p.Passkeys[i].ID == id {
			return &p.Passkeys[i]
		}
	}
	return nil
}

// ByCredential returns the passkey with the given WebAuthn credential id, or nil.
func (p *UserPasskeys) ByCredential(credentialID []byte) *Passkey {
	for i := range p.Passkeys {
		if bytes.Equal(p.Passkeys[i].Credential.ID, credentialID) {
			return &p.Passkeys[i]
		}
	}
	return nil
}

// Add decides to register a verified credential under a new passkey id.
func (p *UserPasskeys) Add(user, id uuid.UUID, name string, aaguid uuid.UUID, at time.Time, cred PasskeyCredential) ([]Event, error) {
	if len(cred.ID) == 0 || len(cred.PublicKey) == 0 {
		return nil, errors.New("passkey credential without an id or a public key")
	}
	if p.ByCredential(cred.ID) != nil {
		return nil, ErrPasskeyExists
	}
	if len(p.Passkeys) >= MaxPasskeys {
		return nil, ErrTooManyPasskeys
	}
	if name == "" {
		name = PasskeyNameFor(aaguid)
	}
	return []Event{&PasskeyAdded{
		PasskeyID: id, UserID: user, Name: name, AAGUID: aaguid, CreatedAt: at.UTC(), Credential: cred,
	}}, nil
}

// Rename decides to rename one of the user's passkeys; the same name again
// changes nothing.
func (p *UserPasskeys) Rename(user, id uuid.UUID, name string) ([]Event, error) {
	k := p.Find(id)
	if k == nil {
		return nil, ErrPasskeyNotFound
	}
	if k.Name == name {
		return nil, nil
	}
	return []Event{&PasskeyRenamed{PasskeyID: id, UserID: user, Name: name}}, nil
}

// Remove decides to remove one of the user's passkeys.
func (p *UserPasskeys) Remove(user, id uuid.UUID) ([]Event, error) {
	if p.Find(id) == nil {
		return nil, ErrPasskeyNotFound
	}
	return []Event{&PasskeyRemoved{PasskeyID: id, UserID: user}}, nil
}

// SignCountOK says whether an authenticator's reported sign count may follow
// the stored one (WebAuthn §7.2 step 21): it must grow, unless the
// authenticator keeps no counter at all (both zero). Anything else means two
// copies of the key may exist: a cloned authenticator.
func SignCountOK(stored, reported uint32) bool {
	return reported > stored || reported == 0 && stored == 0
}

// Use decides to record a verified sign-in with a passkey, refusing a sign
// count that does not move forward.
func (p *UserPasskeys) Use(user, id uuid.UUID, signCount uint32, userVerified, backupState bool) ([]Event, error) {
	k := p.Find(id)
	if k == nil {
		return nil, ErrPasskeyNotFound
	}
	if !SignCountOK(k.Credential.SignCount, signCount) {
		return nil, ErrSignCountWentBack
	}
	return []Event{&PasskeyUsed{PasskeyID: id, UserID: user, SignCount: signCount, UserVerified: userVerified, BackupState: backupState}}, nil
}

// ErrSignCountWentBack means an authenticator reported a sign count at or
// below the stored one: possibly a cloned authenticator.
var ErrSignCountWentBack = errors.New("passkey sign count did not increase: possible cloned authenticator")

// PasskeyAMR is how a passkey sign-in authenticated, in RFC 8176 values:
// "hwk" (proof of possession of a hardware-secured key) when the credential
// is device-bound, i.e. not backup eligible, so its private key never leaves
// the authenticator; and always "user" (a user presence test), which every
// WebAuthn assertion authd accepts carries (the UP flag is required). A
// synced passkey's key lives in a passkey provider, so it claims no "hwk".
func PasskeyAMR(cred PasskeyCredential) []string {
	if !cred.BackupEligible {
		return []string{"hwk", "user"}
	}
	return []string{"user"}
}

// passkeyNames are the display names of well-known passkey providers and
// authenticators by AAGUID (the public registry kept by the passkey
// developer community). Under "none" attestation many authenticators report
// the all-zero AAGUID, which is not here.
var passkeyNames = map[uuid.UUID]string{
	uuid.MustParse("fbfc3007-154e-4ecc-8c0b-6e020557d7bd"): "iCloud Keychain",
	uuid.MustParse("dd4ec289-e01d-41c9-bb89-70fa845d4bf2"): "iCloud Keychain (Managed)",
	uuid.MustParse("ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4"): "Google Password Manager",
	uuid.MustParse("adce0002-35bc-c60a-648b-0b25f1f05503"): "Chrome on Mac",
	uuid.MustParse("771b48fd-d3d4-4f74-9232-fc157ab0507a"): "Edge on Mac",
	uuid.MustParse("08987058-cadc-4b81-b6e1-30de50dcbe96"): "Windows Hello",
	uuid.MustParse("9ddd1817-af5a-4672-a2b9-3e3dd95000a9"): "Windows Hello",
	uuid.MustParse("6028b017-b1d4-4c02-b4b3-afcdafc96bb2"): "Windows Hello",
	uuid.MustParse("bada5566-a7aa-401f-bd96-45619a55120d"): "1Password",
	uuid.MustParse("d548826e-79b4-db40-a3d8-11116f7e8349"): "Bitwarden",
	uuid.MustParse("531126d6-e717-415c-9320-3d9aa6981239"): "Dashlane",
	uuid.MustParse("b84e4048-15dc-4dd0-8640-f4f60813c8af"): "NordPass",
	uuid.MustParse("53414d53-554e-4700-0000-000000000000"): "Samsung Pass",
}

// PasskeyNameFor is the default name of a passkey from its authenticator's
// AAGUID: the provider's name when known, else DefaultPasskeyName.
func PasskeyNameFor(aaguid uuid.UUID) string {
	if n, ok := passkeyNames[aaguid]; ok {
		return n
	}
	return DefaultPasskeyName
}
