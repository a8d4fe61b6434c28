package commands

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/codes"
	"github.com/authd/authd/internal/mail"
	"github.com/authd/authd/internal/password"
	"github.com/authd/authd/internal/ratelimit"
	"github.com/authd/authd/internal/revocation"
	"github.com/authd/authd/internal/testenv"
)

// tracedApp is the commands over a fresh database whose statements st
// records, with real parts throughout and no worker draining its queue, so
// that what each command hands off stays there to be counted.
func tracedApp(t *testing.T) (*App, *testenv.Statements) {
	t.Helper()
	_, url := testenv.Database(t)
	st := testenv.NewStatements()
	pool := st.Pool(t, url, 4)
	limiter := ratelimit.New(pool, time.Now)
	mails, err := mail.Builtin("authd")
	if err != nil {
		t.Fatal(err)
	}
	app := New(Deps{
		Store:    eventstore.NewStore(pool, testenv.Sealer(t), prometheus.NewRegistry()),
		Hasher:   password.NewHasher(password.OWASP(), 2, 8),
		Codes:    codes.New(pool, bytes.Repeat([]byte{3}, codes.KeySize), time.Now),
		Mail:     mail.NewLog(testenv.Logger(t)),
		Mails:    mails,
		Throttle: limiter,
		Limits:   limiter,
		Revoked:  revocation.New(time.Now),
		Log:      testenv.Logger(t),
		Now:      time.Now,
		Product:  "authd",
	})
	return app, st
}

// addUser appends a verified account for email with password pw.
func addUser(t *testing.T, a *App, email, pw string) uuid.UUID {
	t.Helper()
	hash, err := a.d.Hasher.Hash(t.Context(), pw)
	if err != nil {
		t.Fatal(err)
	}
	id, tenant := uuid.New(), uuid.New()
	reg := &domain.UserRegistered{UserID: id, TenantID: tenant, Email: email, Name: "Owner"}
	reg.Secret.PasswordHash = hash
	c := a.newChange(Request{IP: "192.0.2.1"})
	if err := c.add(domain.UserStream(id), 0, tenant, id, reg, &domain.EmailVerified{UserID: id}); err != nil {
		t.Fatal(err)
	}
	c.write.Claims = []eventstore.Claim{{Scope: emailScope, Key: email, Owner: id.String()}}
	if _, err := a.commit(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	return id
}

// An address with an account and one without must not be told apart by
// how long /login (wrong password) or /otp/send take: both run the same
// statements, in the same order, and hand the same number of jobs to the
// background queue. What each path does is compared, never its time.
func TestUnknownAddressesDoTheSameWorkAsKnownOnes(t *testing.T) {
	t.Parallel()
	a, st := tracedApp(t)
	addUser(t, a, "owner@example.com", "correct horse battery staple")
	r := Request{IP: "198.51.100.7", UserAgent: "probe", RequestID: "r"}

	run := func(path string, do func(ctx context.Context) error) (sql []string, handoffs int) {
		t.Helper()
		before := len(a.jobs)
		if err := do(st.Label(t.Context(), path)); err != nil && err != ErrInvalidCredentials && err != ErrInvalidCode {
			t.Fatalf("%s: %v", path, err)
		}
		return st.Of(path), len(a.jobs) - before
	}
	compare := func(what string, known, unknown func(ctx context.Context) error) {
		t.Helper()
		for round := range 2 { // the second time, with the throttle's rows in place
			k, kh := run(fmt.Sprintf("%s known %d", what, round), known)
			u, uh := run(fmt.Sprintf("%s unknown %d", what, round), unknown)
			if len(k) == 0 {
				t.Fatalf("%s: no statements recorded", what)
			}
			if !slices.Equal(k, u) {
				t.Errorf("%s, round %d: the statements differ\nknown address:\n  %s\nunknown address:\n  %s",
					what, round+1, strings.Join(k, "\n  "), strings.Join(u, "\n  "))
			}
			if kh != uh || kh != 1 {
				t.Errorf("%s, round %d: handed off %d jobs for the known address and %d for the unknown one; want 1 each", what, round+1, kh, uh)
			}
		}
	}
	compare("login with a wrong password",
		func(ctx context.Context) error {
			_, err := a.Login(ctx, "owner@example.com", "wrong password", r)
			return err
		},
		func(ctx context.Context) error {
			_, err := a.Login(ctx, "nobody@example.com", "wrong password", r)
			return err
		})
	compare("otp/send",
		func(ctx context.Context) error { return a.SendCode(ctx, "owner@example.com", PurposeLogin, r) },
		func(ctx context.Context) error { return a.SendCode(ctx, "nobody@example.com", PurposeLogin, r) })
	// Both addresses now have a live code (/otp/send issues one for an
	// address without an account too); a wrong guess at it must cost the
	// same.
	compare("otp/login with a wrong code",
		func(ctx context.Context) error {
			_, err := a.CodeLogin(ctx, "owner@example.com", "000000", r)
			return err
		},
		func(ctx context.Context) error {
			_, err := a.CodeLogin(ctx, "nobody@example.com", "000000", r)
			return err
		})
}
