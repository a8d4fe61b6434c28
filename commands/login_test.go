package commands

import (
	"testing"
)

// An admitted login attempt is settled once: however often its settle is
// called, the throttle hears of it the first time only. Three wrong
// passwords settled twice each are three failures, still among the free
// ones; counted twice they would be six, and the account would have to wait.
func TestALoginAttemptIsSettledOnce(t *testing.T) {
	t.Parallel()
	a, _ := tracedApp(t)
	addUser(t, a, "owner@example.com", "correct horse battery staple")
	r := Request{IP: "198.51.100.7"}
	var key string
	for range 3 {
		at, settle, err := a.admitLogin(t.Context(), "owner@example.com", r)
		if err != nil {
			t.Fatal(err)
		}
		settle(endWrong)
		settle(endWrong)
		key = at.key
	}
	wait, err := a.Accounts.throttle.Attempt(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	if wait > 0 {
		t.Errorf("after three wrong passwords, each settled more than once, the account must wait %s; want no wait", wait)
	}
}
