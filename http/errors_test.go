package http

import (
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/authd/authd/internal/password"
)

// A busy refusal is held back before it is answered, so that a client
// retrying at once cannot turn the refusals themselves into the load.
func TestBusyAnswersAreHeldBack(t *testing.T) {
	app := fiber.New(fiber.Config{ErrorHandler: errorHandler(slog.New(slog.DiscardHandler))})
	app.Get("/", func(*fiber.Ctx) error { return password.ErrBusy })
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
