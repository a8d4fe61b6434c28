package http

import (
	"bytes"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// A handler that panics is an unexpected 500: the client gets the error
// shape, and the request is counted and logged like any other, so a 5xx alert
// sees it.
func TestAPanicIsCountedAndLoggedAsA500(t *testing.T) {
	var logged bytes.Buffer
	reg := prometheus.NewRegistry()
	app := New(Deps{
		Log:            slog.New(slog.NewJSONHandler(&logged, nil)),
		Registry:       reg,
		RequestLogRate: 1,
	})
	app.Get("/boom", func(*fiber.Ctx) error { panic("boom") })

	resp, err := app.Test(httptest.NewRequest(fiber.MethodGet, "/boom", nil), -1)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != fiber.StatusInternalServerError || !strings.Contains(string(body), `"code":"internal"`) {
		t.Fatalf("answer %d %s, want 500 in the error shape", resp.StatusCode, body)
	}
	if strings.Contains(string(body), "boom") {
		t.Errorf("the panic's text reached the client: %s", body)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var counted bool
	for _, f := range families {
		if f.GetName() != "authd_http_requests_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			var status, route string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "status":
					status = l.GetValue()
				case "route":
					route = l.GetValue()
				}
			}
			if status == "500" && route == "/boom" && m.GetCounter().GetValue() == 1 {
				counted = true
			}
		}
	}
	if !counted {
		t.Errorf("no authd_http_requests_total{route=/boom,status=500} = 1")
	}
	if !strings.Contains(logged.String(), `"/boom"`) || !strings.Contains(logged.String(), `500`) {
		t.Errorf("no request line for the panic in the log:\n%s", logged.String())
	}
}
