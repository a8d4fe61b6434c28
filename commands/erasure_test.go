package commands

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/authd/authd/internal/testenv"
)

// requireErased fails the test unless the write side erased the account:
// its data key destroyed, its stream messages queued for deletion, no unique
// key and no row of the write-side tables left that names it or its
// address.
func (a *testApp) requireErased(t *testing.T, user uuid.UUID, email string) {
	t.Helper()
	var shredded, queued bool
	var keys, left int
	if err := a.pool.QueryRow(t.Context(), `SELECT
		EXISTS (SELECT 1 FROM user_keys WHERE user_id = $1 AND sealed_key IS NULL AND erased_at IS NOT NULL),
		-- Queued, or purged already (the purge forgets the records of the
		-- messages it deletes with the erasure): the relay runs here.
		EXISTS (SELECT 1 FROM stream_erasures WHERE user_id = $1) OR NOT EXISTS (SELECT 1 FROM stream_messages WHERE user_id = $1),
		(SELECT count(*) FROM unique_keys WHERE owner = $1::text),
		(SELECT count(*) FROM email_codes WHERE email = $2) + (SELECT count(*) FROM known_networks WHERE user_id = $1)
		+ (SELECT count(*) FROM notice_devices WHERE user_id = $1) + (SELECT count(*) FROM code_guessing WHERE user_id = $1)
		+ (SELECT count(*) FROM two_factor_challenges WHERE user_id = $1) + (SELECT count(*) FROM webauthn_ceremonies WHERE user_id = $1)`,
		user, email).Scan(&shredded, &queued, &keys, &left); err != nil {
		t.Fatal(err)
	}
	if !shredded || !queued || keys != 0 || left != 0 {
		t.Errorf("account %s: key shredded %v, stream purge queued or done %v, %d unique keys and %d write-side rows left; want erased",
			user, shredded, queued, keys, left)
	}
}

// DELETE /me is one commit: every session revoked, AccountDeleted with ids
// only, the keys released and the write side erased. Every token of the user
// is refused at once here and, through the revocation feed, on another
// instance; the account can no longer sign in or be loaded, and its address
// signs up again at once.
func TestDeleteAccountErasesInOneCommit(t *testing.T) {
	t.Parallel()
	a, b := twoApps(t)
	const email, pw = "leaving@example.com", "correct horse battery"
	mine := a.signUp(t, email, pw)
	others := []Tokens{a.login(t, email, pw), a.login(t, email, pw)}
	all := append([]Tokens{mine}, others...)
	caller := a.claims(t, mine.AccessToken)
	before := len(a.eventTypes(t, 0))

	if err := a.DeleteAccount(t.Context(), caller, request); err != nil {
		t.Fatal(err)
	}
	got := a.eventTypes(t, before)
	if want := []string{"SessionRevoked", "SessionRevoked", "SessionRevoked", "AccountDeleted"}; !slices.Equal(got, want) {
		t.Fatalf("events %v; want %v", got, want)
	}
	var commits int
	var meta string
	if err := a.pool.QueryRow(t.Context(), `SELECT (SELECT count(DISTINCT tx_id) FROM events WHERE position > (SELECT position FROM events ORDER BY position OFFSET $1 - 1 LIMIT 1)),
		(SELECT metadata::text FROM events WHERE type = 'AccountDeleted')`, before).Scan(&commits, &meta); err != nil {
		t.Fatal(err)
	}
	if commits != 1 {
		t.Errorf("the deletion took %d commits, want one", commits)
	}
	if strings.Contains(meta, request.IP) || strings.Contains(meta, "Mozilla") {
		t.Errorf("AccountDeleted's metadata %s names the client", meta)
	}
	a.requireErased(t, caller.UserID, email)

	for _, tok := range all {
		if a.authorized(t, tok.AccessToken) {
			t.Error("an access token of the deleted account still works on the instance that deleted it")
		}
		if _, err := a.Refresh(t.Context(), tok.RefreshToken, request); !errors.Is(err, ErrInvalidRefreshToken) {
			t.Errorf("a refresh of the deleted account: %v; want ErrInvalidRefreshToken", err)
		}
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return !b.authorized(t, mine.AccessToken) })

	if _, err := a.Login(t.Context(), email, pw, request); !errors.Is(err, ErrInvalidCredentials) {
		t.Errorf("a login of the deleted account: %v; want ErrInvalidCredentials", err)
	}
	if _, _, err := a.AccountFromLog(t.Context(), caller.UserID); !errors.Is(err, ErrNotFound) {
		t.Errorf("the deleted account from the log: %v; want ErrNotFound", err)
	}
	if _, err := a.Reauthenticate(t.Context(), caller, ReauthInput{Password: pw}, request); err == nil {
		t.Error("the deleted account re-authenticated")
	}
	if err := a.DeleteAccount(t.Context(), caller, request); !errors.Is(err, ErrSessionEnded) {
		t.Errorf("deleting it again: %v; want ErrSessionEnded", err)
	}

	again := a.signUp(t, email, "another good passphrase")
	if again.UserID == caller.UserID {
		t.Fatal("signing up again gave the deleted account's id")
	}
	if u := a.user(t, again.UserID); u.Email != email || !u.EmailVerified {
		t.Errorf("the new account: %+v", u)
	}
	// No write waits for the activity projection: poll for it.
	testenv.Eventually(t, 10*time.Second, func() bool {
		var rows int
		if err := a.pool.QueryRow(t.Context(), `SELECT (SELECT count(*) FROM users WHERE id = $1) + (SELECT count(*) FROM sessions WHERE user_id = $1)
			+ (SELECT count(*) FROM tenants WHERE owner_id = $1) + (SELECT count(*) FROM activity WHERE user_id = $1)`, caller.UserID).Scan(&rows); err != nil {
			t.Fatal(err)
		}
		return rows == 0
	})
}

// A Google account's deletion releases its subject and address: the same
// Google account then signs up anew, as a new user.
func TestDeletedGoogleAccountSignsUpAnew(t *testing.T) {
	t.Parallel()
	idp := testenv.NewGoogleIdP(t)
	a := newApp(t, google(idp))
	const sub = "110169484474386270001"
	first := a.googleSignIn(t, idp.Token(t, sub, "ada.google@example.com"))
	caller := a.claims(t, first.AccessToken)
	if err := a.DeleteAccount(t.Context(), caller, request); err != nil {
		t.Fatal(err)
	}
	a.requireErased(t, caller.UserID, "ada.google@example.com")
	again := a.googleSignIn(t, idp.Token(t, sub, "ada.google@example.com"))
	if again.UserID == caller.UserID {
		t.Fatal("the Google account signed in to the deleted account")
	}
}

// The code of every address the account asked to move to is erased with it,
// an earlier one's too: it holds the address in clear.
func TestDeleteAccountErasesTheCodesOfEveryNewAddressAskedFor(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	const email, pw = "mover@example.com", "correct horse battery"
	caller := a.claims(t, a.signUp(t, email, pw).AccessToken)
	for _, next := range []string{"first-move@example.com", "second-move@example.com"} {
		if err := a.RequestEmailChange(t.Context(), caller, next, request); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.DeleteAccount(t.Context(), caller, request); err != nil {
		t.Fatal(err)
	}
	var left int
	if err := a.pool.QueryRow(t.Context(), `SELECT count(*) FROM email_codes WHERE email LIKE '%move@example.com'`).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("%d codes of addresses the deleted account asked to move to are left", left)
	}
}
