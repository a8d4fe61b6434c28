package commands

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/testenv"
)

// A signup must verify its email before it signs in; its emailed code
// verifies it once, creates its tenant and signs in. A taken address, an
// unknown one and a wrong password are answered as the API says: the same.
func TestSignUpVerifyAndSignIn(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	ctx := t.Context()
	email, pw, norm := "Ada@Example.com ", "correct horse battery", "ada@example.com"

	if err := a.Register(ctx, RegisterInput{Email: email, Password: pw, Name: "Ada", TenantName: "Analytical Engines"}, request); err != nil {
		t.Fatal(err)
	}
	code := a.nextCode(t, norm)
	if _, err := a.Login(ctx, norm, pw, request); !errors.Is(err, ErrEmailNotVerified) {
		t.Fatalf("login before verifying: %v; want ErrEmailNotVerified", err)
	}
	wrong := "000000"
	if code == wrong {
		wrong = "111111"
	}
	if _, err := a.VerifyRegistration(ctx, norm, wrong, request); !errors.Is(err, ErrInvalidCode) {
		t.Fatalf("verify with a wrong code: %v; want ErrInvalidCode", err)
	}
	signup, err := a.VerifyRegistration(ctx, norm, code, request)
	if err != nil || signup.Tokens == nil {
		t.Fatalf("verify: %+v, %v", signup, err)
	}
	if u := a.user(t, signup.Tokens.UserID); u.Email != norm || !u.EmailVerified || u.Tenant.Name != "Analytical Engines" {
		t.Fatalf("signed-up user: %+v", u)
	}
	if _, err := a.VerifyRegistration(ctx, norm, code, request); !errors.Is(err, ErrInvalidCode) {
		t.Fatalf("a used code: %v; want ErrInvalidCode", err)
	}

	if err := a.Register(ctx, RegisterInput{Email: norm, Password: "another password"}, request); err != nil {
		t.Fatalf("register of a taken email: %v; want the answer of a new one", err)
	}
	if _, err := a.Login(ctx, "nobody@example.com", pw, request); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("login of an unknown email: %v; want ErrInvalidCredentials", err)
	}
	if _, err := a.Login(ctx, norm, "wrong password", request); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("login with a wrong password: %v; want ErrInvalidCredentials", err)
	}
	login := a.login(t, email, pw)
	if login.UserID != signup.Tokens.UserID || !a.authorized(t, login.AccessToken) {
		t.Fatalf("login: %+v", login)
	}
	if amr := a.claims(t, login.AccessToken).AMR; len(amr) != 1 || amr[0] != "pwd" {
		t.Fatalf("amr of a password login: %v", amr)
	}
}

// Signing up again before anyone verified takes the pending account over:
// the newest signup's password and names are the account's, and its code
// verifies it.
func TestSigningUpAgainTakesOverAPendingSignup(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	ctx := t.Context()
	const email = "pending@example.com"
	if err := a.Register(ctx, RegisterInput{Email: email, Password: "someone else's password", Name: "Mallory", TenantName: "Mallory Inc"}, request); err != nil {
		t.Fatal(err)
	}
	a.nextCode(t, email)
	if err := a.Register(ctx, RegisterInput{Email: email, Password: "the owner's passphrase", Name: "Owner"}, request); err != nil {
		t.Fatal(err)
	}
	in, err := a.VerifyRegistration(ctx, email, a.nextCode(t, email), request)
	if err != nil || in.Tokens == nil {
		t.Fatalf("verify the second signup: %+v, %v", in, err)
	}
	if u := a.user(t, in.Tokens.UserID); u.Name != "Owner" || u.Tenant.Name != domain.DefaultTenantName("Owner", email) {
		t.Fatalf("taken-over account: %+v", u)
	}
	if _, err := a.Login(ctx, email, "someone else's password", request); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("the first signup's password: %v; want ErrInvalidCredentials", err)
	}
	a.login(t, email, "the owner's passphrase")
}

// signupState is what the log and the read model say of a signup.
type signupState struct {
	expirations int  // SignupExpired events in its stream
	keyHeld     bool // its email's unique key is held (by anyone)
	row         bool // the users read model has the account
	verified    bool // the read model says verified
}

func (a *testApp) signupOf(t *testing.T, user uuid.UUID, email string) signupState {
	t.Helper()
	var s signupState
	events, err := a.store.Load(t.Context(), domain.UserStream(user))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		if e.Type == domain.TypeSignupExpired {
			s.expirations++
		}
	}
	_, err = a.store.Lookup(t.Context(), emailScope, email)
	if s.keyHeld = err == nil; err != nil && !errors.Is(err, eventstore.ErrNotFound) {
		t.Fatal(err)
	}
	err = a.pool.QueryRow(t.Context(), `SELECT email_verified FROM users WHERE id = $1`, user).Scan(&s.verified)
	if s.row = err == nil; err != nil && !errors.Is(err, pgx.ErrNoRows) {
		t.Fatal(err)
	}
	return s
}

// register signs email up and returns the id of its account and the code
// mailed for it.
func (a *testApp) register(t *testing.T, email string) (uuid.UUID, string) {
	t.Helper()
	if err := a.Register(t.Context(), RegisterInput{Email: email, Password: "correct horse battery staple", Name: "Old"}, request); err != nil {
		t.Fatalf("register %s: %v", email, err)
	}
	id, found, err := a.emailOwner(t.Context(), email)
	if err != nil || !found {
		t.Fatalf("the account of %s: %v", email, err)
	}
	return id, a.nextCode(t, email)
}

// sweep runs a's SignupSweeper, as cmd/authd does, until the test ends.
func (a *testApp) sweep(t *testing.T, ttl, every time.Duration) {
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		(&SignupSweeper{App: a.App, Pool: a.pool, TTL: ttl, Every: every, Log: testenv.Logger(t)}).Run(ctx)
	}()
	t.Cleanup(func() {
		stop()
		<-done
	})
}

// An unverified signup older than its time expires: its stream gets
// SignupExpired (ids only), the read model drops it, and its email signs up
// and verifies again at once. A verified account and a younger signup are
// left alone.
func TestUnverifiedSignupsExpireAndFreeTheirEmail(t *testing.T) {
	t.Parallel()
	const ttl = 168 * time.Hour
	// The signups below are made days ago by the clock the commands go by,
	// and end up in the present.
	clk := testenv.NewClock(time.Now().Add(-ttl - time.Hour))
	a := newApp(t, clock(clk.Now))
	const pw = "correct horse battery staple"

	verified := a.signUp(t, "verified@example.com", pw).UserID
	old, _ := a.register(t, "old@example.com")
	// renewed signs up as long ago as old does, and again within its time:
	// the renewal restarts its clock.
	renewed, _ := a.register(t, "renewed@example.com")
	clk.Advance(3 * time.Hour)
	young, _ := a.register(t, "young@example.com")
	clk.Advance(ttl - 4*time.Hour)
	a.register(t, "renewed@example.com")
	clk.Advance(2 * time.Hour) // now: old 169 h, young 166 h, renewed 2 h since its renewal
	a.sweep(t, ttl, 20*time.Millisecond)

	testenv.Eventually(t, 30*time.Second, func() bool {
		s := a.signupOf(t, old, "old@example.com")
		return s.expirations == 1 && !s.row
	})
	if a.signupOf(t, old, "old@example.com").keyHeld {
		t.Errorf("old@example.com expired but its email key is still held")
	}
	for email, id := range map[string]uuid.UUID{"verified@example.com": verified, "young@example.com": young, "renewed@example.com": renewed} {
		if s := a.signupOf(t, id, email); s.expirations != 0 || !s.row || !s.keyHeld {
			t.Errorf("%s: %+v; want it left alone", email, s)
		}
	}
	var data, meta string
	if err := a.pool.QueryRow(t.Context(), `SELECT data::text, metadata::text FROM events WHERE type = $1`, domain.TypeSignupExpired).Scan(&data, &meta); err != nil {
		t.Fatal(err)
	}
	if want := `{"user_id": "` + old.String() + `"}`; data != want {
		t.Errorf("SignupExpired data = %s; want %s (ids only)", data, want)
	}
	if strings.Contains(meta, "ip") && strings.Contains(meta, ".") {
		t.Errorf("SignupExpired metadata = %s; want no client details", meta)
	}
	// Erased as a deleted account is, in the same commit: data key
	// shredded, stream purge queued, its code gone.
	a.requireErased(t, old, "old@example.com")

	// The address is free: it signs up again, verifies and signs in.
	clk.Advance(time.Since(clk.Now()))
	again := a.signUp(t, "old@example.com", "another good passphrase")
	if again.UserID == old {
		t.Errorf("the new signup got the expired account's id %s", old)
	}
	if u := a.user(t, again.UserID); u.Email != "old@example.com" || !u.EmailVerified {
		t.Errorf("the user after signing up again: %+v", u)
	}
	if s := a.signupOf(t, again.UserID, "old@example.com"); s.expirations != 0 || !s.verified {
		t.Errorf("the new signup of old@example.com: %+v; want verified", s)
	}
}

// A verify racing the sweep either wins (the account is verified and never
// expires) or loses (ErrInvalidCode, the account expired and its email is
// free), never both; and two instances sweeping at once expire each signup
// once.
func TestVerifyRacingTheSweepWinsOrLosesCleanly(t *testing.T) {
	t.Parallel()
	const ttl = 168 * time.Hour
	clk := testenv.NewClock(time.Now().Add(-ttl - time.Hour))
	a, b := twoApps(t, clock(clk.Now))
	const n = 12
	codes := make([]string, n)
	ids := make([]uuid.UUID, n)
	for i := range n {
		email := fmt.Sprintf("racer-%d@example.com", i)
		ids[i], codes[i] = a.register(t, email)
	}
	a.sweep(t, ttl, 5*time.Millisecond)
	b.sweep(t, ttl, 5*time.Millisecond)

	start := make(chan struct{})
	won := make([]bool, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			_, err := []*testApp{a, b}[i%2].VerifyRegistration(context.Background(), fmt.Sprintf("racer-%d@example.com", i), codes[i], request)
			won[i] = err == nil
			if err != nil && !errors.Is(err, ErrInvalidCode) {
				t.Errorf("verify racer-%d: %v; want success or ErrInvalidCode", i, err)
			}
		})
	}
	clk.Advance(ttl + time.Hour) // every signup is past its time: both sweepers go for them
	close(start)
	wg.Wait()

	wins := 0
	for i := range n {
		email := fmt.Sprintf("racer-%d@example.com", i)
		if won[i] {
			wins++
			if s := a.signupOf(t, ids[i], email); s.expirations > 0 {
				t.Errorf("%s verified and expired too: %+v", email, s)
				continue
			}
			testenv.Eventually(t, 30*time.Second, func() bool { return a.signupOf(t, ids[i], email).verified })
			if s := a.signupOf(t, ids[i], email); s.expirations != 0 || !s.keyHeld {
				t.Errorf("%s verified and yet %+v", email, s)
			}
			continue
		}
		testenv.Eventually(t, 30*time.Second, func() bool { s := a.signupOf(t, ids[i], email); return s.expirations > 0 && !s.row })
		if s := a.signupOf(t, ids[i], email); s.expirations != 1 || s.keyHeld {
			t.Errorf("%s lost to the sweep: %+v; want one SignupExpired and the email free", email, s)
		}
	}
	t.Logf("%d of %d verifies beat the sweep", wins, n)
}

// Emails are compared case-insensitively after trimming: one account, one
// mailbox, whatever the spelling.
func TestEmailsCompareCaseInsensitivelyAfterTrimming(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	ctx := t.Context()
	const pw = "correct horse battery staple"

	if err := a.Register(ctx, RegisterInput{Email: " Bob@Example.COM ", Password: pw, Name: "Bob"}, request); err != nil {
		t.Fatal(err)
	}
	mail := a.env.mail.WaitForMessage(t, "bob@example.com", 15*time.Second)
	if !slices.Equal(mail.To, []string{"bob@example.com"}) {
		t.Errorf("the code went to %v, want the normalized [bob@example.com]", mail.To)
	}
	v, err := a.VerifyRegistration(ctx, "bob@example.com", testenv.CodeIn(t, mail), request)
	if err != nil || v.Tokens == nil {
		t.Fatalf("verify: %+v, %v", v, err)
	}
	l := a.login(t, "BOB@example.com", pw)
	if l.UserID != v.Tokens.UserID {
		t.Fatalf("login as BOB@example.com found another user: %s vs %s", l.UserID, v.Tokens.UserID)
	}
	a.login(t, "\tbob@EXAMPLE.com\n", pw)
	if u := a.user(t, l.UserID); u.Email != "bob@example.com" {
		t.Fatalf("the user's email = %q", u.Email)
	}

	// Another spelling of a taken address is the same, taken address.
	n := len(a.eventTypes(t, 0))
	if err := a.Register(ctx, RegisterInput{Email: "BOB@EXAMPLE.COM", Password: "another password"}, request); err != nil {
		t.Fatal(err)
	}
	a.nextCode(t, "bob@example.com") // the owner hears of the attempt, with a sign-in code
	if extra := a.eventTypes(t, n); !slices.Equal(extra, []string{domain.TypeSignupAttempted}) {
		t.Fatalf("registering BOB@EXAMPLE.COM again appended %v; want only the attempt recorded", extra)
	}
	if claims := a.countRows(t, `SELECT count(*) FROM unique_keys WHERE scope = 'email'`); claims != 1 {
		t.Fatalf("email claims = %d, want 1", claims)
	}

	// A code sent to one spelling signs in with another.
	if err := a.SendCode(ctx, "  BoB@Example.Com", PurposeLogin, request); err != nil {
		t.Fatal(err)
	}
	o, err := a.CodeLogin(ctx, "BOB@EXAMPLE.COM ", a.nextCode(t, "bob@example.com"), request)
	if err != nil || o.Tokens == nil || o.Tokens.UserID != v.Tokens.UserID {
		t.Fatalf("code login with another spelling: %+v, %v", o, err)
	}
}
