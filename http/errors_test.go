package http

import (
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/authd/authd/password"
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
