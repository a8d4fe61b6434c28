// Package softauthn is a software WebAuthn authenticator and client for
// tests: it answers the options authd hands out the way a browser with a
// CTAP2 authenticator would, with real ES256 keys, authenticator data,
// "none" attestation objects in CBOR and clientDataJSON, so the relying
// party code under test runs its full verification. Every part of a
// response is plain data the test can spoil on purpose.
package softauthn

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/fxamacker/cbor/v2"
	"github.com/google/uuid"
)

// Authenticator flags (WebAuthn §6.1).
const (
	flagUP = 0x01
	flagUV = 0x04
	flagBE = 0x08
	flagBS = 0x10
	flagAT = 0x40
)

// coseES256 is COSE algorithm -7: ECDSA P-256 with SHA-256.
const coseES256 = -7

// Authenticator holds discoverable ES256 credentials. Its fields say what it
// reports; set them before use.
type Authenticator struct {
	AAGUID uuid.UUID
	// NoUserVerification leaves the UV flag unset, as a security key without
	// a PIN does. By default the user is verified (biometric, PIN), as
	// browsers' platform authenticators do.
	NoUserVerification bool
	// BackupEligible and BackedUp set BE and BS: a synced passkey.
	BackupEligible, BackedUp bool
	// NoCounter keeps every sign count at 0, as some passkey providers do.
	NoCounter bool
	// Transports are reported at registration.
	Transports []string

	mu    sync.Mutex
	creds []*Credential
}

// Credential is a discoverable credential the authenticator holds.
type Credential struct {
	ID         []byte
	RPID       string
	UserHandle []byte
	SignCount  uint32
	key        *ecdsa.PrivateKey
}

// Client is the browser side: the origin the page runs at. RPID, when set,
// is used instead of the one the options name, to act out a page or
// authenticator that got it wrong.
type Client struct {
	Origin string
	RPID   string
}

// RegistrationResponse is a PublicKeyCredential from credentials.create, as
// its toJSON() shapes it.
type RegistrationResponse struct {
	ID                      string         `json:"id"`
	RawID                   string         `json:"rawId"`
	Type                    string         `json:"type"`
	AuthenticatorAttachment string         `json:"authenticatorAttachment,omitempty"`
	ClientExtensionResults  map[string]any `json:"clientExtensionResults"`
	Response                struct {
		ClientDataJSON    string   `json:"clientDataJSON"`
		AttestationObject string   `json:"attestationObject"`
		Transports        []string `json:"transports,omitempty"`
	} `json:"response"`
}

// AssertionResponse is a PublicKeyCredential from credentials.get, as its
// toJSON() shapes it.
type AssertionResponse struct {
	ID                      string         `json:"id"`
	RawID                   string         `json:"rawId"`
	Type                    string         `json:"type"`
	AuthenticatorAttachment string         `json:"authenticatorAttachment,omitempty"`
	ClientExtensionResults  map[string]any `json:"clientExtensionResults"`
	Response                struct {
		ClientDataJSON    string `json:"clientDataJSON"`
		AuthenticatorData string `json:"authenticatorData"`
		Signature         string `json:"signature"`
		UserHandle        string `json:"userHandle,omitempty"`
	} `json:"response"`
}

// ClientData is the collected client data (WebAuthn §5.8.1), in the order
// browsers serialize it.
type ClientData struct {
	Type        string `json:"type"`
	Challenge   string `json:"challenge"`
	Origin      string `json:"origin"`
	CrossOrigin bool   `json:"crossOrigin"`
}

type descriptor struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

// creationOptions is what Register reads of {"publicKey": ...}.
type creationOptions struct {
	PublicKey struct {
		RP struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"rp"`
		User struct {
			ID string `json:"id"`
		} `json:"user"`
		Challenge        string              `json:"challenge"`
		PubKeyCredParams []struct{ Alg int } `json:"pubKeyCredParams"`
		Exclude          []descriptor        `json:"excludeCredentials"`
		Selection        struct {
			ResidentKey      string `json:"residentKey"`
			UserVerification string `json:"userVerification"`
		} `json:"authenticatorSelection"`
	} `json:"publicKey"`
}

// requestOptions is what Login reads of {"publicKey": ...}.
type requestOptions struct {
	PublicKey struct {
		Challenge string       `json:"challenge"`
		RPID      string       `json:"rpId"`
		Allow     []descriptor `json:"allowCredentials"`
	} `json:"publicKey"`
}

// ErrExcluded is Register's answer when the authenticator already holds a
// credential the options exclude (the browser's InvalidStateError).
var ErrExcluded = errors.New("softauthn: the authenticator already holds an excluded credential")

// ErrNoCredential is Login's answer when no credential fits.
var ErrNoCredential = errors.New("softauthn: no credential for this relying party")

var b64 = base64.RawURLEncoding

// Register answers PublicKeyCredentialCreationOptions JSON ({"publicKey":
// ...}) with a new discoverable ES256 credential.
func (a *Authenticator) Register(options []byte, client Client) (*RegistrationResponse, *Credential, error) {
	var o creationOptions
	if err := json.Unmarshal(options, &o); err != nil {
		return nil, nil, fmt.Errorf("softauthn: creation options: %w", err)
	}
	pk := o.PublicKey
	es256 := false
	for _, p := range pk.PubKeyCredParams {
		es256 = es256 || p.Alg == coseES256
	}
	if !es256 {
		return nil, nil, errors.New("softauthn: the options do not accept ES256")
	}
	rpID := pk.RP.ID
	if client.RPID != "" {
		rpID = client.RPID
	}
	userHandle, err := b64.DecodeString(pk.User.ID)
	if err != nil {
		return nil, nil, fmt.Errorf("softauthn: user.id: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, ex := range pk.Exclude {
		for _, c := range a.creds {
			if ex.ID == b64.EncodeToString(c.ID) && c.RPID == rpID {
				return nil, nil, ErrExcluded
			}
		}
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	cred := &Credential{ID: make([]byte, 32), RPID: rpID, UserHandle: userHandle, key: key}
	if _, err := rand.Read(cred.ID); err != nil {
		return nil, nil, err
	}
	coseKey, err := cosePublicKey(&key.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	// Attested credential data: AAGUID, credential id length and id, key.
	attested := append(append([]byte(nil), a.AAGUID[:]...), byte(len(cred.ID)>>8), byte(len(cred.ID)))
	attested = append(attested, cred.ID...)
	attested = append(attested, coseKey...)
	authData := a.authData(rpID, flagAT, cred.SignCount, attested)

	attObj, err := ctap2.Marshal(map[string]any{"fmt": "none", "attStmt": map[string]any{}, "authData": authData})
	if err != nil {
		return nil, nil, err
	}
	clientData, err := json.Marshal(ClientData{Type: "webauthn.create", Challenge: pk.Challenge, Origin: client.Origin})
	if err != nil {
		return nil, nil, err
	}
	a.creds = append(a.creds, cred)

	r := &RegistrationResponse{
		ID: b64.EncodeToString(cred.ID), RawID: b64.EncodeToString(cred.ID), Type: "public-key",
		AuthenticatorAttachment: "platform", ClientExtensionResults: map[string]any{},
	}
	r.Response.ClientDataJSON = b64.EncodeToString(clientData)
	r.Response.AttestationObject = b64.EncodeToString(attObj)
	r.Response.Transports = a.Transports
	return r, cred, nil
}

// Login answers PublicKeyCredentialRequestOptions JSON ({"publicKey": ...})
// with an assertion by the newest credential for the relying party that the
// options allow (any, for a discoverable login), or by use when not nil.
// Each assertion counts one more signature unless NoCounter is set.
func (a *Authenticator) Login(options []byte, client Client, use *Credential) (*AssertionResponse, error) {
	var o requestOptions
	if err := json.Unmarshal(options, &o); err != nil {
		return nil, fmt.Errorf("softauthn: request options: %w", err)
	}
	rpID := o.PublicKey.RPID
	if rpID == "" {
		return nil, errors.New("softauthn: the options name no rpId")
	}
	if client.RPID != "" {
		rpID = client.RPID
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	cred := use
	if cred == nil {
		for i := len(a.creds) - 1; i >= 0 && cred == nil; i-- {
			c := a.creds[i]
			if c.RPID == rpID && allowed(o.PublicKey.Allow, c.ID) {
				cred = c
			}
		}
	}
	if cred == nil {
		return nil, ErrNoCredential
	}
	if !a.NoCounter {
		cred.SignCount++
	}
	authData := a.authData(rpID, 0, cred.SignCount, nil)
	clientData, err := json.Marshal(ClientData{Type: "webauthn.get", Challenge: o.PublicKey.Challenge, Origin: client.Origin})
	if err != nil {
		return nil, err
	}
	sig, err := sign(cred.key, authData, clientData)
	if err != nil {
		return nil, err
	}
	r := &AssertionResponse{
		ID: b64.EncodeToString(cred.ID), RawID: b64.EncodeToString(cred.ID), Type: "public-key",
		AuthenticatorAttachment: "platform", ClientExtensionResults: map[string]any{},
	}
	r.Response.ClientDataJSON = b64.EncodeToString(clientData)
	r.Response.AuthenticatorData = b64.EncodeToString(authData)
	r.Response.Signature = b64.EncodeToString(sig)
	r.Response.UserHandle = b64.EncodeToString(cred.UserHandle)
	return r, nil
}

// Credentials are the credentials the authenticator holds, oldest first.
// Changing one's SignCount changes what its next assertion reports.
func (a *Authenticator) Credentials() []*Credential {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*Credential(nil), a.creds...)
}

// Sign signs authenticator data and client data with a credential's key,
// as an assertion does: for tests that assemble an assertion by hand.
func (c *Credential) Sign(authData, clientDataJSON []byte) ([]byte, error) {
	return sign(c.key, authData, clientDataJSON)
}

// AuthData builds assertion authenticator data for rpID with the
// authenticator's flags and the given sign count.
func (a *Authenticator) AuthData(rpID string, signCount uint32) []byte {
	return a.authData(rpID, 0, signCount, nil)
}

func allowed(allow []descriptor, id []byte) bool {
	if len(allow) == 0 {
		return true
	}
	for _, d := range allow {
		if d.ID == b64.EncodeToString(id) {
			return true
		}
	}
	return false
}

// authData is rpIdHash, flags, the big-endian sign count, then extra
// (attested credential data at registration).
func (a *Authenticator) authData(rpID string, flags byte, signCount uint32, extra []byte) []byte {
	rpHash := sha256.Sum256([]byte(rpID))
	flags |= flagUP
	if !a.NoUserVerification {
		flags |= flagUV
	}
	if a.BackupEligible {
		flags |= flagBE
	}
	if a.BackedUp {
		flags |= flagBS
	}
	var b bytes.Buffer
	b.Write(rpHash[:])
	b.WriteByte(flags)
	_ = binary.Write(&b, binary.BigEndian, signCount)
	b.Write(extra)
	return b.Bytes()
}

func sign(key *ecdsa.PrivateKey, authData, clientDataJSON []byte) ([]byte, error) {
	cdHash := sha256.Sum256(clientDataJSON)
	digest := sha256.Sum256(append(append([]byte(nil), authData...), cdHash[:]...))
	return ecdsa.SignASN1(rand.Reader, key, digest[:])
}

// cosePublicKey is the EC2 COSE_Key of a P-256 key (RFC 9053): kty 2,
// alg -7, crv 1 (P-256), x and y.
func cosePublicKey(pub *ecdsa.PublicKey) ([]byte, error) {
	ecdhKey, err := pub.ECDH()
	if err != nil {
		return nil, err
	}
	point := ecdhKey.Bytes() // 0x04 || x || y
	return ctap2.Marshal(map[int]any{1: 2, 3: coseES256, -1: 1, -2: point[1:33], -3: point[33:65]})
}

// ctap2 encodes CBOR the way CTAP2 authenticators must (canonical).
var ctap2 = func() cbor.EncMode {
	m, err := cbor.CTAP2EncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return m
}()

// Tamper flips one bit in the middle of a base64url value.
func Tamper(s string) string {
	raw, err := b64.DecodeString(s)
	if err != nil || len(raw) == 0 {
		return s + "A"
	}
	raw[len(raw)/2] ^= 0x01
	return b64.EncodeToString(raw)
}

// JSON marshals a response for a request body.
func JSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
