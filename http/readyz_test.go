package http

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
)

// A dependency that only degrades the instance and does not answer (NATS
// in an election) is given degradeWithin, not the whole two seconds, and
// the checks run at once: the answer comes within a probe's usual one-second
// timeout, ready, with the dependency reported degraded. A required check
// that fails still makes the instance not ready.
func TestReadyzBoundsWhatOnlyDegrades(t *testing.T) {
	for _, postgres := range []error{nil, errors.New("connection refused")} {
		natsStarted := make(chan struct{})
		var given time.Duration
		checks := []Check{
			// Ends only once the NATS check has begun: run one after the
			// other, it would wait out the whole two seconds first.
			{Name: "postgres", Check: func(ctx context.Context) error {
				select {
				case <-natsStarted:
				case <-ctx.Done():
				}
				return postgres
			}},
			{Name: "nats", Degrades: true, Check: func(ctx context.Context) error {
				close(natsStarted)
				if dl, ok := ctx.Deadline(); ok {
					given = time.Until(dl)
				}
				<-ctx.Done()
				return ctx.Err()
			}},
		}
		app := fiber.New()
		app.Get("/readyz", readyz(checks))
		resp, err := app.Test(httptest.NewRequest("GET", "/readyz", nil), -1)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Checks map[string]string `json:"checks"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		if given <= 0 || given > degradeWithin {
			t.Errorf("the NATS check was given %v, want at most %v", given, degradeWithin)
		}
		if !strings.HasPrefix(body.Checks["nats"], "degraded: ") {
			t.Errorf("nats check reported %q, want degraded", body.Checks["nats"])
		}
		switch {
		case postgres == nil && (resp.StatusCode != 200 || body.Checks["postgres"] != "ok"):
			t.Errorf("readyz with postgres up = %d %v, want 200 with postgres ok", resp.StatusCode, body.Checks)
		case postgres != nil && resp.StatusCode != 503:
			t.Errorf("readyz with postgres failing = %d %v, want 503", resp.StatusCode, body.Checks)
		}
	}
}
