package commands

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/authd/authd/internal/testenv"
)

// A sign-in is the proof a session's tokens carry as auth_time; a refresh
// keeps it, however much later.
func TestAuthTimeSetBySignInKeptByRefresh(t *testing.T) {
	t.Parallel()
	clk := testenv.NewClock(time.Now().Add(-time.Hour))
	a := newApp(t, clock(clk.Now))
	const email, pw = "auth-time@example.com", "correct horse battery"
	signup := a.signUp(t, email, pw)
	if at := a.claims(t, signup.AccessToken).AuthTime; !at.Equal(clk.Now().Truncate(time.Second)) {
		t.Fatalf("signup's auth_time = %v, want %v", at, clk.Now())
	}
	clk.Advance(time.Minute)
	signedIn := clk.Now().Truncate(time.Second)
	login := a.login(t, email, pw)
	if at := a.claims(t, login.AccessToken).AuthTime; !at.Equal(signedIn) {
		t.Fatalf("login's auth_time = %v, want %v", at, signedIn)
	}
	clk.Advance(20 * time.Minute)
	p, err := a.Refresh(t.Context(), login.RefreshToken, request)
	if err != nil {
		t.Fatal(err)
	}
	c := a.claims(t, p.AccessToken)
	if !c.AuthTime.Equal(signedIn) || !c.IssuedAt.After(signedIn) {
		t.Fatalf("after a refresh: auth_time %v, iat %v; want auth_time kept at %v", c.AuthTime, c.IssuedAt, signedIn)
	}
}

// A sensitive change needs a proof no older than the max age; a token
// without auth_time (issued before authd put it in) has none.
func TestRequireFresh(t *testing.T) {
	t.Parallel()
	// On a whole second, as auth_time is on the wire.
	clk := testenv.NewClock(time.Now().Add(-time.Hour).Truncate(time.Second))
	a := newApp(t, clock(clk.Now))
	signup := a.signUp(t, "require-fresh@example.com", "correct horse battery")
	caller := a.claims(t, signup.AccessToken)
	if err := a.RequireFresh(caller); err != nil {
		t.Fatalf("right after signing up: %v", err)
	}
	clk.Advance(10 * time.Minute) // the default max age, its end included
	if err := a.RequireFresh(caller); err != nil {
		t.Fatalf("at the max age: %v", err)
	}
	clk.Advance(time.Second)
	if err := a.RequireFresh(caller); !errors.Is(err, ErrReauthenticationRequired) {
		t.Fatalf("past the max age: %v; want ErrReauthenticationRequired", err)
	}
	caller.AuthTime = time.Time{}
	clk.Advance(-time.Hour)
	if err := a.RequireFresh(caller); !errors.Is(err, ErrReauthenticationRequired) {
		t.Fatalf("no auth_time: %v; want ErrReauthenticationRequired", err)
	}
}

// Re-authenticating with the password makes the same session fresh: a new
// pair, auth_time now, amr the proof; the refresh token before it is rotated
// away; later refreshes keep the new proof, also on an instance that loads
// the session from the ends of its stream only.
func TestReauthenticateWithPassword(t *testing.T) {
	t.Parallel()
	clk := testenv.NewClock(time.Now().Add(-time.Hour))
	a, b := twoApps(t, clock(clk.Now), grace(0))
	ctx := t.Context()
	const email, pw = "reauth@example.com", "correct horse battery"
	login := a.signUp(t, email, pw)
	clk.Advance(11 * time.Minute)
	stale := a.claims(t, login.AccessToken)
	if err := a.RequireFresh(stale); !errors.Is(err, ErrReauthenticationRequired) {
		t.Fatalf("before: %v; want ErrReauthenticationRequired", err)
	}

	fresh, err := a.Reauthenticate(ctx, stale, ReauthInput{Password: pw}, request)
	if err != nil {
		t.Fatal(err)
	}
	c := a.claims(t, fresh.AccessToken)
	if fresh.SessionID != login.SessionID || c.SessionID != login.SessionID || fresh.RefreshToken == login.RefreshToken {
		t.Fatalf("re-authentication answered session %s (claims %s), refresh token new: %v; want a new pair for %s",
			fresh.SessionID, c.SessionID, fresh.RefreshToken != login.RefreshToken, login.SessionID)
	}
	if !c.AuthTime.Equal(clk.Now().Truncate(time.Second)) || !slices.Equal(c.AMR, []string{"pwd"}) {
		t.Fatalf("auth_time %v amr %v; want %v and [pwd]", c.AuthTime, c.AMR, clk.Now())
	}
	if err := a.RequireFresh(c); err != nil {
		t.Fatalf("after: %v", err)
	}

	clk.Advance(time.Minute)
	refresh := fresh.RefreshToken
	for i, in := range []*testApp{a, b, b, b, a} {
		p, err := in.Refresh(ctx, refresh, request)
		if err != nil {
			t.Fatalf("refresh %d: %v", i+1, err)
		}
		if got := a.claims(t, p.AccessToken); !got.AuthTime.Equal(c.AuthTime) || !slices.Equal(got.AMR, c.AMR) {
			t.Fatalf("refresh %d: auth_time %v amr %v; want the re-authentication's %v %v", i+1, got.AuthTime, got.AMR, c.AuthTime, c.AMR)
		}
		refresh = p.RefreshToken
	}
	// The token the re-authentication rotated away is reuse: the session ends.
	if _, err := a.Refresh(ctx, login.RefreshToken, request); !errors.Is(err, ErrInvalidRefreshToken) {
		t.Fatalf("the refresh token from before: %v; want ErrInvalidRefreshToken", err)
	}
	if _, err := a.Reauthenticate(ctx, c, ReauthInput{Password: pw}, request); !errors.Is(err, ErrSessionEnded) {
		t.Fatalf("re-authenticating a revoked session: %v; want ErrSessionEnded", err)
	}
}

// Wrong answers count against the account like logins do; a user with
// two-factor on adds a code, which is checked and used up.
func TestReauthenticateWrongAnswersAndSecondFactor(t *testing.T) {
	t.Parallel()
	a, clk := heldLimitsApp(t)
	ctx := t.Context()
	const email, pw = "reauth-wrong@example.com", "correct horse battery"
	login := a.signUp(t, email, pw)
	caller := a.claims(t, login.AccessToken)

	for _, in := range []ReauthInput{{}, {Password: pw, EmailCode: "123456"}} {
		var ve *ValidationError
		if _, err := a.Reauthenticate(ctx, caller, in, request); !errors.As(err, &ve) {
			t.Fatalf("%+v: %v; want a ValidationError", in, err)
		}
	}
	wrong := 0
	for ; wrong < 20; wrong++ {
		_, err := a.Reauthenticate(ctx, caller, ReauthInput{Password: "wrong " + pw}, request)
		if errors.Is(err, ErrInvalidCredentials) {
			continue
		}
		retryLater(t, "a wrong password again", err, time.Minute)
		break
	}
	if wrong == 0 || wrong == 20 {
		t.Fatalf("%d wrong passwords before the account had to wait", wrong)
	}
	_, err := a.Login(ctx, email, pw, request)
	retryLater(t, "a login after wrong re-authentications", err, time.Minute)
	clk.Advance(time.Hour)

	// Two-factor on: the password alone is not enough.
	setup, err := a.SetupTwoFactor(ctx, caller, request)
	if err != nil {
		t.Fatal(err)
	}
	app := &testenv.TOTPApp{Secret: setup.Secret}
	backup, err := a.EnableTwoFactor(ctx, caller, app.Next(t), request)
	if err != nil {
		t.Fatal(err)
	}
	var ve *ValidationError
	if _, err := a.Reauthenticate(ctx, caller, ReauthInput{Password: pw}, request); !errors.As(err, &ve) || ve.Field != "code" {
		t.Fatalf("2FA on, no code: %v; want a ValidationError of code", err)
	}
	if _, err := a.Reauthenticate(ctx, caller, ReauthInput{Password: pw, Code: app.Wrong(t)}, request); !errors.Is(err, ErrInvalidCode) {
		t.Fatalf("2FA on, a wrong code: %v; want ErrInvalidCode", err)
	}
	if _, err := a.Reauthenticate(ctx, caller, ReauthInput{Password: "wrong " + pw, Code: app.Next(t)}, request); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("2FA on, a wrong password: %v; want ErrInvalidCredentials", err)
	}
	fresh, err := a.Reauthenticate(ctx, caller, ReauthInput{Password: pw, Code: backup[0]}, request)
	if err != nil {
		t.Fatal(err)
	}
	if amr := a.claims(t, fresh.AccessToken).AMR; !slices.Equal(amr, []string{"pwd", "mfa"}) {
		t.Fatalf("amr %v; want [pwd mfa]", amr)
	}
	if _, err := a.Reauthenticate(ctx, caller, ReauthInput{Password: pw, Code: backup[0]}, request); !errors.Is(err, ErrInvalidCode) {
		t.Fatalf("a backup code used twice: %v; want ErrInvalidCode", err)
	}
}

// A user re-authenticates with a code mailed to their address: used once,
// and a wrong one is refused.
func TestReauthenticateWithAnEmailedCode(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	ctx := t.Context()
	const email = "reauth-code@example.com"
	login := a.signUp(t, email, "correct horse battery")
	caller := a.claims(t, login.AccessToken)
	if err := a.SendReauthCode(ctx, caller, request); err != nil {
		t.Fatal(err)
	}
	code := a.nextCode(t, email)
	wrong := "000000"
	if code == wrong {
		wrong = "111111"
	}
	if _, err := a.Reauthenticate(ctx, caller, ReauthInput{EmailCode: wrong}, request); !errors.Is(err, ErrInvalidCode) {
		t.Fatalf("a wrong code: %v; want ErrInvalidCode", err)
	}
	fresh, err := a.Reauthenticate(ctx, caller, ReauthInput{EmailCode: code}, request)
	if err != nil {
		t.Fatal(err)
	}
	if c := a.claims(t, fresh.AccessToken); fresh.SessionID != login.SessionID || !slices.Equal(c.AMR, []string{"otp"}) {
		t.Fatalf("session %s amr %v; want %s [otp]", fresh.SessionID, c.AMR, login.SessionID)
	}
	if _, err := a.Reauthenticate(ctx, caller, ReauthInput{EmailCode: code}, request); !errors.Is(err, ErrInvalidCode) {
		t.Fatalf("the code again: %v; want ErrInvalidCode", err)
	}
}
