package testenv

import (
	"slices"
	"testing"
	"time"

	"github.com/authd/authd/internal/totp"
)

// TOTPApp plays a user's authenticator app against the real clock: each code
// it gives is of a later step than the one before (authd accepts a step
// once), within the ±1 step authd accepts, waiting for the clock when needed.
type TOTPApp struct {
	Secret string
	// Used lists the codes given, oldest first.
	Used []string
	last int64
}

// Next is the code of the next step the app may give.
func (k *TOTPApp) Next(t testing.TB) string {
	t.Helper()
	for {
		cur := totp.StepAt(time.Now())
		// Never the previous step: the clock may turn before authd checks.
		if s := max(cur, k.last+1); s <= cur+1 {
			code, err := totp.CodeAt(k.Secret, time.Unix(s*totp.Period, 0))
			if err != nil {
				t.Fatal(err)
			}
			k.last = s
			k.Used = append(k.Used, code)
			return code
		}
		time.Sleep(time.Until(time.Unix((cur+1)*totp.Period, 0)) + 50*time.Millisecond)
	}
}

// Wrong is a well-formed code of the secret that no step near now has.
func (k *TOTPApp) Wrong(t testing.TB) string {
	t.Helper()
	now := time.Now()
	var near []string
	for d := -3; d <= 3; d++ {
		c, _ := totp.CodeAt(k.Secret, now.Add(time.Duration(d*totp.Period)*time.Second))
		near = append(near, c)
	}
	for _, c := range []string{"000000", "111111", "222222", "333333", "444444", "555555", "666666", "777777", "888888"} {
		if !slices.Contains(near, c) {
			return c
		}
	}
	t.Fatal("no wrong code found")
	return ""
}

// Matches reports whether code is one of the secret's codes near now.
func (k *TOTPApp) Matches(code string) bool {
	_, ok := totp.Match(k.Secret, code, time.Now(), -1)
	return ok
}
