package http

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/authd/authd/commands"
)

// A busy refusal is held back before it is answered, so that a client
// retrying at once cannot turn the refusals themselves into the load.
func TestBusyAnswersAreHeldBack(t *testing.T) {
	app := fiber.New(fiber.Config{ErrorHandler: errorHandler(slog.New(slog.DiscardHandler))})
	app.Get("/", func(*fiber.Ctx) error { return commands.ErrBusy })
	start := time.Now()
	resp, err := app.Test(httptest.NewRequest(fiber.MethodGet, "/", nil), -1)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if held := time.Since(start); held < busyHold {
		t.Errorf("answered after %v, want at least %v", held, busyHold)
	}
	if resp.StatusCode != fiber.StatusServiceUnavailable || resp.Header.Get(fiber.HeaderRetryAfter) != "1" {
		t.Errorf("answered %d with Retry-After %q, want 503 and 1", resp.StatusCode, resp.Header.Get(fiber.HeaderRetryAfter))
	}
}

// Postgres saying "not now" (a deadlock that retries did not get past, a
// timeout, too many connections, a server going away) is a 503 the client can
// retry, not an internal error; a Postgres error about the request itself
// stays a 500.
func TestDatabaseUnavailableIsRetryLater(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
	}{
		{fmt.Errorf("append: %w", &pgconn.PgError{Code: "40P01"}), fiber.StatusServiceUnavailable},
		{fmt.Errorf("append: %w", &pgconn.PgError{Code: "40001"}), fiber.StatusServiceUnavailable},
		{fmt.Errorf("load: %w", &pgconn.PgError{Code: "57014"}), fiber.StatusServiceUnavailable},
		{fmt.Errorf("load: %w", &pgconn.PgError{Code: "53300"}), fiber.StatusServiceUnavailable},
		{fmt.Errorf("load: %w", &pgconn.PgError{Code: "42P01"}), fiber.StatusInternalServerError}, // undefined_table: ours to fix
	} {
		app := fiber.New(fiber.Config{ErrorHandler: errorHandler(slog.New(slog.DiscardHandler))})
		app.Get("/", func(*fiber.Ctx) error { return c.err })
		resp, err := app.Test(httptest.NewRequest(fiber.MethodGet, "/", nil), -1)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%v: answered %d, want %d", c.err, resp.StatusCode, c.want)
			continue
		}
		if c.want == fiber.StatusServiceUnavailable && (resp.Header.Get(fiber.HeaderRetryAfter) != "1" || !strings.Contains(string(body), `"code":"unavailable"`)) {
			t.Errorf("%v: answered Retry-After %q and %s, want 1 and the code unavailable", c.err, resp.Header.Get(fiber.HeaderRetryAfter), body)
		}
	}
}

// Each of the commands' errors answers with the status and code API.md
// gives it, wrapped or not, and a 503 says when to retry.
func TestCommandErrorsAnswerAsTheAPISays(t *testing.T) {
	for _, c := range []struct {
		err        error
		status     int
		code       string
		retryAfter string
	}{
		{commands.ErrInvalidCredentials, fiber.StatusUnauthorized, "invalid_credentials", ""},
		{commands.ErrEmailNotVerified, fiber.StatusForbidden, "email_not_verified", ""},
		{commands.ErrInvalidCode, fiber.StatusBadRequest, "invalid_code", ""},
		{commands.ErrInvalidChallenge, fiber.StatusUnauthorized, "invalid_challenge", ""},
		{commands.ErrInvalidRefreshToken, fiber.StatusUnauthorized, "invalid_refresh_token", ""},
		{commands.ErrPasskeyChallenge, fiber.StatusUnauthorized, "invalid_challenge", ""},
		{commands.ErrPasskeyRejected, fiber.StatusUnauthorized, "invalid_credentials", ""},
		{commands.ErrInvalidToken, fiber.StatusUnauthorized, "invalid_token", ""},
		{commands.ErrGoogleUnavailable, fiber.StatusServiceUnavailable, "unavailable", "5"},
		{commands.ErrNotFound, fiber.StatusNotFound, "not_found", ""},
		{commands.ErrConflict, fiber.StatusConflict, "conflict", ""},
		{fmt.Errorf("%w: %w", commands.ErrConflict, errors.New("a store's own conflict")), fiber.StatusConflict, "conflict", ""},
		{fmt.Errorf("login: %w", commands.ErrBusy), fiber.StatusServiceUnavailable, "unavailable", "1"},
		{fmt.Errorf("load: %w", context.DeadlineExceeded), fiber.StatusServiceUnavailable, "unavailable", "1"},
		{&commands.ValidationError{Field: "email", Message: "is required"}, fiber.StatusBadRequest, "validation_failed", ""},
		{fmt.Errorf("login: %w", &commands.RetryLaterError{After: 3 * time.Second}), fiber.StatusTooManyRequests, "rate_limited", "3"},
		{errors.New("a fault of ours"), fiber.StatusInternalServerError, "internal", ""},
	} {
		app := fiber.New(fiber.Config{ErrorHandler: errorHandler(slog.New(slog.DiscardHandler))})
		app.Get("/", func(*fiber.Ctx) error { return c.err })
		resp, err := app.Test(httptest.NewRequest(fiber.MethodGet, "/", nil), -1)
		if err != nil {
			t.Fatal(err)
		}
		var body errorBody
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%v: the answer is not an Error: %v", c.err, err)
		}
		if resp.StatusCode != c.status || body.Error.Code != c.code || resp.Header.Get(fiber.HeaderRetryAfter) != c.retryAfter {
			t.Errorf("%v: answered %d %q with Retry-After %q, want %d %q with %q",
				c.err, resp.StatusCode, body.Error.Code, resp.Header.Get(fiber.HeaderRetryAfter), c.status, c.code, c.retryAfter)
		}
	}
}
