package commands

import (
	"errors"
	"slices"
	"testing"
)

// A password change revokes every other session in its own commit, keeps
// the caller's, and the old password stops working.
func TestChangePasswordRevokesTheOthersInItsCommit(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	const email, pw = "change-pw@example.com", "correct horse battery"
	mine := a.signUp(t, email, pw)
	others := []Tokens{a.login(t, email, pw), a.login(t, email, pw)}
	before := len(a.eventTypes(t, 0))
	n, err := a.ChangePassword(t.Context(), a.claims(t, mine.AccessToken), "a whole new passphrase", request)
	if err != nil || n != 2 {
		t.Fatalf("ChangePassword = %d, %v; want 2 revoked", n, err)
	}
	if got := a.eventTypes(t, before); !slices.Equal(got, []string{"PasswordChanged", "SessionRevoked", "SessionRevoked"}) {
		t.Fatalf("events %v; want PasswordChanged and two SessionRevoked, one commit", got)
	}
	for _, o := range others {
		if a.authorized(t, o.AccessToken) {
			t.Fatal("another session's access token still works")
		}
		if _, err := a.Refresh(t.Context(), o.RefreshToken, request); !errors.Is(err, ErrInvalidRefreshToken) {
			t.Fatalf("another session's refresh: %v; want ErrInvalidRefreshToken", err)
		}
	}
	if !a.authorized(t, mine.AccessToken) {
		t.Fatal("the caller's own access token is refused")
	}
	if _, err := a.Login(t.Context(), email, pw, request); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("the old password: %v; want ErrInvalidCredentials", err)
	}
	a.login(t, email, "a whole new passphrase")
	var v *ValidationError
	if _, err := a.ChangePassword(t.Context(), a.claims(t, mine.AccessToken), "short", request); !errors.As(err, &v) || v.Field != "new_password" {
		t.Fatalf("a short password: %v; want a validation error of new_password", err)
	}
}

// An email change moves the claim of the address: the new one signs in, the
// old one does not; a wrong code is refused, and an address taken between
// the request and the code is a conflict.
func TestEmailChangeMovesTheClaim(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	const old, next, pw = "before@example.com", "after@example.com", "correct horse battery"
	mine := a.signUp(t, old, pw)
	caller := a.claims(t, mine.AccessToken)
	if err := a.RequestEmailChange(t.Context(), caller, next, request); err != nil {
		t.Fatal(err)
	}
	code := a.nextCode(t, next)
	wrong := "000000"
	if code == wrong {
		wrong = "111111"
	}
	if err := a.VerifyEmailChange(t.Context(), caller, wrong, request); !errors.Is(err, ErrInvalidCode) {
		t.Fatalf("a wrong code: %v; want ErrInvalidCode", err)
	}
	if err := a.VerifyEmailChange(t.Context(), caller, code, request); err != nil {
		t.Fatal(err)
	}
	if u := a.user(t, caller.UserID); u.Email != next || !u.EmailVerified {
		t.Fatalf("user after the change: %+v", u)
	}
	a.login(t, next, pw)
	if _, err := a.Login(t.Context(), old, pw, request); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("the old address: %v; want ErrInvalidCredentials", err)
	}

	const contested = "contested@example.com"
	if err := a.RequestEmailChange(t.Context(), caller, contested, request); err != nil {
		t.Fatal(err)
	}
	code = a.nextCode(t, contested)
	if err := a.Register(t.Context(), RegisterInput{Email: contested, Password: pw}, request); err != nil {
		t.Fatal(err)
	}
	if err := a.VerifyEmailChange(t.Context(), caller, code, request); !errors.Is(err, ErrConflict) {
		t.Fatalf("verify after the address was taken: %v; want ErrConflict", err)
	}
	if u := a.user(t, caller.UserID); u.Email != next {
		t.Fatalf("the account moved anyway: %+v", u)
	}
}

// A profile change stores the canonical locale; one that changes nothing
// records nothing; a malformed locale is a validation error.
func TestUpdateProfile(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	mine := a.signUp(t, "profile@example.com", "correct horse battery")
	caller := a.claims(t, mine.AccessToken)
	name, locale := "Ada", "de-ch"
	if err := a.UpdateProfile(t.Context(), caller, ProfileInput{Name: &name, Locale: &locale}, request); err != nil {
		t.Fatal(err)
	}
	if u := a.user(t, caller.UserID); u.Name != "Ada" || u.Locale != "de-CH" {
		t.Fatalf("user after PATCH: %+v; want Ada, de-CH", u)
	}
	before := len(a.eventTypes(t, 0))
	if err := a.UpdateProfile(t.Context(), caller, ProfileInput{Name: &name}, request); err != nil {
		t.Fatal(err)
	}
	if got := a.eventTypes(t, before); len(got) != 0 {
		t.Fatalf("a change to nothing recorded %v", got)
	}
	bad := "no such locale!"
	var v *ValidationError
	if err := a.UpdateProfile(t.Context(), caller, ProfileInput{Locale: &bad}, request); !errors.As(err, &v) || v.Field != "locale" {
		t.Fatalf("a malformed locale: %v; want a validation error of locale", err)
	}
}

// A sign-in that decided on the account before a password change committed
// starts no session after it: the change revoked every session it saw, and
// one it did not see must not outlive it. A sign-in that raced a change that
// left the password alone goes on.
func TestASignInRacingAPasswordChangeStartsNoSession(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	ctx := t.Context()
	const email, pw = "race-pw@example.com", "correct horse battery"
	mine := a.signUp(t, email, pw)
	caller := a.claims(t, mine.AccessToken)

	// Each racing login checked the password against the account as it was
	// before the change, and commits after it.
	admitted := func() loginAttempt {
		at, settle, err := a.admitLogin(ctx, email, request)
		if err != nil {
			t.Fatal(err)
		}
		settle(endSignedIn)
		return at
	}
	before := admitted()
	name := "Renamed"
	if err := a.UpdateProfile(ctx, caller, ProfileInput{Name: &name}, request); err != nil {
		t.Fatal(err)
	}
	if s, _, err := a.passwordSignIn(ctx, before, pw, false, request); err != nil || s.Tokens == nil {
		t.Fatalf("a sign-in racing a profile change: %+v, %v; want a session", s, err)
	}

	before = admitted()
	stale := before.user
	if _, err := a.ChangePassword(ctx, caller, "a whole new passphrase", request); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Sessions.openSession(ctx, a.newChange(request), stale, []string{"pwd"}, request); !errors.Is(err, ErrConflict) {
		t.Fatalf("a session on the account as it was before the password change: %v; want ErrConflict", err)
	}
	if _, _, err := a.passwordSignIn(ctx, before, pw, false, request); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("a sign-in with the old password racing the change: %v; want ErrInvalidCredentials", err)
	}
}
