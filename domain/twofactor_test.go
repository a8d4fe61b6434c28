package domain

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/authd/authd/internal/totp"
)

// fakeHash stands in for the commands' keyed hash: the domain only compares.
func fakeHash(d string) string { return "h:" + d }

func hashes(codes ...string) []string {
	out := make([]string, len(codes))
	for i, c := range codes {
		out[i] = fakeHash(c)
	}
	return out
}

func apply(t *testing.T, tf *TwoFactor, at time.Time, events []Event, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("decision refused: %v", err)
	}
	for _, e := range events {
		tf.Apply(e, at)
	}
}

func code(t *testing.T, secret string, at time.Time) Code {
	t.Helper()
	c, err := totp.CodeAt(secret, at)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParseCode(c)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// enabled returns a user's two-factor with TOTP on at t0 and its secret.
func enabled(t *testing.T, t0 time.Time, backup ...string) (*TwoFactor, string) {
	t.Helper()
	user := uuid.New()
	secret, err := totp.NewSecret(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tf := &TwoFactor{}
	ev, err := tf.Setup(user, secret)
	apply(t, tf, t0, ev, err)
	ev, err = tf.Enable(user, code(t, secret, t0), t0, hashes(backup...))
	apply(t, tf, t0, ev, err)
	if !tf.Enabled || tf.Secret != secret || tf.LastStep != totp.StepAt(t0) || len(tf.BackupCodes) != len(backup) {
		t.Fatalf("after enabling: %+v", tf)
	}
	return tf, secret
}

func TestParseCodeNormalisesAndRefuses(t *testing.T) {
	for in, want := range map[string]Code{
		"123456":        {TOTPCode, "123456"},
		" 123 456 ":     {TOTPCode, "123456"},
		"123-456":       {TOTPCode, "123456"},
		"1234-5678":     {BackupCode, "12345678"},
		"1234 5678":     {BackupCode, "12345678"},
		"12345678":      {BackupCode, "12345678"},
		"\t1-2-3-4-5-6": {TOTPCode, "123456"},
	} {
		if got, err := ParseCode(in); err != nil || got != want {
			t.Errorf("ParseCode(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "   ", "12345", "1234567", "123456789", "12a456", "１２３４５６", "123456\x00", "+123456",
		strings.Repeat("1", 100), strings.Repeat(" ", 65) + "123456", "1234-5678-9"} {
		if got, err := ParseCode(in); !errors.Is(err, ErrWrongCode) {
			t.Errorf("ParseCode(%q) = %+v, %v; want ErrWrongCode", in, got, err)
		}
	}
}

func TestSetupAndEnable(t *testing.T) {
	t0 := time.Unix(1_700_000_010, 0)
	user := uuid.New()
	tf := &TwoFactor{}
	if _, err := tf.Enable(user, Code{TOTPCode, "123456"}, t0, nil); !errors.Is(err, ErrNoSetupPending) {
		t.Fatalf("enable with nothing pending: %v", err)
	}
	first, _ := totp.NewSecret(rand.Reader)
	second, _ := totp.NewSecret(rand.Reader)
	ev, err := tf.Setup(user, first)
	apply(t, tf, t0, ev, err)
	ev, err = tf.Setup(user, second) // a new setup replaces the unconfirmed one
	apply(t, tf, t0, ev, err)
	if _, err := tf.Enable(user, code(t, first, t0), t0, nil); !errors.Is(err, ErrWrongCode) && code(t, first, t0) != code(t, second, t0) {
		t.Fatalf("a code of the replaced secret: %v", err)
	}
	if _, err := tf.Enable(user, Code{BackupCode, "12345678"}, t0, nil); !errors.Is(err, ErrWrongCode) {
		t.Fatalf("a backup-code-shaped code enabling: %v", err)
	}
	if _, err := tf.Enable(user, code(t, second, t0.Add(-2*totp.Period*time.Second)), t0, nil); !errors.Is(err, ErrWrongCode) {
		t.Fatalf("a code two steps old enabling: %v", err)
	}
	ev, err = tf.Enable(user, code(t, second, t0.Add(-totp.Period*time.Second)), t0, hashes("11112222"))
	apply(t, tf, t0, ev, err)
	e := ev[0].(*TotpEnabled)
	if e.Step != totp.StepAt(t0)-1 || e.BackupCodes != 1 || e.Secret.Secret != second || tf.PendingSecret != "" {
		t.Fatalf("TotpEnabled %+v, aggregate %+v", e, tf)
	}
	if _, err := tf.Setup(user, first); !errors.Is(err, ErrTwoFactorEnabled) {
		t.Fatalf("setup while enabled: %v", err)
	}
	if _, err := tf.Enable(user, code(t, second, t0), t0, nil); !errors.Is(err, ErrNoSetupPending) {
		t.Fatalf("enable while enabled: %v", err)
	}
}

// The ±1 step window, with the clock injected.
func TestVerifyWindow(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0) // a step boundary
	tf, secret := enabled(t, t0)
	now := t0.Add(10 * totp.Period * time.Second).Add(7 * time.Second)
	for _, d := range []int64{-3, -2, 2, 3} {
		c := code(t, secret, now.Add(time.Duration(d*totp.Period)*time.Second))
		if c == code(t, secret, now) || c == code(t, secret, now.Add(-totp.Period*time.Second)) || c == code(t, secret, now.Add(totp.Period*time.Second)) {
			continue // a coincidence with a code inside the window
		}
		if _, err := tf.Verify(uuid.New(), c, now, fakeHash); !errors.Is(err, ErrWrongCode) {
			t.Errorf("a code %+d steps away: %v", d, err)
		}
	}
	for i, d := range []int64{-1, 0, 1} { // in order: each is later than the last
		c := code(t, secret, now.Add(time.Duration(d*totp.Period)*time.Second))
		ev, err := tf.Verify(uuid.New(), c, now, fakeHash)
		apply(t, tf, now, ev, err)
		if a := ev[0].(*TotpCodeAccepted); a.Step != totp.StepAt(now)+d {
			t.Fatalf("answer %d: step %d, want %d", i, a.Step, totp.StepAt(now)+d)
		}
	}
}

// A TOTP step is accepted once: the same code, an older one, or the same
// step later are refused, on the aggregate as reloaded after the first.
func TestTotpStepIsNotReused(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	tf, secret := enabled(t, t0)
	now := t0.Add(5 * time.Minute)
	c := code(t, secret, now)
	ev, err := tf.Verify(uuid.New(), c, now, fakeHash)
	apply(t, tf, now, ev, err)
	if _, err := tf.Verify(uuid.New(), c, now, fakeHash); !errors.Is(err, ErrWrongCode) {
		t.Fatalf("the same code again: %v", err)
	}
	if _, err := tf.Verify(uuid.New(), c, now.Add(25*time.Second), fakeHash); !errors.Is(err, ErrWrongCode) {
		t.Fatalf("the same code later in its window: %v", err)
	}
	if _, err := tf.Disable(c, now, fakeHash); !errors.Is(err, ErrWrongCode) {
		t.Fatalf("the same code to disable: %v", err)
	}
	older := code(t, secret, now.Add(-totp.Period*time.Second))
	if older != c {
		if _, err := tf.Verify(uuid.New(), older, now, fakeHash); !errors.Is(err, ErrWrongCode) {
			t.Fatalf("an older step after a newer one: %v", err)
		}
	}
	// Enabling accepted its step too: its code cannot answer a challenge.
	tf2, secret2 := enabled(t, t0)
	if _, err := tf2.Verify(uuid.New(), code(t, secret2, t0), t0, fakeHash); !errors.Is(err, ErrWrongCode) {
		t.Fatalf("the enabling code answering a challenge: %v", err)
	}
	// Two answers decided on the same version: the loser, deciding again on
	// the aggregate with the winner's event, is refused.
	tf3, secret3 := enabled(t, t0)
	stale := *tf3
	next := code(t, secret3, now)
	ev, err = tf3.Verify(uuid.New(), next, now, fakeHash)
	apply(t, tf3, now, ev, err)
	if _, err := stale.Verify(uuid.New(), next, now, fakeHash); err != nil {
		t.Fatalf("the stale copy should still say yes (the append's version check refuses it): %v", err)
	}
	if _, err := tf3.Verify(uuid.New(), next, now, fakeHash); !errors.Is(err, ErrWrongCode) {
		t.Fatalf("deciding again after the race: %v", err)
	}
}

func TestBackupCodesWorkOnceAndRegenerate(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	tf, _ := enabled(t, t0, "11111111", "22222222", "33333333")
	ev, err := tf.Verify(uuid.New(), Code{BackupCode, "22222222"}, t0, fakeHash)
	apply(t, tf, t0, ev, err)
	if u := ev[0].(*BackupCodeUsed); u.Remaining != 2 || u.Secret.Hash != fakeHash("22222222") {
		t.Fatalf("BackupCodeUsed %+v", u)
	}
	if _, err := tf.Verify(uuid.New(), Code{BackupCode, "22222222"}, t0, fakeHash); !errors.Is(err, ErrWrongCode) {
		t.Fatalf("a used backup code again: %v", err)
	}
	if _, err := tf.Verify(uuid.New(), Code{BackupCode, "44444444"}, t0, fakeHash); !errors.Is(err, ErrWrongCode) {
		t.Fatalf("an unknown backup code: %v", err)
	}
	ev, err = tf.RegenerateBackupCodes(hashes("55555555"))
	apply(t, tf, t0, ev, err)
	if _, err := tf.Verify(uuid.New(), Code{BackupCode, "11111111"}, t0, fakeHash); !errors.Is(err, ErrWrongCode) {
		t.Fatalf("an old backup code after regenerating: %v", err)
	}
	ev, err = tf.Disable(Code{BackupCode, "55555555"}, t0, fakeHash)
	apply(t, tf, t0, ev, err)
	if d := ev[0].(*TotpDisabled); d.Method != MethodBackupCode || tf.Enabled || tf.Secret != "" || tf.BackupCodes != nil {
		t.Fatalf("after disabling: %+v %+v", d, tf)
	}
	if _, err := tf.RegenerateBackupCodes(nil); !errors.Is(err, ErrTwoFactorDisabled) {
		t.Fatalf("regenerate with two-factor off: %v", err)
	}
	if _, err := tf.Disable(Code{BackupCode, "55555555"}, t0, fakeHash); !errors.Is(err, ErrTwoFactorDisabled) {
		t.Fatalf("disable with two-factor off: %v", err)
	}
	if _, err := tf.Verify(uuid.New(), Code{BackupCode, "55555555"}, t0, fakeHash); !errors.Is(err, ErrTwoFactorDisabled) {
		t.Fatalf("verify with two-factor off: %v", err)
	}
}

func TestChallengeIsAnsweredOnce(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	tf, secret := enabled(t, t0, "11111111", "22222222")
	ch := uuid.New()
	now := t0.Add(time.Minute)
	ev, err := tf.Verify(ch, code(t, secret, now), now, fakeHash)
	apply(t, tf, now, ev, err)
	if _, err := tf.Verify(ch, Code{BackupCode, "11111111"}, now, fakeHash); !errors.Is(err, ErrChallengeUsed) {
		t.Fatalf("a second answer to the same challenge: %v", err)
	}
	ch2 := uuid.New()
	ev, err = tf.Verify(ch2, Code{BackupCode, "11111111"}, now, fakeHash)
	apply(t, tf, now, ev, err)
	if _, err := tf.Verify(ch2, Code{BackupCode, "22222222"}, now, fakeHash); !errors.Is(err, ErrChallengeUsed) {
		t.Fatalf("a second answer to a challenge answered with a backup code: %v", err)
	}
}

// Secrets and codes stay out of the public part of every event.
func TestTwoFactorEventsKeepSecretsSealed(t *testing.T) {
	secret, _ := totp.NewSecret(rand.Reader)
	events := []SecretCarrier{
		&TotpSetupStarted{UserID: uuid.New(), Secret: TotpSecret{Secret: secret}},
		&TotpEnabled{UserID: uuid.New(), Step: 1, BackupCodes: 1, Secret: TotpEnabledSecrets{Secret: secret, BackupCodes: []string{"HASHVALUE"}}},
		&BackupCodesRegenerated{UserID: uuid.New(), BackupCodes: 1, Secret: BackupCodeHashes{Hashes: []string{"HASHVALUE"}}},
		&BackupCodeUsed{UserID: uuid.New(), Remaining: 0, Secret: UsedBackupCode{Hash: "HASHVALUE"}},
	}
	for _, e := range events {
		pub, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(pub), secret) || strings.Contains(string(pub), "HASHVALUE") {
			t.Errorf("%s public part: %s", e.EventType(), pub)
		}
		sealed, _ := json.Marshal(e.Secrets())
		if !strings.Contains(string(sealed), secret) && !strings.Contains(string(sealed), "HASHVALUE") {
			t.Errorf("%s sealed part lacks its secret: %s", e.EventType(), sealed)
		}
	}
}

// roundTrip sends an event through JSON as the store keeps it: the public
// part, and the sealed part apart.
func roundTrip(t *testing.T, e *TwoFactorSnapshotTaken) *TwoFactorSnapshotTaken {
	t.Helper()
	public, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := json.Marshal(e.Secrets())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(public), e.Secret.Secret) || strings.Contains(string(public), "h:") {
		t.Fatalf("the public part of a snapshot holds a secret: %s", public)
	}
	out := &TwoFactorSnapshotTaken{}
	if err := json.Unmarshal(public, out); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(sealed, out.Secrets()); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestASnapshotRestatesTheAggregate(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	tf, secret := enabled(t, t0, "11112222", "33334444", "55556666")
	old := uuid.New()
	ev, err := tf.Verify(old, code(t, secret, t0.Add(30*time.Second)), t0.Add(30*time.Second), fakeHash)
	apply(t, tf, t0.Add(30*time.Second), ev, err)
	now := t0.Add(20 * time.Minute)
	recent := uuid.New()
	ev, err = tf.Verify(recent, Code{Kind: BackupCode, Digits: "33334444"}, now, fakeHash)
	apply(t, tf, now, ev, err)
	for !tf.SnapshotDue() {
		ev, err := tf.RegenerateBackupCodes(hashes("11112222", "55556666"))
		apply(t, tf, now, ev, err)
	}

	restored := &TwoFactor{Version: tf.Version}
	restored.Apply(roundTrip(t, tf.Snapshot(now)[0].(*TwoFactorSnapshotTaken)), now)
	if restored.SnapshotDue() || restored.Version != tf.Version+1 {
		t.Fatalf("after the snapshot: due %v, version %d (was %d)", restored.SnapshotDue(), restored.Version, tf.Version)
	}
	if restored.UserID != tf.UserID || !restored.Enabled || !restored.EnabledAt.Equal(tf.EnabledAt) || restored.Secret != secret ||
		restored.LastStep != tf.LastStep || strings.Join(restored.BackupCodes, ",") != strings.Join(tf.BackupCodes, ",") {
		t.Fatalf("restored %+v from %+v", restored, tf)
	}
	if _, err := restored.Verify(recent, code(t, secret, now), now, fakeHash); !errors.Is(err, ErrChallengeUsed) {
		t.Fatalf("a challenge used just now answered again: %v", err)
	}
	if _, used := restored.usedChallenges[old]; used {
		t.Fatal("a challenge used 20 minutes ago, long expired, is still carried")
	}
	if _, err := restored.Verify(uuid.New(), code(t, secret, t0.Add(30*time.Second)), t0.Add(30*time.Second), fakeHash); !errors.Is(err, ErrWrongCode) {
		t.Fatalf("an accepted TOTP step accepted again after the snapshot: %v", err)
	}
	if _, err := restored.Verify(uuid.New(), Code{Kind: BackupCode, Digits: "55556666"}, now, fakeHash); err != nil {
		t.Fatalf("an unused backup code refused after the snapshot: %v", err)
	}
}
