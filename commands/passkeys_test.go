package commands

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/internal/softauthn"
	"github.com/authd/authd/internal/tokens"
)

// passkeyClient is the origin the software client claims; the fixture's
// relying party (authd's default configuration) accepts it.
var passkeyClient = softauthn.Client{Origin: "http://localhost:8080"}

// iCloudKeychain is a known AAGUID, so a passkey registered without a name
// gets the authenticator's.
var iCloudKeychain = uuid.MustParse("fbfc3007-154e-4ecc-8c0b-6e020557d7bd")

// mustJSON is v as the HTTP edge would send it.
func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// registerPasskey runs a registration ceremony for the caller with auth.
func (a *testApp) registerPasskey(t *testing.T, caller tokens.Claims, auth *softauthn.Authenticator, name string) (Passkey, error) {
	t.Helper()
	opts, err := a.PasskeyRegisterOptions(t.Context(), caller)
	if err != nil {
		t.Fatal(err)
	}
	reg, _, err := auth.Register(mustJSON(t, opts), passkeyClient)
	if err != nil {
		t.Fatalf("authenticator: %v", err)
	}
	return a.RegisterPasskey(t.Context(), caller, RegisterPasskeyInput{Name: name, Credential: mustJSON(t, reg)}, request)
}

// passkeyAssertion is auth's answer to new sign-in options of a.
func (a *testApp) passkeyAssertion(t *testing.T, auth *softauthn.Authenticator) []byte {
	t.Helper()
	opts, err := a.PasskeyLoginOptions(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	assertion, err := auth.Login(mustJSON(t, opts), passkeyClient, nil)
	if err != nil {
		t.Fatalf("authenticator: %v", err)
	}
	return mustJSON(t, assertion)
}

// passkeys lists the user's passkeys from the log.
func (a *testApp) passkeys(t *testing.T, user uuid.UUID) []domain.Passkey {
	t.Helper()
	list, err := a.PasskeysFromLog(t.Context(), user)
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// Passkeys on the commands: registered with the ceremony of another
// instance, excluded from registering twice, signing in usernameless (amr by
// kind of authenticator, the assertion used once), renamed and removed by
// their owner only; a removed one signs in no more, and its authenticator
// may register afresh.
func TestPasskeyLifecycle(t *testing.T) {
	t.Parallel()
	a, b := twoApps(t)
	ctx := t.Context()
	signup := a.signUp(t, "ada@example.com", "correct horse battery")
	caller := a.claims(t, signup.AccessToken)
	if got := a.passkeys(t, caller.UserID); len(got) != 0 {
		t.Fatalf("a new account has passkeys: %v", got)
	}

	// Options on a, the answer on b: the ceremony state is shared. No name:
	// the AAGUID's.
	opts, err := a.PasskeyRegisterOptions(ctx, caller)
	if err != nil {
		t.Fatal(err)
	}
	phone := &softauthn.Authenticator{AAGUID: iCloudKeychain, BackupEligible: true, BackedUp: true, Transports: []string{"internal", "hybrid"}}
	reg, phoneCred, err := phone.Register(mustJSON(t, opts), passkeyClient)
	if err != nil {
		t.Fatal(err)
	}
	added, err := b.RegisterPasskey(ctx, caller, RegisterPasskeyInput{Credential: mustJSON(t, reg)}, request)
	if err != nil || added.Name != "iCloud Keychain" || added.LastUsedAt != nil || added.CreatedAt.IsZero() {
		t.Fatalf("registered passkey: %+v, %v", added, err)
	}
	if got := a.passkeys(t, caller.UserID); len(got) != 1 || got[0].ID != added.ID {
		t.Fatalf("passkeys after register: %v", got)
	}
	// The same response again: its ceremony is used up.
	var invalid *ValidationError
	if _, err := a.RegisterPasskey(ctx, caller, RegisterPasskeyInput{Credential: mustJSON(t, reg)}, request); !errors.As(err, &invalid) {
		t.Fatalf("replayed registration: %v; want a ValidationError", err)
	}
	// The next options exclude it, and the authenticator refuses to make a
	// second credential.
	again, err := a.PasskeyRegisterOptions(ctx, caller)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := phone.Register(mustJSON(t, again), passkeyClient); err != softauthn.ErrExcluded {
		t.Fatalf("registering an excluded authenticator: %v (options %s, credential %x)", err, mustJSON(t, again), phoneCred.ID)
	}

	// A device-bound security key, with a name of the user's choosing.
	key := &softauthn.Authenticator{AAGUID: uuid.New(), Transports: []string{"usb"}}
	named, err := a.registerPasskey(t, caller, key, "  Blue key ")
	if err != nil || named.Name != "Blue key" {
		t.Fatalf("register a named key: %+v, %v", named, err)
	}

	// A passkey is a whole sign-in: tokens, amr by kind.
	assertion := a.passkeyAssertion(t, phone)
	login, err := b.PasskeyLogin(ctx, assertion, request)
	if err != nil || login.UserID != caller.UserID {
		t.Fatalf("passkey login: %+v, %v", login, err)
	}
	if amr := b.claims(t, login.AccessToken).AMR; !slices.Equal(amr, []string{"user"}) {
		t.Fatalf("amr of a synced passkey: %v", amr)
	}
	if rt, err := a.Refresh(ctx, login.RefreshToken, request); err != nil || rt.SessionID != login.SessionID {
		t.Fatalf("refresh of a passkey session: %+v, %v", rt, err)
	}
	if _, err := a.PasskeyLogin(ctx, assertion, request); !errors.Is(err, ErrPasskeyChallenge) {
		t.Fatalf("replayed assertion: %v; want ErrPasskeyChallenge", err)
	}
	if got := a.passkeys(t, caller.UserID); got[0].LastUsedAt.IsZero() {
		t.Fatal("a passkey that signed in shows no last use")
	}
	hw, err := a.PasskeyLogin(ctx, a.passkeyAssertion(t, key), request)
	if err != nil {
		t.Fatal(err)
	}
	if amr := a.claims(t, hw.AccessToken).AMR; !slices.Equal(amr, []string{"hwk", "user"}) {
		t.Fatalf("amr of a device-bound key: %v", amr)
	}

	// Rename, by the owner only.
	renamed, err := b.RenamePasskey(ctx, caller, added.ID, "Phone", request)
	if err != nil || renamed.ID != added.ID || renamed.Name != "Phone" || renamed.LastUsedAt == nil || !renamed.CreatedAt.Equal(added.CreatedAt) {
		t.Fatalf("rename: %+v, %v", renamed, err)
	}
	for _, bad := range []string{"", "   "} {
		if _, err := a.RenamePasskey(ctx, caller, added.ID, bad, request); !errors.As(err, &invalid) {
			t.Fatalf("rename to %q: %v; want a ValidationError", bad, err)
		}
	}
	if _, err := a.RenamePasskey(ctx, caller, uuid.New(), "x", request); !errors.Is(err, ErrNotFound) {
		t.Fatalf("rename of an unknown passkey: %v; want ErrNotFound", err)
	}
	bob := a.claims(t, a.signUp(t, "bob@example.com", "another good password").AccessToken)
	if got := a.passkeys(t, bob.UserID); len(got) != 0 {
		t.Fatalf("bob has passkeys: %v", got)
	}
	if _, err := a.RenamePasskey(ctx, bob, added.ID, "mine", request); !errors.Is(err, ErrNotFound) {
		t.Fatalf("bob renames ada's passkey: %v; want ErrNotFound", err)
	}
	if err := a.RemovePasskey(ctx, bob, added.ID, request); !errors.Is(err, ErrNotFound) {
		t.Fatalf("bob removes ada's passkey: %v; want ErrNotFound", err)
	}

	// Remove: gone, and it signs in no more.
	if err := b.RemovePasskey(ctx, caller, added.ID, request); err != nil {
		t.Fatal(err)
	}
	if got := a.passkeys(t, caller.UserID); len(got) != 1 || got[0].ID != named.ID {
		t.Fatalf("passkeys after remove: %v", got)
	}
	if err := a.RemovePasskey(ctx, caller, added.ID, request); !errors.Is(err, ErrNotFound) {
		t.Fatalf("remove twice: %v; want ErrNotFound", err)
	}
	if _, err := a.PasskeyLogin(ctx, a.passkeyAssertion(t, phone), request); !errors.Is(err, ErrPasskeyRejected) {
		t.Fatalf("removed passkey login: %v; want ErrPasskeyRejected", err)
	}
	// Its authenticator may register afresh: the old claim was released.
	if _, err := a.registerPasskey(t, caller, phone, ""); err != nil {
		t.Fatalf("register again after removing: %v", err)
	}
}

// A passkey is a factor of its own: a user with TOTP on signs in with one
// and gets tokens, not a challenge, while a password login still gets one.
func TestPasskeyLoginOfATwoFactorUserNeedsNoChallenge(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	const email, pw = "pk-tf@example.com", "correct horse battery"
	caller := a.claims(t, a.signUp(t, email, pw).AccessToken)
	auth := &softauthn.Authenticator{AAGUID: uuid.New()}
	if _, err := a.registerPasskey(t, caller, auth, "laptop"); err != nil {
		t.Fatal(err)
	}
	a.enableTwoFactor(t, caller)

	a.challenge(t, email, pw, request)
	login, err := a.PasskeyLogin(t.Context(), a.passkeyAssertion(t, auth), request)
	if err != nil || login.AccessToken == "" {
		t.Fatalf("passkey login of a 2FA user: %+v, %v; want tokens", login, err)
	}
	if amr := a.claims(t, login.AccessToken).AMR; slices.Contains(amr, "pwd") || len(amr) == 0 {
		t.Fatalf("amr %v", amr)
	}
}

// A passkey sign-in replaces password and second factor, so it needs the
// authenticator to have verified the user (UV), not just a touch: a security
// key without a PIN, taken from a 2FA user's desk, must not open the account.
func TestPasskeyLoginWithoutUserVerificationIsRefused(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	ctx := t.Context()
	caller := a.claims(t, a.signUp(t, "pk-nouv@example.com", "correct horse battery").AccessToken)
	key := &softauthn.Authenticator{AAGUID: uuid.New(), NoUserVerification: true, Transports: []string{"usb"}}
	if _, err := a.registerPasskey(t, caller, key, "desk key"); err != nil {
		t.Fatalf("register a key without user verification: %v; registration only prefers it", err)
	}
	a.enableTwoFactor(t, caller)

	opts, err := a.PasskeyLoginOptions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mustJSON(t, opts)), `"userVerification":"required"`) {
		t.Errorf("login options do not require user verification: %s", mustJSON(t, opts))
	}
	before := len(a.eventTypes(t, 0))
	assertion, err := key.Login(mustJSON(t, opts), passkeyClient, nil)
	if err != nil {
		t.Fatalf("authenticator: %v", err)
	}
	if _, err := a.PasskeyLogin(ctx, mustJSON(t, assertion), request); !errors.Is(err, ErrPasskeyRejected) {
		t.Fatalf("passkey login without user verification: %v; want ErrPasskeyRejected", err)
	}
	if n := len(slices.DeleteFunc(a.eventTypes(t, before), func(typ string) bool { return typ != domain.TypeSessionStarted })); n != 0 {
		t.Errorf("%d sessions started by a refused passkey login", n)
	}
	if got := a.passkeys(t, caller.UserID); len(got) != 1 || !got[0].LastUsedAt.IsZero() {
		t.Errorf("a refused passkey login marked the passkey used: %v", got)
	}
}

// What a passkey sign-in refuses, and as what: an assertion that does not
// verify (wrong origin, tampered signature, another user's handle) or whose
// sign count goes back or stays (a possible clone) is ErrPasskeyRejected; an
// unknown or made-up challenge is ErrPasskeyChallenge. None opens a session;
// an authenticator without a counter signs in every time.
func TestPasskeySignInRefusals(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	ctx := t.Context()
	ada := a.claims(t, a.signUp(t, "ada@example.com", "correct horse battery").AccessToken)
	bob := a.claims(t, a.signUp(t, "bob@example.com", "another good password").AccessToken)
	auth := &softauthn.Authenticator{AAGUID: uuid.New()}
	if _, err := a.registerPasskey(t, ada, auth, "key"); err != nil {
		t.Fatal(err)
	}
	cred := auth.Credentials()[0]

	signIn := func(client softauthn.Client, mutate func(*softauthn.AssertionResponse)) error {
		t.Helper()
		opts, err := a.PasskeyLoginOptions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		assertion, err := auth.Login(mustJSON(t, opts), client, nil)
		if err != nil {
			t.Fatalf("authenticator: %v", err)
		}
		if mutate != nil {
			mutate(assertion)
		}
		_, err = a.PasskeyLogin(ctx, mustJSON(t, assertion), request)
		return err
	}
	before := len(a.eventTypes(t, 0))
	for what, err := range map[string]error{
		"from the wrong origin": signIn(softauthn.Client{Origin: "https://evil.example"}, nil),
		"with a tampered signature": signIn(passkeyClient, func(r *softauthn.AssertionResponse) {
			r.Response.Signature = softauthn.Tamper(r.Response.Signature)
		}),
		"with bob's user handle": signIn(passkeyClient, func(r *softauthn.AssertionResponse) {
			r.Response.UserHandle = base64.RawURLEncoding.EncodeToString(bob.UserID[:])
		}),
	} {
		if !errors.Is(err, ErrPasskeyRejected) {
			t.Errorf("sign-in %s: %v; want ErrPasskeyRejected", what, err)
		}
	}
	madeUp, err := auth.Login([]byte(`{"publicKey":{"challenge":"`+strings.Repeat("A", 43)+`","rpId":"localhost"}}`), passkeyClient, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.PasskeyLogin(ctx, mustJSON(t, madeUp), request); !errors.Is(err, ErrPasskeyChallenge) {
		t.Errorf("sign-in with a made-up challenge: %v; want ErrPasskeyChallenge", err)
	}
	// A good sign-in stores the count the next ones are compared with.
	if err := signIn(passkeyClient, nil); err != nil {
		t.Fatal(err)
	}
	good := cred.SignCount
	cred.SignCount = good - 2 // Login counts one up: good-1
	if err := signIn(passkeyClient, nil); !errors.Is(err, ErrPasskeyRejected) {
		t.Errorf("sign-in with a sign count that went back: %v; want ErrPasskeyRejected", err)
	}
	cred.SignCount = good - 1 // the same count again
	if err := signIn(passkeyClient, nil); !errors.Is(err, ErrPasskeyRejected) {
		t.Errorf("sign-in with the same sign count again: %v; want ErrPasskeyRejected", err)
	}
	if started := slices.DeleteFunc(a.eventTypes(t, before), func(typ string) bool { return typ != domain.TypeSessionStarted }); len(started) != 1 {
		t.Fatalf("one good and six refused sign-ins started %d sessions; want 1", len(started))
	}
	cred.SignCount = good + 10
	if err := signIn(passkeyClient, nil); err != nil {
		t.Fatalf("sign-in with a higher sign count: %v", err)
	}

	counterless := &softauthn.Authenticator{AAGUID: uuid.New(), NoCounter: true, BackupEligible: true}
	if _, err := a.registerPasskey(t, bob, counterless, ""); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if tok, err := a.PasskeyLogin(ctx, a.passkeyAssertion(t, counterless), request); err != nil || tok.UserID != bob.UserID {
			t.Fatalf("counterless sign-in %d: %+v, %v", i, tok, err)
		}
	}
}
