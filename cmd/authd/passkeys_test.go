package main

// Passkeys end to end: a software authenticator (internal/softauthn: real
// ES256 keys, authenticator data, CBOR "none" attestation objects and
// clientDataJSON) against real authd instances over HTTP, with real
// Postgres and NATS.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/authd/authd/internal/softauthn"
	"github.com/authd/authd/internal/testenv"
)

// The origin the software client claims; authd's default configuration
// (RP id localhost, origin http://localhost:8080) accepts it.
var pkClient = softauthn.Client{Origin: "http://localhost:8080"}

// A known AAGUID, so a passkey registered without a name gets the
// authenticator's.
var pkICloudKeychain = uuid.MustParse("fbfc3007-154e-4ecc-8c0b-6e020557d7bd")

// pkRegister runs a registration ceremony for the holder of token with
// auth and answers the verify response.
func pkRegister(t *testing.T, in *instance, token string, auth *softauthn.Authenticator, name string) (response, *softauthn.Credential) {
	t.Helper()
	opts := in.must(t, 200, "POST", api+"/passkey/register/options", token, nil)
	reg, cred, err := auth.Register([]byte(opts.raw), pkClient)
	if err != nil {
		t.Fatalf("authenticator: %v", err)
	}
	body := map[string]any{"credential": reg}
	if name != "" {
		body["name"] = name
	}
	return in.call(t, "POST", api+"/passkey/register/verify", token, body), cred
}

// pkLoginOptions starts a passkey sign-in and returns the options' raw JSON.
func pkLoginOptions(t *testing.T, in *instance) []byte {
	t.Helper()
	r := in.must(t, 200, "POST", api+"/passkey/login/options", "", nil)
	if !strings.Contains(r.header.Get("Cache-Control"), "no-store") {
		t.Fatalf("login options Cache-Control %q", r.header.Get("Cache-Control"))
	}
	return []byte(r.raw)
}

func pkLoginWith(t *testing.T, in *instance, credential any) response {
	t.Helper()
	return in.call(t, "POST", api+"/passkey/login/verify", "", map[string]any{"credential": credential})
}

func pkAMR(t *testing.T, access string) []string {
	t.Helper()
	parts := strings.Split(access, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", access)
	}
	var claims struct {
		AMR []string `json:"amr"`
	}
	decodeSeg(t, parts[1], &claims)
	return claims.AMR
}

func pkList(t *testing.T, in *instance, token string) []map[string]any {
	t.Helper()
	r := in.must(t, 200, "GET", api+"/passkey/list", token, nil)
	var body struct {
		Passkeys []map[string]any `json:"passkeys"`
	}
	if err := json.Unmarshal([]byte(r.raw), &body); err != nil || body.Passkeys == nil {
		t.Fatalf("list: %v %s", err, r.raw)
	}
	return body.Passkeys
}

func TestPasskeysEndToEnd(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	a, b := c.start(t), c.start(t)
	const email = "ada@example.com"
	signup := c.signupVerified(t, a, email, "correct horse battery", nil)
	token, userID := signup.str("access_token"), signup.str("user", "id")

	if got := pkList(t, a, token); len(got) != 0 {
		t.Fatalf("a new account lists passkeys: %v", got)
	}

	// Registration options: discoverable credential required, user
	// verification preferred, the user handle is the user id's bytes.
	opts := a.must(t, 200, "POST", api+"/passkey/register/options", token, nil)
	var creation struct {
		PublicKey struct {
			RP        struct{ ID, Name string }
			User      struct{ ID, Name, DisplayName string }
			Challenge string
			Timeout   int
			Exclude   []struct{ ID string } `json:"excludeCredentials"`
			Selection struct {
				ResidentKey        string `json:"residentKey"`
				RequireResidentKey bool   `json:"requireResidentKey"`
				UserVerification   string `json:"userVerification"`
			} `json:"authenticatorSelection"`
		} `json:"publicKey"`
	}
	if err := json.Unmarshal([]byte(opts.raw), &creation); err != nil {
		t.Fatal(err)
	}
	pk := creation.PublicKey
	uid := uuid.MustParse(userID)
	if pk.RP.ID != "localhost" || pk.RP.Name == "" || pk.User.ID != base64.RawURLEncoding.EncodeToString(uid[:]) ||
		pk.User.Name != email || len(pk.Challenge) < 43 || pk.Timeout <= 0 || len(pk.Exclude) != 0 ||
		pk.Selection.ResidentKey != "required" || !pk.Selection.RequireResidentKey || pk.Selection.UserVerification != "preferred" {
		t.Fatalf("registration options: %s", opts.raw)
	}
	if !strings.Contains(opts.header.Get("Cache-Control"), "no-store") {
		t.Fatalf("registration options Cache-Control %q", opts.header.Get("Cache-Control"))
	}

	// Register a synced passkey (backup eligible) on instance b with the
	// options from a: the ceremony state is shared. No name: the AAGUID's.
	phone := &softauthn.Authenticator{AAGUID: pkICloudKeychain, BackupEligible: true, BackedUp: true, Transports: []string{"internal", "hybrid"}}
	reg, phoneCred, err := phone.Register([]byte(opts.raw), pkClient)
	if err != nil {
		t.Fatal(err)
	}
	added := b.must(t, 201, "POST", api+"/passkey/register/verify", token, map[string]any{"credential": reg})
	phoneID := added.str("id")
	if _, err := uuid.Parse(phoneID); err != nil || added.str("name") != "iCloud Keychain" || added.body["last_used_at"] != nil || added.str("created_at") == "" {
		t.Fatalf("registered passkey: %s", added.raw)
	}
	// Read-your-writes, on the other instance too.
	if got := pkList(t, b, token); len(got) != 1 || got[0]["id"] != phoneID || got[0]["name"] != "iCloud Keychain" {
		t.Fatalf("list after register: %v", got)
	}
	if got := pkList(t, a, token); len(got) != 1 {
		t.Fatalf("list on the other instance: %v", got)
	}
	// The same response again: its ceremony is used up.
	if r := a.call(t, "POST", api+"/passkey/register/verify", token, map[string]any{"credential": reg}); r.status != 400 || r.errCode() != "validation_failed" {
		t.Fatalf("replayed registration = %d %s", r.status, r.raw)
	}

	// The next options exclude it, and the authenticator refuses to make a
	// second credential.
	again := a.must(t, 200, "POST", api+"/passkey/register/options", token, nil)
	if !strings.Contains(again.raw, base64.RawURLEncoding.EncodeToString(phoneCred.ID)) {
		t.Fatalf("existing passkey not excluded: %s", again.raw)
	}
	if _, _, err := phone.Register([]byte(again.raw), pkClient); err != softauthn.ErrExcluded {
		t.Fatalf("registering an excluded authenticator: %v", err)
	}

	// A device-bound security key, with a name of the user's choosing.
	key := &softauthn.Authenticator{AAGUID: uuid.New(), Transports: []string{"usb"}}
	r, _ := pkRegister(t, a, token, key, "  Blue key ")
	if r.status != 201 || r.str("name") != "Blue key" {
		t.Fatalf("register a named key = %d %s", r.status, r.raw)
	}
	keyID := r.str("id")
	if got := pkList(t, a, token); len(got) != 2 || got[0]["id"] != phoneID || got[1]["id"] != keyID {
		t.Fatalf("list of two, oldest first: %v", got)
	}

	// Usernameless sign-in: options on a, verify on b. A passkey is a whole
	// sign-in: tokens, no second-factor challenge.
	lo := pkLoginOptions(t, a)
	var request struct {
		PublicKey struct {
			Challenge, RPID, UserVerification string
			Allow                             []any `json:"allowCredentials"`
		} `json:"publicKey"`
	}
	if err := json.Unmarshal(lo, &request); err != nil {
		t.Fatal(err)
	}
	if request.PublicKey.RPID != "localhost" || request.PublicKey.UserVerification != "required" || len(request.PublicKey.Allow) != 0 || request.PublicKey.Challenge == "" {
		t.Fatalf("login options: %s", lo)
	}
	assertion, err := phone.Login(lo, pkClient, nil)
	if err != nil {
		t.Fatal(err)
	}
	login := pkLoginWith(t, b, assertion)
	if login.status != 200 || login.body["two_factor_required"] != nil {
		t.Fatalf("passkey login = %d %s", login.status, login.raw)
	}
	checkTokens(t, login, email)
	if got := pkAMR(t, login.str("access_token")); !slices.Equal(got, []string{"user"}) {
		t.Fatalf("amr of a synced passkey: %v", got)
	}
	if me := a.must(t, 200, "GET", api+"/me", login.str("access_token"), nil); me.str("id") != userID {
		t.Fatalf("me with passkey tokens: %s", me.raw)
	}
	if rt := a.must(t, 200, "POST", api+"/refresh", "", map[string]any{"refresh_token": login.str("refresh_token")}); rt.str("session_id") != login.str("session_id") {
		t.Fatalf("refresh of a passkey session: %s", rt.raw)
	}
	// The same assertion again: its challenge is used up.
	if r := pkLoginWith(t, a, assertion); r.status != 401 || r.errCode() != "invalid_challenge" {
		t.Fatalf("replayed assertion = %d %s", r.status, r.raw)
	}
	// The list shows when it was last used.
	testenv.Eventually(t, 5*time.Second, func() bool {
		for _, p := range pkList(t, a, token) {
			if p["id"] == phoneID {
				return p["last_used_at"] != nil
			}
		}
		return false
	})

	// The device-bound key signs in as a hardware key.
	assertion, err = key.Login(pkLoginOptions(t, a), pkClient, nil)
	if err != nil {
		t.Fatal(err)
	}
	login = pkLoginWith(t, a, assertion)
	if login.status != 200 {
		t.Fatalf("security key login = %d %s", login.status, login.raw)
	}
	if got := pkAMR(t, login.str("access_token")); !slices.Equal(got, []string{"hwk", "user"}) {
		t.Fatalf("amr of a device-bound key: %v", got)
	}

	// Rename: 200 with the passkey, and the list has it at once.
	renamed := b.must(t, 200, "PATCH", api+"/passkey/"+phoneID, token, map[string]any{"name": "Phone"})
	if renamed.str("id") != phoneID || renamed.str("name") != "Phone" || renamed.body["last_used_at"] == nil || renamed.str("created_at") != added.str("created_at") {
		t.Fatalf("rename: %s", renamed.raw)
	}
	if got := pkList(t, a, token); got[0]["name"] != "Phone" {
		t.Fatalf("list after rename: %v", got)
	}
	for _, bad := range []any{map[string]any{"name": ""}, map[string]any{"name": "   "}, map[string]any{"name": 7}, map[string]any{}, "not json"} {
		if r := a.call(t, "PATCH", api+"/passkey/"+phoneID, token, bad); r.status != 400 || r.errCode() != "validation_failed" {
			t.Fatalf("rename to %v = %d %s", bad, r.status, r.raw)
		}
	}
	if r := a.call(t, "PATCH", api+"/passkey/not-a-uuid", token, map[string]any{"name": "x"}); r.status != 400 {
		t.Fatalf("rename of a non-UUID = %d %s", r.status, r.raw)
	}
	if r := a.call(t, "PATCH", api+"/passkey/"+uuid.NewString(), token, map[string]any{"name": "x"}); r.status != 404 || r.errCode() != "not_found" {
		t.Fatalf("rename of an unknown passkey = %d %s", r.status, r.raw)
	}
	if r := a.call(t, "GET", api+"/passkey/list", "", nil); r.status != 401 {
		t.Fatalf("list without a token = %d", r.status)
	}

	// Another user sees none of it and can touch none of it.
	bob := c.signupVerified(t, a, "bob@example.com", "another good password", nil).str("access_token")
	if got := pkList(t, a, bob); len(got) != 0 {
		t.Fatalf("bob lists %v", got)
	}
	if r := a.call(t, "PATCH", api+"/passkey/"+phoneID, bob, map[string]any{"name": "mine"}); r.status != 404 || r.errCode() != "not_found" {
		t.Fatalf("bob renames ada's passkey = %d %s", r.status, r.raw)
	}
	if r := a.call(t, "DELETE", api+"/passkey/"+phoneID, bob, nil); r.status != 404 || r.errCode() != "not_found" {
		t.Fatalf("bob removes ada's passkey = %d %s", r.status, r.raw)
	}

	// Remove: 204, gone from the list at once, and it signs in no more.
	b.must(t, 204, "DELETE", api+"/passkey/"+phoneID, token, nil)
	if got := pkList(t, a, token); len(got) != 1 || got[0]["id"] != keyID {
		t.Fatalf("list after remove: %v", got)
	}
	if r := a.call(t, "DELETE", api+"/passkey/"+phoneID, token, nil); r.status != 404 {
		t.Fatalf("remove twice = %d %s", r.status, r.raw)
	}
	assertion, err = phone.Login(pkLoginOptions(t, a), pkClient, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := pkLoginWith(t, a, assertion); r.status != 401 || r.errCode() != "invalid_credentials" || r.str("access_token") != "" {
		t.Fatalf("removed passkey login = %d %s", r.status, r.raw)
	}
	// Its authenticator may register afresh: the old claim was released.
	if r, _ := pkRegister(t, a, token, phone, ""); r.status != 201 {
		t.Fatalf("register again after removing = %d %s", r.status, r.raw)
	}
}

// TestPasskeyBadInput: malformed credentials, the wrong origin or RP id, an
// unknown credential, a tampered signature, a replayed or expired challenge,
// and a sign count that goes back are refused in the error shape, with no
// tokens and no session, and never a 500.
func TestPasskeyBadInput(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	logs := &logBuffer{}
	in := c.startLogged(t, logs)
	pool := c.dbPool(t)
	signup := c.signupVerified(t, in, "ada@example.com", "correct horse battery", nil)
	token := signup.str("access_token")
	bobSignup := c.signupVerified(t, in, "bob@example.com", "another good password", nil)
	bob := bobSignup.str("access_token")

	auth := &softauthn.Authenticator{AAGUID: uuid.New()}
	if r, _ := pkRegister(t, in, token, auth, "key"); r.status != 201 {
		t.Fatalf("register = %d %s", r.status, r.raw)
	}
	sessionsBefore := countEvents(t, c, "SessionStarted")

	refused := func(what string, r response, status int, code string) {
		t.Helper()
		if r.status != status || r.errCode() != code {
			t.Errorf("%s = %d %s; want %d %s", what, r.status, r.raw, status, code)
		}
		if p := errorShapeProblems(r); len(p) > 0 {
			t.Errorf("%s: %v", what, p)
		}
		if strings.Contains(r.raw, "access_token") || strings.Contains(r.raw, "refresh_token") {
			t.Errorf("%s answered tokens: %s", what, r.raw)
		}
	}
	expireCeremonies := func() {
		t.Helper()
		if _, err := pool.Exec(context.Background(), `UPDATE webauthn_ceremonies SET expires_at = now() - interval '1 second'`); err != nil {
			t.Fatal(err)
		}
	}
	verifyReg := func(tok string, body any) response {
		t.Helper()
		return in.call(t, "POST", api+"/passkey/register/verify", tok, body)
	}
	newRegistration := func(client softauthn.Client) *softauthn.RegistrationResponse {
		t.Helper()
		opts := in.must(t, 200, "POST", api+"/passkey/register/options", token, nil)
		other := &softauthn.Authenticator{AAGUID: uuid.New()}
		reg, _, err := other.Register([]byte(opts.raw), client)
		if err != nil {
			t.Fatal(err)
		}
		return reg
	}

	// --- Registration ---
	for name, body := range map[string]any{
		"no body":               "",
		"not JSON":              "{credential",
		"no credential":         map[string]any{"name": "x"},
		"null credential":       map[string]any{"credential": nil},
		"credential a string":   map[string]any{"credential": "abc"},
		"credential an array":   map[string]any{"credential": []int{1}},
		"empty credential":      map[string]any{"credential": map[string]any{}},
		"name not a string":     map[string]any{"name": 5, "credential": map[string]any{}},
		"bad base64":            map[string]any{"credential": map[string]any{"id": "!!", "rawId": "!!", "type": "public-key", "response": map[string]any{"clientDataJSON": "%%%", "attestationObject": "***"}}},
		"garbage attestation":   map[string]any{"credential": map[string]any{"id": "AAAA", "rawId": "AAAA", "type": "public-key", "response": map[string]any{"clientDataJSON": pkB64JSON(map[string]any{"type": "webauthn.create", "challenge": "AAAA", "origin": "http://localhost:8080"}), "attestationObject": "AAAA"}}},
		"clientData not JSON":   map[string]any{"credential": map[string]any{"id": "AAAA", "rawId": "AAAA", "type": "public-key", "response": map[string]any{"clientDataJSON": "AAAA", "attestationObject": "AAAA"}}},
		"wrong credential type": map[string]any{"credential": map[string]any{"id": "AAAA", "rawId": "AAAA", "type": "password", "response": map[string]any{}}},
	} {
		refused("registration with "+name, verifyReg(token, body), 400, "validation_failed")
	}
	reg := newRegistration(softauthn.Client{Origin: "https://evil.example"})
	refused("registration from the wrong origin", verifyReg(token, map[string]any{"credential": reg}), 400, "validation_failed")
	reg = newRegistration(softauthn.Client{Origin: pkClient.Origin, RPID: "evil.example"})
	refused("registration for the wrong RP id", verifyReg(token, map[string]any{"credential": reg}), 400, "validation_failed")
	reg = newRegistration(pkClient)
	reg.Response.AttestationObject = softauthn.Tamper(reg.Response.AttestationObject)
	refused("registration with a tampered attestation object", verifyReg(token, map[string]any{"credential": reg}), 400, "validation_failed")
	reg = newRegistration(pkClient)
	expireCeremonies()
	refused("registration after its challenge expired", verifyReg(token, map[string]any{"credential": reg}), 400, "validation_failed")
	// Bob cannot finish Ada's ceremony, and trying leaves it to her.
	reg = newRegistration(pkClient)
	refused("registration with another user's challenge", verifyReg(bob, map[string]any{"credential": reg}), 400, "validation_failed")
	in.must(t, 201, "POST", api+"/passkey/register/verify", token, map[string]any{"credential": reg})
	refused("replayed registration", verifyReg(token, map[string]any{"credential": reg}), 400, "validation_failed")
	refused("registration without a token", verifyReg("", map[string]any{"credential": reg}), 401, "unauthorized")

	// --- Sign-in ---
	for name, body := range map[string]any{
		"no body":                 "",
		"not JSON":                "{credential",
		"no credential":           map[string]any{},
		"null credential":         map[string]any{"credential": nil},
		"credential a number":     map[string]any{"credential": 5},
		"empty credential":        map[string]any{"credential": map[string]any{}},
		"bad base64":              map[string]any{"credential": map[string]any{"id": "!!", "rawId": "!!", "type": "public-key", "response": map[string]any{"clientDataJSON": "%%", "authenticatorData": "%%", "signature": "%%"}}},
		"short authenticatorData": map[string]any{"credential": map[string]any{"id": "AAAA", "rawId": "AAAA", "type": "public-key", "response": map[string]any{"clientDataJSON": pkB64JSON(map[string]any{"type": "webauthn.get", "challenge": "AAAA", "origin": "http://localhost:8080"}), "authenticatorData": "AAAA", "signature": "AAAA"}}},
	} {
		refused("sign-in with "+name, in.call(t, "POST", api+"/passkey/login/verify", "", body), 400, "validation_failed")
	}
	login := func(mutate func(*softauthn.AssertionResponse), client softauthn.Client, use *softauthn.Credential) response {
		t.Helper()
		a, err := auth.Login(pkLoginOptions(t, in), client, use)
		if err != nil {
			t.Fatal(err)
		}
		if mutate != nil {
			mutate(a)
		}
		return pkLoginWith(t, in, a)
	}
	cred := auth.Credentials()[0]
	refused("sign-in from the wrong origin", login(nil, softauthn.Client{Origin: "https://evil.example"}, nil), 401, "invalid_credentials")
	refused("sign-in for the wrong RP id", login(nil, softauthn.Client{Origin: pkClient.Origin, RPID: "evil.example"}, cred), 401, "invalid_credentials")
	refused("sign-in with a tampered signature", login(func(a *softauthn.AssertionResponse) {
		a.Response.Signature = softauthn.Tamper(a.Response.Signature)
	}, pkClient, nil), 401, "invalid_credentials")
	refused("sign-in with tampered authenticator data", login(func(a *softauthn.AssertionResponse) {
		raw, _ := base64.RawURLEncoding.DecodeString(a.Response.AuthenticatorData)
		raw[len(raw)-1] ^= 0x40 // the sign count
		a.Response.AuthenticatorData = base64.RawURLEncoding.EncodeToString(raw)
	}, pkClient, nil), 401, "invalid_credentials")
	refused("sign-in with bob's user handle", login(func(a *softauthn.AssertionResponse) {
		id := uuid.MustParse(bobSignup.str("user", "id"))
		a.Response.UserHandle = base64.RawURLEncoding.EncodeToString(id[:])
	}, pkClient, nil), 401, "invalid_credentials")
	refused("sign-in without a user handle", login(func(a *softauthn.AssertionResponse) { a.Response.UserHandle = "" }, pkClient, nil), 401, "invalid_credentials")
	stranger := &softauthn.Authenticator{AAGUID: uuid.New()}
	if _, _, err := stranger.Register(pkFakeCreationOptions(signup.str("user", "id")), pkClient); err != nil {
		t.Fatal(err)
	}
	a, err := stranger.Login(pkLoginOptions(t, in), pkClient, nil)
	if err != nil {
		t.Fatal(err)
	}
	refused("sign-in with an unknown credential", pkLoginWith(t, in, a), 401, "invalid_credentials")

	// Challenges: made up, expired, replayed, or a registration's.
	a, _ = auth.Login([]byte(`{"publicKey":{"challenge":"`+base64.RawURLEncoding.EncodeToString(make([]byte, 32))+`","rpId":"localhost"}}`), pkClient, nil)
	refused("sign-in with a made-up challenge", pkLoginWith(t, in, a), 401, "invalid_challenge")
	a, _ = auth.Login(pkLoginOptions(t, in), pkClient, nil)
	expireCeremonies()
	refused("sign-in after its challenge expired", pkLoginWith(t, in, a), 401, "invalid_challenge")
	regOpts := in.must(t, 200, "POST", api+"/passkey/register/options", token, nil)
	var ro struct{ PublicKey struct{ Challenge string } }
	_ = json.Unmarshal([]byte(regOpts.raw), &ro)
	a, _ = auth.Login([]byte(`{"publicKey":{"challenge":"`+ro.PublicKey.Challenge+`","rpId":"localhost"}}`), pkClient, nil)
	refused("sign-in with a registration's challenge", pkLoginWith(t, in, a), 401, "invalid_challenge")

	if n := countEvents(t, c, "SessionStarted"); n != sessionsBefore {
		t.Fatalf("bad sign-ins started %d sessions", n-sessionsBefore)
	}

	// A good sign-in, then its replay.
	a, _ = auth.Login(pkLoginOptions(t, in), pkClient, nil)
	if r := pkLoginWith(t, in, a); r.status != 200 {
		t.Fatalf("good sign-in = %d %s", r.status, r.raw)
	}
	refused("replayed sign-in", pkLoginWith(t, in, a), 401, "invalid_challenge")

	// A sign count that goes back (or stays) is a possible clone: refused
	// and logged.
	good := cred.SignCount
	cred.SignCount = good - 2 // Login counts one up: good-1
	refused("sign-in with a sign count that went back", login(nil, pkClient, nil), 401, "invalid_credentials")
	cred.SignCount = good - 1 // the same count again
	refused("sign-in with the same sign count again", login(nil, pkClient, nil), 401, "invalid_credentials")
	if !strings.Contains(logs.String(), "possible cloned authenticator") {
		t.Fatal("a sign count that went back was not logged as a possible cloned authenticator")
	}
	cred.SignCount = good + 10
	if r := login(nil, pkClient, nil); r.status != 200 {
		t.Fatalf("sign-in with a higher sign count = %d %s", r.status, r.raw)
	}

	// An authenticator without a counter (always 0) signs in every time.
	counterless := &softauthn.Authenticator{AAGUID: uuid.New(), NoCounter: true, BackupEligible: true}
	if r, _ := pkRegister(t, in, bob, counterless, ""); r.status != 201 {
		t.Fatalf("register a counterless passkey = %d %s", r.status, r.raw)
	}
	for i := range 2 {
		a, _ := counterless.Login(pkLoginOptions(t, in), pkClient, nil)
		if r := pkLoginWith(t, in, a); r.status != 200 || r.str("user", "email") != "bob@example.com" {
			t.Fatalf("counterless sign-in %d = %d %s", i, r.status, r.raw)
		}
	}
	if strings.Contains(logs.String(), `"level":"ERROR"`) {
		t.Fatalf("errors logged: %s", logs.String())
	}
}

func pkB64JSON(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

// pkFakeCreationOptions are registration options authd never issued, for a
// credential authd never registered.
func pkFakeCreationOptions(userID string) []byte {
	id := uuid.MustParse(userID)
	return []byte(`{"publicKey":{"rp":{"id":"localhost","name":"x"},"user":{"id":"` + base64.RawURLEncoding.EncodeToString(id[:]) +
		`","name":"x","displayName":"x"},"challenge":"` + base64.RawURLEncoding.EncodeToString(make([]byte, 32)) +
		`","pubKeyCredParams":[{"type":"public-key","alg":-7}]}}`)
}
