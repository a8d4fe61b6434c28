package commands_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/authd/authd/commands"
	"github.com/authd/authd/internal/codes"
	"github.com/authd/authd/internal/pgpool"
	"github.com/authd/authd/internal/testenv"
)

// A database that fails while the signup code is checked (a restart, a
// terminated connection: the chaos suite's pg_terminate_backend found it)
// is not a wrong code: the client is told to retry, not that the code it
// was mailed is wrong, and the code is still good afterwards.
func TestVerifyRegistrationTellsADatabaseFailureFromAWrongCode(t *testing.T) {
	t.Parallel()
	pool, url := testenv.Database(t)
	mp := testenv.Mailpit(t)
	deps := signupDeps(t, pool, mp)
	app := commands.New(deps)
	go app.Run(t.Context()) // sends the mails the commands hand off
	ctx := context.Background()
	const email = "verify-during-outage@example.com"
	if err := app.Register(ctx, commands.RegisterInput{Email: email, Password: "correct horse battery staple"}, commands.Request{IP: "192.0.2.1"}); err != nil {
		t.Fatal(err)
	}
	code := testenv.CodeIn(t, mp.WaitForMessage(t, email, 30*time.Second))

	closed, err := pgpool.Open(ctx, url, 1)
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	outage := deps
	outage.Codes = codes.New(closed, make([]byte, codes.KeySize), time.Now) // signupDeps's key
	_, err = commands.New(outage).VerifyRegistration(ctx, email, code, commands.Request{IP: "192.0.2.1"})
	if err == nil || errors.Is(err, commands.ErrInvalidCode) {
		t.Fatalf("verify with the codes' database down = %v; want the database's error, not invalid_code", err)
	}
	if _, err := deps.Codes.Consume(ctx, email, commands.PurposeVerify, code); err != nil {
		t.Fatalf("the mailed code after the failed check: %v; want it still good", err)
	}
}
