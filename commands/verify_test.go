package commands

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/authd/authd/internal/codes"
	"github.com/authd/authd/internal/pgpool"
	"github.com/authd/authd/internal/seal"
)

// A database that fails while the signup code is checked (a restart, a
// terminated connection: the chaos suite's pg_terminate_backend found it)
// is not a wrong code: the client is told to retry, not that the code it
// was mailed is wrong, and the code verifies the signup once the database
// is back.
func TestVerifyRegistrationTellsADatabaseFailureFromAWrongCode(t *testing.T) {
	t.Parallel()
	app := newApp(t)
	ctx := context.Background()
	const email = "verify-during-outage@example.com"
	if err := app.Register(ctx, RegisterInput{Email: email, Password: "correct horse battery staple"}, request); err != nil {
		t.Fatal(err)
	}
	code := app.nextCode(t, email)

	closed, err := pgpool.Open(ctx, app.env.url, 1)
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	working := app.Accounts.codes
	app.Accounts.codes = codes.New(closed, seal.Derive(app.env.master, "email-codes"), time.Now)
	_, err = app.VerifyRegistration(ctx, email, code, request)
	app.Accounts.codes = working
	if err == nil || errors.Is(err, ErrInvalidCode) {
		t.Fatalf("verify with the codes' database down = %v; want the database's error, not invalid_code", err)
	}
	if _, err := app.VerifyRegistration(ctx, email, code, request); err != nil {
		t.Fatalf("verify with the mailed code once the database is back: %v", err)
	}
}
