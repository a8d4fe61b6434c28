package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/password"
	"github.com/authd/authd/internal/testenv"
)

// from is the test's client, at another address.
func from(ip string) Request {
	r := request
	r.IP = ip
	return r
}

// elsewhere hands out addresses of their own, outside the networks of the
// test's client (192.0.2.0/24), one per call.
func elsewhere() func() Request {
	var mu sync.Mutex
	ip := 0
	return func() Request {
		mu.Lock()
		defer mu.Unlock()
		ip++
		return from(fmt.Sprintf("198.18.%d.%d", ip/250, ip%250+1))
	}
}

// retryLater fails the test unless err refuses for now, for at most max.
func retryLater(t *testing.T, what string, err error, max time.Duration) {
	t.Helper()
	var rl *RetryLaterError
	if !errors.As(err, &rl) {
		t.Errorf("%s: %v; want a RetryLaterError", what, err)
		return
	}
	if rl.After <= 0 || rl.After > max {
		t.Errorf("%s: retry after %s, want (0, %s]", what, rl.After, max)
	}
}

// Passwordless login: a code is sent for an address with an account and,
// after the same answer, for one without; the code signs in (amr otp).
func TestCodeLogin(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	ctx := t.Context()
	const email = "otp@example.com"
	user := a.signUp(t, email, "correct horse battery").UserID

	if err := a.SendCode(ctx, email, PurposeLogin, request); err != nil {
		t.Fatal(err)
	}
	if err := a.SendCode(ctx, "nobody@example.com", PurposeLogin, request); err != nil {
		t.Fatalf("a code for an address without an account: %v; want the same answer", err)
	}
	var invalid *ValidationError
	if err := a.SendCode(ctx, email, "shopping", request); !errors.As(err, &invalid) || invalid.Field != "purpose" {
		t.Fatalf("a bad purpose: %v; want a ValidationError of purpose", err)
	}
	in, err := a.CodeLogin(ctx, email, a.nextCode(t, email), request)
	if err != nil || in.Tokens == nil || in.Tokens.UserID != user {
		t.Fatalf("code login: %+v, %v", in, err)
	}
	if amr := a.claims(t, in.Tokens.AccessToken).AMR; !slices.Equal(amr, []string{"otp"}) {
		t.Fatalf("amr of a code login: %v", amr)
	}
}

// An address is sent five codes in a while, no more: the sixth answers the
// same and sends nothing, so the fifth, which a new code would replace,
// still signs in.
func TestCodesPerAddressHaveAQuota(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	ctx := t.Context()
	const email = "quota@example.com"
	a.signUp(t, email, "correct horse battery")
	var last string
	for i := 1; i <= 5; i++ {
		if err := a.SendCode(ctx, email, PurposeLogin, request); err != nil {
			t.Fatalf("code %d: %v", i, err)
		}
		last = a.nextCode(t, email)
	}
	if err := a.SendCode(ctx, email, PurposeLogin, request); err != nil {
		t.Fatalf("a sixth code: %v; want the same answer as the first five", err)
	}
	if _, err := a.CodeLogin(ctx, email, last, request); err != nil {
		t.Fatalf("the fifth code after a sixth was asked for: %v; want it still good (nothing replaced it)", err)
	}
}

// An emailed login code proves the address too: it signs in an account
// whose signup nobody verified, and verifies it.
func TestCodeLoginVerifiesAPendingSignup(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	ctx := t.Context()
	const email, pw = "pending-otp@example.com", "correct horse battery"
	if err := a.Register(ctx, RegisterInput{Email: email, Password: pw}, request); err != nil {
		t.Fatal(err)
	}
	a.nextCode(t, email)
	if err := a.SendCode(ctx, email, PurposeLogin, request); err != nil {
		t.Fatal(err)
	}
	in, err := a.CodeLogin(ctx, email, a.nextCode(t, email), request)
	if err != nil || in.Tokens == nil {
		t.Fatalf("code login of a pending signup: %+v, %v", in, err)
	}
	if u := a.user(t, in.Tokens.UserID); !u.EmailVerified {
		t.Fatalf("the account after a code login: %+v; want its email verified", u)
	}
	a.login(t, email, pw)
}

// A password reset with an emailed code refuses a short password, then sets
// the new one and ends every session, on every instance: their access and
// refresh tokens stop working, and only a new sign-in is active.
func TestAPasswordResetEndsEverySession(t *testing.T) {
	t.Parallel()
	a, b := twoApps(t)
	ctx := t.Context()
	const email, pw, newPw = "reset@example.com", "correct horse battery", "a brand new passphrase"
	first := a.signUp(t, email, pw)
	other := a.login(t, email, pw)

	if err := a.SendCode(ctx, email, PurposeReset, request); err != nil {
		t.Fatal(err)
	}
	code := a.nextCode(t, email)
	var invalid *ValidationError
	if err := a.resetPassword(ctx, email, code, "short"); !errors.As(err, &invalid) || invalid.Field != "new_password" {
		t.Fatalf("a short new password: %v; want a ValidationError of new_password", err)
	}
	if err := a.resetPassword(ctx, email, code, newPw); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{first.AccessToken, other.AccessToken} {
		if a.authorized(t, tok) {
			t.Fatal("an access token from before the reset still works")
		}
		testenv.Eventually(t, time.Second, func() bool { return !b.authorized(t, tok) })
	}
	if _, err := a.Refresh(ctx, other.RefreshToken, request); !errors.Is(err, ErrInvalidRefreshToken) {
		t.Fatalf("refresh from before the reset: %v; want ErrInvalidRefreshToken", err)
	}
	if _, err := a.Login(ctx, email, pw, request); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("the old password: %v; want ErrInvalidCredentials", err)
	}
	fresh := a.login(t, email, newPw)
	if active, err := a.activeSessions(ctx, fresh.UserID); err != nil || len(active) != 1 || active[0] != fresh.SessionID {
		t.Fatalf("active sessions after the reset: %v, %v; want only the new one", active, err)
	}
}

// A password stored under parameters other than the hasher's (weaker ones
// from before an upgrade, here) is hashed again on the next right password,
// and the new hash is what signs in from then on.
func TestLoginRehashesAPasswordStoredUnderOtherParameters(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const email, pw = "rehash@example.com", "correct horse battery staple"
	user := a.signUp(t, email, pw).UserID
	stream := domain.UserStream(user)
	hashes := func() []string {
		t.Helper()
		events, err := a.store.Load(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range events {
			var s domain.PasswordSecret
			if len(e.Secret) > 0 && json.Unmarshal(e.Secret, &s) == nil && s.PasswordHash != "" {
				out = append(out, s.PasswordHash)
			}
		}
		return out
	}
	// What a failure prints: each hash's parameters, not its salt and key.
	params := func(hashes []string) []string {
		out := make([]string, len(hashes))
		for i, h := range hashes {
			parts := strings.SplitN(h, "$", 5)
			out[i] = strings.Join(parts[:min(4, len(parts))], "$")
		}
		return out
	}

	weak, err := password.NewHasher(password.Params{Memory: 8 * 1024, Time: 1}, 1, 0).Hash(ctx, pw)
	if err != nil {
		t.Fatal(err)
	}
	e, err := eventstore.Encode(&domain.PasswordRehashed{UserID: user, Secret: domain.PasswordSecret{PasswordHash: weak}})
	if err != nil {
		t.Fatal(err)
	}
	e.UserID = user
	if _, err := a.store.Append(ctx, stream, eventstore.AnyVersion, e); err != nil {
		t.Fatal(err)
	}

	a.login(t, email, pw)
	got := hashes()
	owasp := "$argon2id$v=19$m=19456,t=2,p=1$"
	if len(got) != 3 || got[1] != weak || !strings.HasPrefix(got[2], owasp) {
		t.Fatalf("password hashes after a login with the weak one stored: %q; want the signup's, the weak one, and a new one starting %s", params(got), owasp)
	}
	a.login(t, email, pw)
	if again := hashes(); len(again) != 3 {
		t.Fatalf("a login with a current hash stored hashed again: %q", params(again))
	}
	if _, err := a.Login(ctx, email, "not the password", request); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("wrong password after the rehash: %v; want ErrInvalidCredentials", err)
	}
}

// Each login counts against its account while its password is checked, so a
// burst of the owner's own logins looks like guesses in flight at first: more
// than six at once must still get in once the first prove right, not be told
// to retry later.
func TestABurstOfTheOwnersLoginsIsNotThrottled(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	email, pw := "burst@example.com", "correct horse battery"
	a.signUp(t, email, pw)
	const logins = 9
	errs := make([]error, logins)
	var wg sync.WaitGroup
	for i := range logins {
		wg.Go(func() {
			_, errs[i] = a.Login(context.Background(), email, pw, request)
		})
	}
	wg.Wait()
	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, ErrBusy): // the hasher's queue was full: load, not the account
		default:
			t.Errorf("login %d of %d at once: %v", i+1, logins, err)
		}
	}
	if ok == 0 {
		t.Fatal("no login of the burst got in")
	}
}

// heldLimitsApp is an App whose limits go by a clock that stands still
// until the test moves it.
func heldLimitsApp(t *testing.T) (*testApp, *testenv.Clock) {
	t.Helper()
	clk := testenv.NewClock(time.Now())
	return newApp(t, limitsClock(clk.Now)), clk
}

// throttleFromElsewhere sends wrong passwords for email, each from an
// address of its own outside the owner's networks (next), until the
// account's logins from elsewhere must wait at least 2 s by the limits'
// clock, which it moves past the shorter waits.
func throttleFromElsewhere(t *testing.T, a *testApp, clk *testenv.Clock, email string, next func() Request) {
	t.Helper()
	for attempt := 1; attempt <= 40; attempt++ {
		_, err := a.Login(t.Context(), email, "wrong password", next())
		var rl *RetryLaterError
		switch {
		case errors.Is(err, ErrInvalidCredentials):
			continue
		case errors.As(err, &rl):
			if rl.After < 2*time.Second {
				clk.Advance(rl.After)
				continue
			}
			return
		default:
			t.Fatalf("wrong password #%d: %v", attempt, err)
		}
	}
	t.Fatal("40 wrong passwords never made the account wait 2 s")
}

// An attacker who keeps the account's login slow-down, or its code quota
// and a code's tries, spent from elsewhere does not keep the owner out: a
// network that signed in to the account lately has limits of its own
// (API.md, "Edge rules").
func TestAnAttackerElsewhereCannotKeepTheOwnerOut(t *testing.T) {
	t.Parallel()
	// However long the owner's login takes, the attacker's next one must
	// still wait: the slow-down holds until the test moves its clock.
	a, clk := heldLimitsApp(t)
	ctx := t.Context()
	const email, pw = "owner@example.com", "correct horse battery staple"
	// The signup ends in a sign-in from 192.0.2.10: 192.0.2.0/24 is known.
	a.signUp(t, email, pw)
	// Another address of the owner's /24, not the one that signed in.
	home := from("192.0.2.77")
	next := elsewhere()

	t.Run("the right password from home while guesses elsewhere keep the account waiting", func(t *testing.T) {
		throttleFromElsewhere(t, a, clk, email, next)
		if _, err := a.Login(ctx, email, pw, home); err != nil {
			t.Errorf("the owner's right password from a known network: %v", err)
		}
		// Elsewhere, the slow-down still holds, right password or not.
		_, err := a.Login(ctx, email, pw, next())
		retryLater(t, "the right password from elsewhere while the account must wait", err, time.Minute)
	})

	t.Run("a code from home while elsewhere spends the quota and burns codes", func(t *testing.T) {
		attacker := next()
		for i := 1; i <= 5; i++ {
			if err := a.SendCode(ctx, email, PurposeLogin, attacker); err != nil {
				t.Fatalf("a code asked for from elsewhere #%d: %v", i, err)
			}
		}
		// The signup's code took one of the five of the quota: four went out.
		for range 4 {
			a.nextCode(t, email)
		}
		for i := range 5 {
			if _, err := a.CodeLogin(ctx, email, fmt.Sprintf("%06d", 999990+i), next()); !errors.Is(err, ErrInvalidCode) {
				t.Fatalf("wrong code #%d from elsewhere: %v; want ErrInvalidCode", i+1, err)
			}
		}
		if err := a.SendCode(ctx, email, PurposeLogin, home); err != nil {
			t.Fatal(err)
		}
		if _, err := a.CodeLogin(ctx, email, a.nextCode(t, email), home); err != nil {
			t.Errorf("the owner's code from a known network: %v", err)
		}
	})
}

// Emailed codes can be guessed only so often a day per account and class
// (README: "Guessing budgets"), however many addresses guess; the tenth
// wrong one of a day appends one CodeGuessingDetected, whichever instance
// sees it, and the owner's class keeps its own budget.
func TestEmailCodeGuessesHaveADailyBudgetAndTellTheOwner(t *testing.T) {
	t.Parallel()
	a, b := twoApps(t)
	ctx := t.Context()
	const email, pw = "guessed@example.com", "correct horse battery staple"
	a.signUp(t, email, pw)
	next := elsewhere()
	guess := func(in *testApp) error {
		_, err := in.CodeLogin(context.Background(), email, "999999", next())
		return err
	}
	wrong := func(err error, n int) {
		t.Helper()
		if !errors.Is(err, ErrInvalidCode) {
			t.Fatalf("wrong code #%d: %v; want ErrInvalidCode", n, err)
		}
	}
	for n := 1; n <= 8; n++ {
		wrong(guess(a), n)
	}
	// The 9th to the 30th at once, on two instances: the 10th must be told
	// once, whoever counts it.
	results := make([]error, 22)
	var wg sync.WaitGroup
	for i := range results {
		in := []*testApp{a, b}[i%2]
		wg.Go(func() { results[i] = guess(in) })
	}
	wg.Wait()
	for i, err := range results {
		wrong(err, 9+i)
	}
	for n := 31; n <= 100; n++ {
		wrong(guess(a), n)
	}
	retryLater(t, "the 101st guess of the day from elsewhere", guess(b), 24*time.Hour)

	// A wrong code is counted after its answer: the tenth's, long before
	// the hundredth's.
	var found []map[string]any
	testenv.Eventually(t, 15*time.Second, func() bool {
		found = a.guessingDetected(t)
		return len(found) > 0
	})
	if len(found) != 1 {
		t.Fatalf("CodeGuessingDetected events = %d %v; want exactly 1", len(found), found)
	}
	d := found[0]
	if d["kind"] != "email_code" || d["failures"] != float64(10) || d["user_id"] == "" || d["window_start"] == nil {
		t.Errorf("CodeGuessingDetected data = %v; want kind email_code, failures 10, the user and the window's start", d)
	}
	if raw, _ := json.Marshal(d); strings.Contains(string(raw), "999999") {
		t.Errorf("CodeGuessingDetected carries a code: %s", raw)
	}

	// The owner's network has a budget of its own.
	if err := a.SendCode(ctx, email, PurposeLogin, request); err != nil {
		t.Fatal(err)
	}
	if _, err := b.CodeLogin(ctx, email, a.nextCode(t, email), request); err != nil {
		t.Errorf("the owner's code from a known network after the day's budget elsewhere was spent: %v", err)
	}
}

// guessingDetected is the data of every CodeGuessingDetected in the log.
func (a *testApp) guessingDetected(t *testing.T) []map[string]any {
	t.Helper()
	rows, err := a.pool.Query(t.Context(), `SELECT data FROM events WHERE type = $1`, domain.TypeCodeGuessingDetected)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var found []map[string]any
	for rows.Next() {
		var raw []byte
		if err := rows.Scan(&raw); err != nil {
			t.Fatal(err)
		}
		var d map[string]any
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatal(err)
		}
		found = append(found, d)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return found
}

// An emailed code is used up by the commit of what it earned: when that
// commit fails (here a trigger refuses the events, as a database restarting
// under the request would), the client's retry with the same code signs in.
func TestAVerifyWhoseCommitFailedWorksWhenTriedAgain(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	ctx := t.Context()
	const email = "verify-retry@example.com"
	if err := a.Register(ctx, RegisterInput{Email: email, Password: "correct horse battery"}, request); err != nil {
		t.Fatal(err)
	}
	code := a.nextCode(t, email)
	if _, err := a.pool.Exec(ctx, `CREATE TABLE fail_appends (on_purpose boolean);
		INSERT INTO fail_appends VALUES (true);
		CREATE FUNCTION fail_append() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF EXISTS (SELECT 1 FROM fail_appends) THEN RAISE EXCEPTION 'the database failed the commit'; END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER fail_append BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION fail_append();`); err != nil {
		t.Fatal(err)
	}
	if _, err := a.VerifyRegistration(ctx, email, code, request); err == nil || errors.Is(err, ErrInvalidCode) {
		t.Fatalf("the verify whose commit fails: %v; want the database's error", err)
	}
	if _, err := a.pool.Exec(ctx, `DELETE FROM fail_appends`); err != nil {
		t.Fatal(err)
	}
	in, err := a.VerifyRegistration(ctx, email, code, request)
	if err != nil || in.Tokens == nil {
		t.Fatalf("the same code again, the database back: %v; want a sign-in", err)
	}
	if _, err := a.VerifyRegistration(ctx, email, code, request); !errors.Is(err, ErrInvalidCode) {
		t.Fatalf("the code a third time: %v; want ErrInvalidCode (used)", err)
	}
}

// A password reset revokes every session in its own commit, and revoking
// the other sessions is one commit too: nothing a crash can split, leaving
// sessions alive after a reset it let through.
func TestRevocationsCommitWithWhatCallsForThem(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	ctx := t.Context()
	const email, pw = "one-commit@example.com", "correct horse battery"
	mine := a.signUp(t, email, pw)
	a.login(t, email, pw)
	a.login(t, email, pw)
	revokedIn := func(types ...string) int {
		t.Helper()
		var txs int
		if err := a.pool.QueryRow(ctx, `SELECT count(DISTINCT tx_id) FROM events
			WHERE type = ANY($1) AND position > coalesce((SELECT max(position) FROM events WHERE type = 'SessionStarted'), 0)`, types).Scan(&txs); err != nil {
			t.Fatal(err)
		}
		return txs
	}
	if n, err := a.revokeOthers(ctx, a.claims(t, mine.AccessToken)); err != nil || n != 2 {
		t.Fatalf("revoked %d (%v), want 2", n, err)
	}
	if txs := revokedIn("SessionRevoked"); txs != 1 {
		t.Errorf("the 2 other sessions were revoked in %d commits, want 1", txs)
	}
	a.login(t, email, pw)
	if err := a.SendCode(ctx, email, PurposeReset, request); err != nil {
		t.Fatal(err)
	}
	if err := a.resetPassword(ctx, email, a.nextCode(t, email), "a brand new passphrase"); err != nil {
		t.Fatal(err)
	}
	if txs := revokedIn("SessionRevoked", "PasswordReset"); txs != 1 {
		t.Errorf("the reset and its revocations took %d commits, want 1", txs)
	}
}
