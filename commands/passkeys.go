package commands

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
	"github.com/google/uuid"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/ceremony"
	"github.com/authd/authd/internal/tokens"
	"github.com/authd/authd/projections"
)

// PasskeyConfig is what the passkey commands need beyond Deps.
type PasskeyConfig struct {
	// WebAuthn is the relying party (RP id, display name, origins). Nil
	// turns passkeys off: their endpoints answer not found.
	WebAuthn *webauthn.WebAuthn
	// Ceremonies keeps each ceremony's state between its two steps.
	Ceremonies Ceremonies
	// CeremonyTTL is how long a client has between the options and the
	// credential; DefaultCeremonyTTL when zero.
	CeremonyTTL time.Duration
}

// Passkeys registers, lists, renames and removes passkeys, and signs in
// with them.
type Passkeys struct {
	*core
	webAuthn    *webauthn.WebAuthn
	ceremonies  Ceremonies
	ceremonyTTL time.Duration
	// sessions opens the session a passkey sign-in earns.
	sessions *Sessions
}

// DefaultCeremonyTTL is how long a WebAuthn ceremony may take by default.
const DefaultCeremonyTTL = 5 * time.Minute

// Ceremonies keeps WebAuthn ceremony state server-side, short-lived and
// single use (ceremony.Store).
type Ceremonies interface {
	// Put stores state under a challenge for user (uuid.Nil: a login).
	Put(ctx context.Context, kind ceremony.Kind, challenge string, user uuid.UUID, state []byte, ttl time.Duration) error
	// Take removes and returns a live ceremony; ok is false when none is.
	Take(ctx context.Context, kind ceremony.Kind, challenge string, user uuid.UUID) (state []byte, ok bool, err error)
}

// Errors of the passkey sign-in, which the HTTP edge maps to API codes.
var (
	// ErrPasskeyChallenge: the login's challenge is unknown, expired or used.
	ErrPasskeyChallenge = errors.New("unknown, expired or already used passkey challenge")
	// ErrPasskeyRejected: the credential did not verify (unknown passkey,
	// signature, origin, RP id, user handle or sign count).
	ErrPasskeyRejected = errors.New("the passkey could not be verified")
)

// passkeyScope is the write-side unique key of a credential: key is the
// base64url credential id, owner the user id. It is how a sign-in finds the
// account of a credential, and what keeps one credential on one account.
const passkeyScope = "passkey"

// Passkey is a passkey as the API shows it.
type Passkey struct {
	ID         uuid.UUID
	Name       string
	CreatedAt  time.Time
	LastUsedAt *time.Time
}

func passkeyView(k *domain.Passkey) Passkey {
	p := Passkey{ID: k.ID, Name: k.Name, CreatedAt: k.CreatedAt.UTC()}
	if !k.LastUsedAt.IsZero() {
		t := k.LastUsedAt.UTC()
		p.LastUsedAt = &t
	}
	return p
}

// passkeyAccount is a user and their passkeys, rebuilt from the one user stream.
type passkeyAccount struct {
	user     *domain.User
	passkeys *domain.UserPasskeys
}

func (a passkeyAccount) Apply(e domain.Event, at time.Time) {
	a.user.Apply(e, at)
	a.passkeys.Apply(e, at)
}

// StreamVersion is the version of the user's stream: the user and the
// passkeys both count every event of it.
func (a passkeyAccount) StreamVersion() int64 { return a.passkeys.Version }

func (a *Passkeys) loadPasskeyAccount(ctx context.Context, id uuid.UUID) (passkeyAccount, error) {
	acc := passkeyAccount{user: &domain.User{}, passkeys: &domain.UserPasskeys{UserID: id}}
	if err := a.load(ctx, domain.UserStream(id), acc); err != nil {
		return passkeyAccount{}, err
	}
	return acc, nil
}

// PasskeysFromLog is a user's passkeys as their stream has them, in the
// order they were added: what a read shows when the passkeys read model has
// not caught up. ErrNotFound when the log has no such account.
func (a *Passkeys) PasskeysFromLog(ctx context.Context, id uuid.UUID) ([]domain.Passkey, error) {
	acc, err := a.loadPasskeyAccount(ctx, id)
	if err != nil {
		return nil, err
	}
	if !acc.user.Exists() {
		return nil, ErrNotFound
	}
	return acc.passkeys.Passkeys, nil
}

// passkeyUser shows an account to go-webauthn. The user handle is the
// user id's 16 bytes: a sign-in finds the account from it.
type passkeyUser struct {
	user  *domain.User
	creds []webauthn.Credential
}

func (w passkeyUser) WebAuthnID() []byte { return w.user.ID[:] }
func (w passkeyUser) WebAuthnName() string {
	return w.user.Email
}

func (w passkeyUser) WebAuthnDisplayName() string {
	if w.user.Name != "" {
		return w.user.Name
	}
	return w.user.Email
}
func (w passkeyUser) WebAuthnCredentials() []webauthn.Credential { return w.creds }

func toWebAuthnCredential(k *domain.Passkey) webauthn.Credential {
	c := k.Credential
	transports := make([]protocol.AuthenticatorTransport, len(c.Transports))
	for i, t := range c.Transports {
		transports[i] = protocol.AuthenticatorTransport(t)
	}
	return webauthn.Credential{
		ID: c.ID, PublicKey: c.PublicKey,
		AttestationType: c.AttestationType, AttestationFormat: c.AttestationFormat,
		Transport: transports,
		Flags: webauthn.CredentialFlags{
			UserPresent: c.UserPresent, UserVerified: c.UserVerified,
			BackupEligible: c.BackupEligible, BackupState: c.BackupState,
		},
		Authenticator: webauthn.Authenticator{
			AAGUID: k.AAGUID[:], SignCount: c.SignCount, Attachment: protocol.AuthenticatorAttachment(c.Attachment),
		},
	}
}

func fromWebAuthnCredential(c *webauthn.Credential) (domain.PasskeyCredential, uuid.UUID) {
	transports := make([]string, 0, len(c.Transport))
	for _, t := range c.Transport {
		if t != "" && len(t) <= 32 && len(transports) < 8 {
			transports = append(transports, string(t))
		}
	}
	aaguid, err := uuid.FromBytes(c.Authenticator.AAGUID)
	if err != nil {
		aaguid = uuid.Nil
	}
	return domain.PasskeyCredential{
		ID: c.ID, PublicKey: c.PublicKey, SignCount: c.Authenticator.SignCount,
		Transports: transports, Attachment: string(c.Authenticator.Attachment),
		AttestationType: c.AttestationType, AttestationFormat: c.AttestationFormat,
		UserPresent: c.Flags.UserPresent, UserVerified: c.Flags.UserVerified,
		BackupEligible: c.Flags.BackupEligible, BackupState: c.Flags.BackupState,
	}, aaguid
}

func (a *Passkeys) passkeyRP() (*webauthn.WebAuthn, error) {
	if a.webAuthn == nil || a.ceremonies == nil {
		return nil, ErrNotFound
	}
	return a.webAuthn, nil
}

func (a *Passkeys) passkeyCeremonyTTL() time.Duration {
	if a.ceremonyTTL > 0 {
		return a.ceremonyTTL
	}
	return DefaultCeremonyTTL
}

// PasskeyRegisterOptions starts registering a passkey for the caller: a
// discoverable credential is required, user verification preferred, and the
// caller's passkeys are excluded so an authenticator is not registered twice.
func (a *Passkeys) PasskeyRegisterOptions(ctx context.Context, caller tokens.Claims) (*protocol.CredentialCreation, error) {
	rp, err := a.passkeyRP()
	if err != nil {
		return nil, err
	}
	acc, err := a.loadPasskeyAccount(ctx, caller.UserID)
	if err != nil {
		return nil, err
	}
	if !acc.user.Exists() {
		return nil, ErrNotFound
	}
	exclude := make([]protocol.CredentialDescriptor, len(acc.passkeys.Passkeys))
	for i := range acc.passkeys.Passkeys {
		cred := toWebAuthnCredential(&acc.passkeys.Passkeys[i])
		exclude[i] = cred.Descriptor()
	}
	ttl := a.passkeyCeremonyTTL()
	creation, session, err := rp.BeginRegistration(passkeyUser{user: acc.user},
		webauthn.WithExclusions(exclude),
		webauthn.WithAuthenticatorSelection(protocol.AuthenticatorSelection{
			ResidentKey:        protocol.ResidentKeyRequirementRequired,
			RequireResidentKey: protocol.ResidentKeyRequired(),
			UserVerification:   protocol.VerificationPreferred,
		}),
		webauthn.WithConveyancePreference(protocol.PreferNoAttestation),
	)
	if err != nil {
		return nil, fmt.Errorf("begin passkey registration: %w", err)
	}
	creation.Response.Timeout = int(ttl / time.Millisecond)
	if err := a.putPasskeyCeremony(ctx, ceremony.Register, caller.UserID, session, ttl); err != nil {
		return nil, err
	}
	return creation, nil
}

func (a *Passkeys) putPasskeyCeremony(ctx context.Context, kind ceremony.Kind, user uuid.UUID, session *webauthn.SessionData, ttl time.Duration) error {
	state, err := json.Marshal(session)
	if err != nil {
		return fmt.Errorf("encode %s ceremony: %w", kind, err)
	}
	return a.ceremonies.Put(ctx, kind, session.Challenge, user, state, ttl)
}

// takePasskeyCeremony consumes the ceremony a credential answers, found from the
// challenge in its clientDataJSON.
func (a *Passkeys) takePasskeyCeremony(ctx context.Context, kind ceremony.Kind, challenge string, user uuid.UUID) (*webauthn.SessionData, bool, error) {
	state, ok, err := a.ceremonies.Take(ctx, kind, challenge, user)
	if err != nil || !ok {
		return nil, false, err
	}
	var session webauthn.SessionData
	if err := json.Unmarshal(state, &session); err != nil {
		return nil, false, fmt.Errorf("decode %s ceremony: %w", kind, err)
	}
	return &session, true, nil
}

func passkeyCredentialError(message string) error {
	return &ValidationError{Field: "credential", Message: message}
}

// describeWebAuthnError is a client-safe account of why go-webauthn refused a credential.
func describeWebAuthnError(err error) string {
	var pe *protocol.Error
	if errors.As(err, &pe) && pe.Details != "" {
		return pe.Details
	}
	return "it does not verify"
}

// RegisterPasskeyInput is a finished registration ceremony.
type RegisterPasskeyInput struct {
	Name       string
	Credential []byte // the PublicKeyCredential JSON of navigator.credentials.create
}

// RegisterPasskey verifies a registration response against the caller's
// ceremony and adds the passkey to the account. Everything wrong with the
// credential is a validation error: the caller is signed in, so there is
// nothing to hide from them.
func (a *Passkeys) RegisterPasskey(ctx context.Context, caller tokens.Claims, in RegisterPasskeyInput, r Request) (Passkey, error) {
	rp, err := a.passkeyRP()
	if err != nil {
		return Passkey{}, err
	}
	name, err := cleanName("name", in.Name)
	if err != nil {
		return Passkey{}, err
	}
	if len(in.Credential) == 0 || string(in.Credential) == "null" {
		return Passkey{}, passkeyCredentialError("is required")
	}
	parsed, err := protocol.ParseCredentialCreationResponseBytes(in.Credential)
	if err != nil {
		return Passkey{}, passkeyCredentialError("is not a valid registration credential: " + describeWebAuthnError(err))
	}
	session, ok, err := a.takePasskeyCeremony(ctx, ceremony.Register, parsed.Response.CollectedClientData.Challenge, caller.UserID)
	if err != nil {
		return Passkey{}, err
	}
	if !ok {
		return Passkey{}, passkeyCredentialError("answers no registration in progress (unknown, expired or already used challenge)")
	}
	acc, err := a.loadPasskeyAccount(ctx, caller.UserID)
	if err != nil {
		return Passkey{}, err
	}
	if !acc.user.Exists() {
		return Passkey{}, ErrNotFound
	}
	cred, err := rp.CreateCredential(passkeyUser{user: acc.user}, *session, parsed)
	if err != nil {
		a.log.Info("passkey registration refused", "user_id", caller.UserID, "reason", describeWebAuthnError(err), "request_id", r.RequestID)
		return Passkey{}, passkeyCredentialError("did not verify: " + describeWebAuthnError(err))
	}
	record, aaguid := fromWebAuthnCredential(cred)
	id := uuid.New()

	return retry(ctx, func() (Passkey, error) {
		acc, err := a.loadPasskeyAccount(ctx, caller.UserID)
		if err != nil {
			return Passkey{}, err
		}
		u := acc.user
		events, err := acc.passkeys.Add(u.ID, id, name, aaguid, a.now(), record)
		switch {
		case errors.Is(err, domain.ErrPasskeyExists):
			return Passkey{}, passkeyCredentialError("is already registered")
		case errors.Is(err, domain.ErrTooManyPasskeys):
			return Passkey{}, &ValidationError{Field: "credential", Message: fmt.Sprintf("cannot be added: an account holds %d passkeys at most", domain.MaxPasskeys)}
		case err != nil:
			return Passkey{}, err
		}
		c := a.newChange(r)
		if err := c.record(acc, domain.UserStream(u.ID), u.TenantID, u.ID, events...); err != nil {
			return Passkey{}, err
		}
		c.write.Claims = append(c.write.Claims, eventstore.Claim{Scope: passkeyScope, Key: passkeyCredentialKey(record.ID), Owner: u.ID.String()})
		committed, err := a.commit(ctx, c)
		if errors.Is(err, eventstore.ErrKeyTaken) {
			return Passkey{}, passkeyCredentialError("is already registered")
		}
		if err != nil {
			return Passkey{}, err
		}
		a.wait(ctx, committed.Last, projections.Passkeys{})
		return passkeyView(acc.passkeys.Find(id)), nil
	})
}

func passkeyCredentialKey(id []byte) string { return base64.RawURLEncoding.EncodeToString(id) }

// PasskeyLoginOptions starts a discoverable (usernameless) passkey sign-in:
// a challenge with no user and no allowed credentials. User verification is
// required: a passkey sign-in stands in for password and second factor, so
// a mere touch of a stolen security key must not be enough.
func (a *Passkeys) PasskeyLoginOptions(ctx context.Context) (*protocol.CredentialAssertion, error) {
	rp, err := a.passkeyRP()
	if err != nil {
		return nil, err
	}
	ttl := a.passkeyCeremonyTTL()
	assertion, session, err := rp.BeginDiscoverableLogin(webauthn.WithUserVerification(protocol.VerificationRequired))
	if err != nil {
		return nil, fmt.Errorf("begin passkey login: %w", err)
	}
	assertion.Response.Timeout = int(ttl / time.Millisecond)
	if err := a.putPasskeyCeremony(ctx, ceremony.Login, uuid.Nil, session, ttl); err != nil {
		return nil, err
	}
	return assertion, nil
}

// PasskeyLogin verifies a discoverable sign-in and opens a session. The
// ceremony is found from the challenge in the clientDataJSON and used up
// whatever the outcome; the account from the credential id's claim, which
// must agree with the user handle. A passkey is a complete sign-in: there is
// no second-factor challenge.
func (a *Passkeys) PasskeyLogin(ctx context.Context, credential []byte, r Request) (Tokens, error) {
	as, err := a.takeAssertion(ctx, credential, uuid.Nil)
	if err != nil {
		return Tokens{}, err
	}
	userID, err := a.assertionOwner(ctx, as, r)
	if err != nil {
		return Tokens{}, err
	}
	v, err := a.verifyAssertion(ctx, as, userID, r)
	if err != nil {
		return Tokens{}, err
	}
	return retry(ctx, func() (Tokens, error) { return a.signInWithPasskey(ctx, v, r) })
}

// assertion is a passkey assertion parsed, with the ceremony it answers.
type assertion struct {
	rp      *webauthn.WebAuthn
	parsed  *protocol.ParsedCredentialAssertionData
	session *webauthn.SessionData
}

// takeAssertion parses a sign-in's credential and uses up the ceremony its
// challenge names, which must be user's (uuid.Nil: a discoverable sign-in's,
// whose user is not known until the credential comes back).
func (a *Passkeys) takeAssertion(ctx context.Context, credential []byte, user uuid.UUID) (assertion, error) {
	rp, err := a.passkeyRP()
	if err != nil {
		return assertion{}, err
	}
	if len(credential) == 0 || string(credential) == "null" {
		return assertion{}, passkeyCredentialError("is required")
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes(credential)
	if err != nil {
		return assertion{}, passkeyCredentialError("is not a valid authentication credential: " + describeWebAuthnError(err))
	}
	session, ok, err := a.takePasskeyCeremony(ctx, ceremony.Login, parsed.Response.CollectedClientData.Challenge, user)
	if err != nil {
		return assertion{}, err
	}
	if !ok {
		return assertion{}, ErrPasskeyChallenge
	}
	return assertion{rp: rp, parsed: parsed, session: session}, nil
}

// refuse logs why a passkey sign-in was refused and answers as for any bad
// credential.
func (a *Passkeys) refuse(r Request, reason string, args ...any) error {
	a.log.Info("passkey sign-in refused", append([]any{"reason", reason, "request_id", r.RequestID}, args...)...)
	return ErrPasskeyRejected
}

// assertionOwner finds the account that claimed the credential, which must
// be the one the user handle names.
func (a *Passkeys) assertionOwner(ctx context.Context, as assertion, r Request) (uuid.UUID, error) {
	owner, err := a.store.Lookup(ctx, passkeyScope, passkeyCredentialKey(as.parsed.RawID))
	if errors.Is(err, eventstore.ErrNotFound) {
		return uuid.Nil, a.refuse(r, "unknown credential")
	}
	if err != nil {
		return uuid.Nil, err
	}
	userID, err := uuid.Parse(owner)
	if err != nil {
		return uuid.Nil, fmt.Errorf("passkey index holds a bad owner %q: %w", owner, err)
	}
	if handle, err := uuid.FromBytes(as.parsed.Response.UserHandle); err != nil || handle != userID {
		return uuid.Nil, a.refuse(r, "user handle does not match the credential's account", "user_id", userID)
	}
	return userID, nil
}

// verifiedAssertion is an assertion the account's passkey signed, with user
// verification.
type verifiedAssertion struct {
	assertion
	user      uuid.UUID
	passkey   uuid.UUID
	amr       []string
	clonedKey bool // the library saw the sign count go back
}

// verifyAssertion checks the assertion's signature with the account's
// passkey, and that the authenticator verified the user.
func (a *Passkeys) verifyAssertion(ctx context.Context, as assertion, userID uuid.UUID, r Request) (verifiedAssertion, error) {
	acc, err := a.loadPasskeyAccount(ctx, userID)
	if err != nil {
		return verifiedAssertion{}, err
	}
	k := acc.passkeys.ByCredential(as.parsed.RawID)
	if k == nil || !acc.user.Exists() || !acc.user.EmailVerified {
		return verifiedAssertion{}, a.refuse(r, "credential not on the account", "user_id", userID)
	}
	var verified *webauthn.Credential
	if len(as.session.UserID) == 0 {
		user := passkeyUser{user: acc.user, creds: []webauthn.Credential{toWebAuthnCredential(k)}}
		handler := func(rawID, userHandle []byte) (webauthn.User, error) { return user, nil }
		_, verified, err = as.rp.ValidatePasskeyLogin(handler, *as.session, as.parsed)
	} else {
		// A re-authentication: the ceremony named the user and allowed each
		// of their passkeys, which the library checks they still own.
		verified, err = as.rp.ValidateLogin(passkeyUser{user: acc.user, creds: webAuthnCredentials(acc.passkeys)}, *as.session, as.parsed)
	}
	if err != nil {
		return verifiedAssertion{}, a.refuse(r, describeWebAuthnError(err), "user_id", userID, "passkey_id", k.ID)
	}
	// The ceremony asked for it, but one begun before UV was required did
	// not; the flag itself is what must hold.
	if !as.parsed.Response.AuthenticatorData.Flags.HasUserVerified() {
		return verifiedAssertion{}, a.refuse(r, "no user verification", "user_id", userID, "passkey_id", k.ID)
	}
	return verifiedAssertion{assertion: as, user: userID, passkey: k.ID, amr: domain.PasskeyAMR(k.Credential),
		clonedKey: verified.Authenticator.CloneWarning}, nil
}

// signInWithPasskey records the passkey's use, on the account as it is now,
// and opens a session.
func (a *Passkeys) signInWithPasskey(ctx context.Context, v verifiedAssertion, r Request) (Tokens, error) {
	c, u, err := a.usePasskey(ctx, v, r)
	if err != nil {
		return Tokens{}, err
	}
	return a.sessions.openSession(ctx, c, u, v.amr, r)
}

// usePasskey records a verified assertion's use of its passkey (sign count,
// flags), on the account as it is now, in a change for the caller to finish.
// A sign count that went back refuses the assertion: the authenticator may
// have been cloned.
func (a *Passkeys) usePasskey(ctx context.Context, v verifiedAssertion, r Request) (*change, *domain.User, error) {
	acc, err := a.loadPasskeyAccount(ctx, v.user)
	if err != nil {
		return nil, nil, err
	}
	u := acc.user
	data := v.parsed.Response.AuthenticatorData
	events, err := acc.passkeys.Use(u.ID, v.passkey, data.Counter, data.Flags.HasUserVerified(), data.Flags.HasBackupState())
	if errors.Is(err, domain.ErrSignCountWentBack) || err == nil && v.clonedKey {
		stored := uint32(0)
		if k := acc.passkeys.Find(v.passkey); k != nil {
			stored = k.Credential.SignCount
		}
		a.log.Warn("passkey sign-in refused: the sign count did not increase; possible cloned authenticator",
			"user_id", u.ID, "passkey_id", v.passkey, "stored_sign_count", stored,
			"reported_sign_count", data.Counter, "ip", r.IP, "request_id", r.RequestID)
		return nil, nil, ErrPasskeyRejected
	}
	if errors.Is(err, domain.ErrPasskeyNotFound) {
		return nil, nil, a.refuse(r, "passkey removed meanwhile", "user_id", v.user, "passkey_id", v.passkey)
	}
	if err != nil {
		return nil, nil, err
	}
	c := a.newChange(r)
	if err := c.record(acc, domain.UserStream(u.ID), u.TenantID, u.ID, events...); err != nil {
		return nil, nil, err
	}
	return c, u, nil
}

// webAuthnCredentials are the user's passkeys as go-webauthn sees them.
func webAuthnCredentials(keys *domain.UserPasskeys) []webauthn.Credential {
	creds := make([]webauthn.Credential, len(keys.Passkeys))
	for i := range keys.Passkeys {
		creds[i] = toWebAuthnCredential(&keys.Passkeys[i])
	}
	return creds
}

// PasskeyReauthOptions starts a passkey re-authentication of the caller
// (API.md: POST /passkey/reauthenticate/options): their passkeys allowed,
// user verification required, and the ceremony bound to them, so that only
// an assertion at their own POST /reauthenticate can use it. A user with no
// passkey has nothing to start: ErrNotFound.
func (a *Passkeys) PasskeyReauthOptions(ctx context.Context, caller tokens.Claims) (*protocol.CredentialAssertion, error) {
	rp, err := a.passkeyRP()
	if err != nil {
		return nil, err
	}
	acc, err := a.loadPasskeyAccount(ctx, caller.UserID)
	if err != nil {
		return nil, err
	}
	if !acc.user.Exists() {
		return nil, ErrSessionEnded
	}
	if len(acc.passkeys.Passkeys) == 0 {
		return nil, ErrNotFound
	}
	ttl := a.passkeyCeremonyTTL()
	assertion, session, err := rp.BeginLogin(passkeyUser{user: acc.user, creds: webAuthnCredentials(acc.passkeys)},
		webauthn.WithUserVerification(protocol.VerificationRequired))
	if err != nil {
		return nil, fmt.Errorf("begin passkey re-authentication: %w", err)
	}
	assertion.Response.Timeout = int(ttl / time.Millisecond)
	if err := a.putPasskeyCeremony(ctx, ceremony.Login, caller.UserID, session, ttl); err != nil {
		return nil, err
	}
	return assertion, nil
}

// reauthenticateWithPasskey verifies credential as an assertion of one of
// the caller's passkeys, in a ceremony of theirs (PasskeyReauthOptions),
// and makes the session fresh in the commit that records the passkey's use.
func (a *Passkeys) reauthenticateWithPasskey(ctx context.Context, caller tokens.Claims, credential []byte, r Request) (Tokens, error) {
	as, err := a.takeAssertion(ctx, credential, caller.UserID)
	if err != nil {
		return Tokens{}, err
	}
	v, err := a.verifyAssertion(ctx, as, caller.UserID, r)
	if err != nil {
		return Tokens{}, err
	}
	return retry(ctx, func() (Tokens, error) {
		c, _, err := a.usePasskey(ctx, v, r)
		if err != nil {
			return Tokens{}, err
		}
		return a.sessions.reauthenticate(ctx, c, caller, v.amr, r)
	})
}

// RenamePasskey renames one of the caller's passkeys; someone else's is not
// found.
func (a *Passkeys) RenamePasskey(ctx context.Context, caller tokens.Claims, id uuid.UUID, name string, r Request) (Passkey, error) {
	name, err := cleanName("name", name)
	if err != nil {
		return Passkey{}, err
	}
	if name == "" {
		return Passkey{}, &ValidationError{Field: "name", Message: "is required"}
	}
	return retry(ctx, func() (Passkey, error) {
		acc, err := a.loadPasskeyAccount(ctx, caller.UserID)
		if err != nil {
			return Passkey{}, err
		}
		u := acc.user
		events, err := acc.passkeys.Rename(u.ID, id, name)
		if errors.Is(err, domain.ErrPasskeyNotFound) {
			return Passkey{}, ErrNotFound
		}
		if err != nil {
			return Passkey{}, err
		}
		if len(events) > 0 {
			c := a.newChange(r)
			if err := c.record(acc, domain.UserStream(u.ID), u.TenantID, u.ID, events...); err != nil {
				return Passkey{}, err
			}
			committed, err := a.commit(ctx, c)
			if err != nil {
				return Passkey{}, err
			}
			a.wait(ctx, committed.Last, projections.Passkeys{})
		}
		return passkeyView(acc.passkeys.Find(id)), nil
	})
}

// RemovePasskey removes one of the caller's passkeys and releases its
// credential, which can then sign in nowhere; someone else's is not found.
func (a *Passkeys) RemovePasskey(ctx context.Context, caller tokens.Claims, id uuid.UUID, r Request) error {
	_, err := retry(ctx, func() (struct{}, error) {
		acc, err := a.loadPasskeyAccount(ctx, caller.UserID)
		if err != nil {
			return struct{}{}, err
		}
		u := acc.user
		k := acc.passkeys.Find(id)
		events, err := acc.passkeys.Remove(u.ID, id)
		if errors.Is(err, domain.ErrPasskeyNotFound) {
			return struct{}{}, ErrNotFound
		}
		if err != nil {
			return struct{}{}, err
		}
		c := a.newChange(r)
		if err := c.record(acc, domain.UserStream(u.ID), u.TenantID, u.ID, events...); err != nil {
			return struct{}{}, err
		}
		c.write.Releases = append(c.write.Releases, eventstore.Claim{Scope: passkeyScope, Key: passkeyCredentialKey(k.Credential.ID), Owner: u.ID.String()})
		committed, err := a.commit(ctx, c)
		if err != nil {
			return struct{}{}, err
		}
		a.wait(ctx, committed.Last, projections.Passkeys{})
		return struct{}{}, nil
	})
	return err
}
