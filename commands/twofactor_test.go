package commands

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"image/png"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/internal/testenv"
	"github.com/authd/authd/internal/tokens"
)

var backupShape = regexp.MustCompile(`^[0-9]{4}-[0-9]{4}$`)

// checkBackupCodes fails the test unless codes are ten distinct backup
// codes as shown to the user.
func checkBackupCodes(t *testing.T, codes []string) []string {
	t.Helper()
	for i, c := range codes {
		if !backupShape.MatchString(c) || slices.Contains(codes[:i], c) {
			t.Fatalf("backup codes: %q", codes)
		}
	}
	if len(codes) != domain.BackupCodeCount {
		t.Fatalf("want %d backup codes: %q", domain.BackupCodeCount, codes)
	}
	return codes
}

// enableTwoFactor turns two-factor on for the caller and returns their
// authenticator app and backup codes.
func (a *testApp) enableTwoFactor(t *testing.T, caller tokens.Claims) (*testenv.TOTPApp, []string) {
	t.Helper()
	setup, err := a.SetupTwoFactor(t.Context(), caller, request)
	if err != nil {
		t.Fatal(err)
	}
	app := &testenv.TOTPApp{Secret: setup.Secret}
	backup, err := a.EnableTwoFactor(t.Context(), caller, app.Next(t), request)
	if err != nil {
		t.Fatal(err)
	}
	return app, checkBackupCodes(t, backup)
}

// challenge signs in with a password and fails the test unless that
// answers a challenge for a second factor.
func (a *testApp) challenge(t *testing.T, email, pw string, r Request) string {
	t.Helper()
	in, err := a.Login(t.Context(), email, pw, r)
	if err != nil || in.Challenge == nil || in.Tokens != nil {
		t.Fatalf("want a challenge: %+v, %v", in, err)
	}
	checkChallenge(t, in.Challenge)
	return in.Challenge.Token
}

func checkChallenge(t *testing.T, ch *Challenge) {
	t.Helper()
	if ch.ExpiresIn != 5*time.Minute || !slices.Equal(ch.Methods, []string{"totp", "backup_code"}) {
		t.Fatalf("challenge: %+v", ch)
	}
	if raw, err := base64.RawURLEncoding.DecodeString(ch.Token); err != nil || len(raw) < 32 {
		t.Fatalf("challenge token %q is not 256 bits of opaque secret", ch.Token)
	}
}

// twoFactorStatus fails the test unless the log has two-factor on or off
// for user, with remaining backup codes.
func (a *testApp) twoFactorStatus(t *testing.T, caller tokens.Claims, enabled bool, remaining int) {
	t.Helper()
	_, tf, err := a.AccountFromLog(t.Context(), caller.UserID)
	if err != nil {
		t.Fatal(err)
	}
	if tf.Enabled != enabled || enabled && len(tf.BackupCodes) != remaining {
		t.Fatalf("two-factor enabled %v with %d backup codes; want %v, %d", tf.Enabled, len(tf.BackupCodes), enabled, remaining)
	}
}

// countRows counts what a query finds.
func (a *testApp) countRows(t *testing.T, sql string) int {
	t.Helper()
	var n int
	if err := a.pool.QueryRow(t.Context(), sql).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// The whole two-factor flow on the commands: setup, enable, challenges
// answered with TOTP and backup codes (each accepted once), regenerate,
// the tries of a challenge, and disable.
func TestTwoFactorFlow(t *testing.T) {
	t.Parallel()
	a, b := twoApps(t)
	ctx := t.Context()
	const email, pw = "tf@example.com", "correct horse battery"
	caller := a.claims(t, a.signUp(t, email, pw).AccessToken)

	// Before any setup.
	a.twoFactorStatus(t, caller, false, 0)
	if _, err := a.EnableTwoFactor(ctx, caller, "123456", request); !errors.Is(err, ErrConflict) {
		t.Fatalf("enable with nothing pending: %v; want ErrConflict", err)
	}
	if _, err := a.RegenerateBackupCodes(ctx, caller, request); !errors.Is(err, ErrConflict) {
		t.Fatalf("regenerate with two-factor off: %v; want ErrConflict", err)
	}
	if err := a.DisableTwoFactor(ctx, caller, "123456", request); !errors.Is(err, ErrConflict) {
		t.Fatalf("disable with two-factor off: %v; want ErrConflict", err)
	}

	// Setup: a secret, its URI and a QR code; a second setup replaces the first.
	first, err := a.SetupTwoFactor(ctx, caller, request)
	if err != nil {
		t.Fatal(err)
	}
	setup, err := a.SetupTwoFactor(ctx, caller, request)
	if err != nil {
		t.Fatal(err)
	}
	if setup.Secret == first.Secret || len(setup.Secret) != 32 {
		t.Fatalf("setup secrets %q then %q", first.Secret, setup.Secret)
	}
	if !strings.HasPrefix(setup.ProvisioningURI, "otpauth://totp/authd:"+email+"?secret="+setup.Secret+"&issuer=authd") {
		t.Fatalf("provisioning URI %s", setup.ProvisioningURI)
	}
	qr, ok := strings.CutPrefix(setup.QRCode, "data:image/png;base64,")
	raw, err := base64.StdEncoding.DecodeString(qr)
	if !ok || err != nil {
		t.Fatalf("QR code is not a PNG data URL: %.80s", setup.QRCode)
	}
	if img, err := png.Decode(bytes.NewReader(raw)); err != nil || img.Bounds().Dx() < 100 {
		t.Fatalf("QR code PNG: %v", err)
	}
	old := &testenv.TOTPApp{Secret: first.Secret}
	app := &testenv.TOTPApp{Secret: setup.Secret}

	// Enable: bad codes change nothing; a right one gives 10 backup codes.
	before := len(a.eventTypes(t, 0))
	for _, bad := range []string{"", "abcdef", "12345", "1234567", "12 34 5", "123456789", "１２３４５６", strings.Repeat("1", 5000), old.Wrong(t)} {
		if _, err := a.EnableTwoFactor(ctx, caller, bad, request); !errors.Is(err, ErrInvalidCode) {
			t.Fatalf("enable with %.20q: %v; want ErrInvalidCode", bad, err)
		}
	}
	if oc := old.Next(t); !app.Matches(oc) { // the replaced secret's code, unless it is by chance this one's too
		if _, err := a.EnableTwoFactor(ctx, caller, oc, request); !errors.Is(err, ErrInvalidCode) {
			t.Fatalf("enable with the replaced secret's code: %v; want ErrInvalidCode", err)
		}
	}
	if added := a.eventTypes(t, before); len(added) > 0 {
		t.Fatalf("failed enables appended %v", added)
	}
	code := app.Next(t)
	backup, err := a.EnableTwoFactor(ctx, caller, code[:3]+" "+code[3:], request)
	if err != nil {
		t.Fatal(err)
	}
	checkBackupCodes(t, backup)
	a.twoFactorStatus(t, caller, true, 10)
	if _, err := a.SetupTwoFactor(ctx, caller, request); !errors.Is(err, ErrConflict) {
		t.Fatalf("setup with two-factor on: %v; want ErrConflict", err)
	}
	if _, err := a.EnableTwoFactor(ctx, caller, app.Wrong(t), request); !errors.Is(err, ErrConflict) {
		t.Fatalf("enable with two-factor on: %v; want ErrConflict", err)
	}

	// A password login now answers a challenge; verify turns it into tokens.
	ch := a.challenge(t, email, pw, request)
	if _, err := a.VerifyChallenge(ctx, "nope", app.Wrong(t), request); !errors.Is(err, ErrInvalidChallenge) {
		t.Fatalf("verify with an unknown challenge: %v; want ErrInvalidChallenge", err)
	}
	if _, err := a.VerifyChallenge(ctx, ch, "12-ab-56", request); !errors.Is(err, ErrInvalidCode) {
		t.Fatalf("verify with a malformed code: %v; want ErrInvalidCode", err)
	}
	totpCode := app.Next(t)
	v, err := b.VerifyChallenge(ctx, ch, totpCode, request)
	if err != nil {
		t.Fatal(err)
	}
	if amr := b.claims(t, v.AccessToken).AMR; !slices.Equal(amr, []string{"pwd", "mfa"}) {
		t.Fatalf("amr after password and TOTP: %v", amr)
	}
	if !b.user(t, v.UserID).TwoFactorEnabled {
		t.Fatal("the user after a second factor has two-factor off")
	}
	// The login's try and the answer's were settled, and the challenge used
	// up, with the events they led to: nothing is left in flight.
	if n, m := a.countRows(t, `SELECT count(*) FROM two_factor_challenges`), a.countRows(t, `SELECT count(*) FROM login_failures`); n != 0 || m != 0 {
		t.Fatalf("after a right answer: %d challenges and %d throttle rows left, want none", n, m)
	}
	if _, err := a.VerifyChallenge(ctx, ch, backup[5], request); !errors.Is(err, ErrInvalidChallenge) {
		t.Fatalf("a used challenge with a right code: %v; want ErrInvalidChallenge", err)
	}
	// Its token still names the user, so the answer was counted against them
	// with the lookup that found no challenge; finding none forgave it.
	if n := a.countRows(t, `SELECT count(*) FROM login_failures WHERE in_flight > 0`); n != 0 {
		t.Fatalf("after answering a used challenge: %d attempts left in flight, want none", n)
	}

	// The same TOTP code is refused on a new challenge; a backup code works once.
	ch = a.challenge(t, email, pw, request)
	if _, err := a.VerifyChallenge(ctx, ch, totpCode, request); !errors.Is(err, ErrInvalidCode) {
		t.Fatalf("the same TOTP code again: %v; want ErrInvalidCode", err)
	}
	if _, err := a.VerifyChallenge(ctx, ch, backup[0], request); err != nil {
		t.Fatal(err)
	}
	a.twoFactorStatus(t, caller, true, 9)
	ch = a.challenge(t, email, pw, request)
	if _, err := a.VerifyChallenge(ctx, ch, backup[0], request); !errors.Is(err, ErrInvalidCode) {
		t.Fatalf("a used backup code again: %v; want ErrInvalidCode", err)
	}
	// Typed without its dash, with spaces.
	if _, err := a.VerifyChallenge(ctx, ch, " "+strings.ReplaceAll(backup[1], "-", " ")+" ", request); err != nil {
		t.Fatal(err)
	}

	// Regenerate: the old codes stop working.
	fresh, err := a.RegenerateBackupCodes(ctx, caller, request)
	if err != nil {
		t.Fatal(err)
	}
	checkBackupCodes(t, fresh)
	a.twoFactorStatus(t, caller, true, 10)
	ch = a.challenge(t, email, pw, request)
	if _, err := a.VerifyChallenge(ctx, ch, backup[2], request); !errors.Is(err, ErrInvalidCode) {
		t.Fatalf("an old backup code after regenerating: %v; want ErrInvalidCode", err)
	}
	if _, err := a.VerifyChallenge(ctx, ch, fresh[0], request); err != nil {
		t.Fatal(err)
	}

	// An emailed-code login gets a challenge too, bound to its amr.
	if err := a.SendCode(ctx, email, PurposeLogin, request); err != nil {
		t.Fatal(err)
	}
	in, err := a.CodeLogin(ctx, email, a.nextCode(t, email), request)
	if err != nil || in.Challenge == nil {
		t.Fatalf("code login of a two-factor user: %+v, %v; want a challenge", in, err)
	}
	checkChallenge(t, in.Challenge)
	v, err = a.VerifyChallenge(ctx, in.Challenge.Token, fresh[1], request)
	if err != nil {
		t.Fatal(err)
	}
	if amr := a.claims(t, v.AccessToken).AMR; !slices.Equal(amr, []string{"otp", "mfa"}) {
		t.Fatalf("amr after an emailed code and a backup code: %v", amr)
	}

	// Five answers use a challenge up, even when the sixth is right.
	ch = a.challenge(t, email, pw, request)
	for i := range 5 {
		if _, err := a.VerifyChallenge(ctx, ch, app.Wrong(t), request); !errors.Is(err, ErrInvalidCode) {
			t.Fatalf("wrong answer %d: %v; want ErrInvalidCode", i+1, err)
		}
	}
	if _, err := a.VerifyChallenge(ctx, ch, fresh[2], request); !errors.Is(err, ErrInvalidChallenge) {
		t.Fatalf("a sixth answer: %v; want ErrInvalidChallenge", err)
	}
	if _, err := a.VerifyChallenge(ctx, a.challenge(t, email, pw, request), fresh[2], request); err != nil {
		t.Fatal(err)
	}
	a.twoFactorStatus(t, caller, true, 7)

	// Disable needs a code; then logins need no second factor again.
	before = len(a.eventTypes(t, 0))
	for _, bad := range []string{"", "nope", app.Wrong(t), "0000-0000", totpCode, backup[3]} {
		if err := a.DisableTwoFactor(ctx, caller, bad, request); !errors.Is(err, ErrInvalidCode) {
			t.Fatalf("disable with %q: %v; want ErrInvalidCode", bad, err)
		}
	}
	// The only event a wrong code may add: the day's tenth wrong code of the
	// account (five answers above, the rest here) is told to the owner.
	if added := slices.DeleteFunc(a.eventTypes(t, before), func(typ string) bool { return typ == domain.TypeCodeGuessingDetected }); len(added) > 0 {
		t.Fatalf("failed disables appended %v", added)
	}
	pending := a.challenge(t, email, pw, request)
	if err := a.DisableTwoFactor(ctx, caller, app.Next(t), request); err != nil {
		t.Fatal(err)
	}
	if _, err := a.VerifyChallenge(ctx, pending, fresh[4], request); !errors.Is(err, ErrInvalidChallenge) {
		t.Fatalf("a challenge issued before two-factor was turned off: %v; want ErrInvalidChallenge", err)
	}
	a.twoFactorStatus(t, caller, false, 0)
	if _, err := a.RegenerateBackupCodes(ctx, caller, request); !errors.Is(err, ErrConflict) {
		t.Fatalf("regenerate after disabling: %v; want ErrConflict", err)
	}
	if err := a.DisableTwoFactor(ctx, caller, fresh[3], request); !errors.Is(err, ErrConflict) {
		t.Fatalf("disable after disabling: %v; want ErrConflict", err)
	}
	a.login(t, email, pw)
}

// Racing answers: one challenge answered twice at once, and one TOTP code
// sent to two challenges at once, each succeed exactly once.
func TestTwoFactorAnswersRaceToOneWinner(t *testing.T) {
	t.Parallel()
	a, b := twoApps(t)
	const email, pw = "tf-race@example.com", "correct horse battery"
	app, backup := a.enableTwoFactor(t, a.claims(t, a.signUp(t, email, pw).AccessToken))
	race := func(answers ...func() error) (wins int, errs []error) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, answer := range answers {
			wg.Go(func() {
				err := answer()
				mu.Lock()
				defer mu.Unlock()
				if err == nil {
					wins++
				}
				errs = append(errs, err)
			})
		}
		wg.Wait()
		return wins, errs
	}
	verify := func(in *testApp, ch, code string) func() error {
		return func() error {
			_, err := in.VerifyChallenge(context.Background(), ch, code, request)
			return err
		}
	}
	// One challenge answered at once on two instances with two right codes.
	for round := range 3 {
		ch := a.challenge(t, email, pw, request)
		if wins, errs := race(verify(a, ch, backup[2*round]), verify(b, ch, backup[2*round+1])); wins != 1 {
			t.Fatalf("one challenge answered twice at once: %d wins %v", wins, errs)
		}
	}
	// One code sent to two challenges at once: a TOTP code, then a backup code.
	for _, code := range []string{app.Next(t), backup[9]} {
		ch1, ch2 := a.challenge(t, email, pw, request), a.challenge(t, email, pw, request)
		if wins, errs := race(verify(a, ch1, code), verify(b, ch2, code)); wins != 1 {
			t.Fatalf("one code on two challenges at once: %d wins %v", wins, errs)
		}
	}
}

// Every second-factor sign-in adds an event to the user's two-factor stream;
// past domain.SnapshotEvery of them a snapshot is appended and loads start
// from it. Codes used before it stay used, those left still work.
func TestLongTwoFactorStreamsLoadFromASnapshot(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	ctx := t.Context()
	const email, pw = "tf-long@example.com", "correct horse battery"
	caller := a.claims(t, a.signUp(t, email, pw).AccessToken)
	app, fresh := a.enableTwoFactor(t, caller)
	var used []string
	regenerate := func() []string {
		t.Helper()
		codes, err := a.RegenerateBackupCodes(ctx, caller, request)
		if err != nil {
			t.Fatal(err)
		}
		return checkBackupCodes(t, codes)
	}
	verify := func(code string) error {
		_, err := a.VerifyChallenge(ctx, a.challenge(t, email, pw, request), code, request)
		return err
	}
	for range domain.SnapshotEvery {
		if len(fresh) == 0 {
			fresh = regenerate()
		}
		code := fresh[0]
		fresh, used = fresh[1:], append(used, code)
		if err := verify(code); err != nil {
			t.Fatal(err)
		}
	}

	var snapshots int
	var public string
	if err := a.pool.QueryRow(ctx, `SELECT count(*), coalesce(max(data::text), '') FROM events WHERE type = $1`,
		domain.TypeTwoFactorSnapshotTaken).Scan(&snapshots, &public); err != nil {
		t.Fatal(err)
	}
	if snapshots == 0 {
		t.Fatalf("no snapshot after %d second-factor sign-ins", domain.SnapshotEvery)
	}
	if strings.Contains(public, app.Secret) || strings.Contains(public, "hash") {
		t.Fatalf("a snapshot's public part holds a secret: %s", public)
	}
	// The last ten codes are the current set's: the snapshot came after the
	// 50th event, with the first four of them used before it and the rest
	// after; either way none works again. (Four wrong answers: a fifth in a
	// row would slow the account down.)
	n := len(used)
	for _, code := range []string{used[n-10], used[n-9], used[n-2], used[n-1]} {
		if err := verify(code); !errors.Is(err, ErrInvalidCode) {
			t.Fatalf("a used backup code after the snapshot: %v; want ErrInvalidCode", err)
		}
	}
	if len(fresh) < 2 {
		fresh = regenerate()
	}
	if err := verify(fresh[0]); err != nil {
		t.Fatal(err)
	}
	a.twoFactorStatus(t, caller, true, len(fresh)-1)
	if err := verify(app.Next(t)); err != nil {
		t.Fatal(err)
	}
	if err := a.DisableTwoFactor(ctx, caller, fresh[1], request); err != nil {
		t.Fatal(err)
	}
	a.twoFactorStatus(t, caller, false, 0)
}

// With a stuffed password, an attacker elsewhere who keeps the account's
// second-factor slow-down spent does not keep the owner out at home; the
// tenth wrong TOTP code of the day appends one CodeGuessingDetected.
func TestAStuffedPasswordElsewhereCannotKeepATwoFactorOwnerOut(t *testing.T) {
	t.Parallel()
	a, clk := heldLimitsApp(t)
	ctx := t.Context()
	const email, pw = "tf-owner@example.com", "correct horse battery staple"
	// The signup signs in from the test's client: its network is known.
	app, _ := a.enableTwoFactor(t, a.claims(t, a.signUp(t, email, pw).AccessToken))
	next := elsewhere()
	wrongCode := app.Wrong(t)
	token, tries, wrong := "", 0, 0
	for wrong < 10 {
		if tries == 0 {
			token, tries = a.challenge(t, email, pw, next()), 5
		}
		_, err := a.VerifyChallenge(ctx, token, wrongCode, next())
		tries--
		var rl *RetryLaterError
		switch {
		case errors.Is(err, ErrInvalidCode):
			wrong++
		case errors.As(err, &rl): // it still took one of the challenge's tries
			clk.Advance(rl.After)
		default:
			t.Fatalf("wrong code #%d from elsewhere: %v", wrong+1, err)
		}
	}
	if tries == 0 {
		token = a.challenge(t, email, pw, next())
	}
	_, err := a.VerifyChallenge(ctx, token, wrongCode, next())
	retryLater(t, "a code from elsewhere after 10 wrong ones", err, time.Minute)

	if v, err := a.VerifyChallenge(ctx, a.challenge(t, email, pw, request), app.Next(t), request); err != nil || v.AccessToken == "" {
		t.Errorf("the owner's right code from a known network: %+v, %v; want tokens", v, err)
	}
	var kinds []string
	for _, d := range a.guessingDetected(t) {
		kind, _ := d["kind"].(string)
		kinds = append(kinds, kind)
	}
	if len(kinds) != 1 || kinds[0] != domain.GuessedTOTP {
		t.Errorf("CodeGuessingDetected kinds = %v; want one, totp", kinds)
	}
}
