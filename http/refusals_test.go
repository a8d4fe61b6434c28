package http

import (
	"log/slog"
	"maps"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/authd/authd/commands"
)

// One line a second for a kind of refusal, each saying how many it stands
// for: however many come, the log grows by one line a second.
func TestRefusalLinesAreOneASecond(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 5, 0, 0, 0, time.UTC)
	var line refusalLine
	logged, covered := 0, 0
	for i := range 1000 {
		next, log, left := nextRefusalLine(line, t0.Add(time.Duration(i)*5*time.Millisecond)) // 5 s in all
		line = next
		if log {
			logged++
			covered += 1 + left
		}
	}
	if logged != 5 {
		t.Errorf("%d lines for 1000 refusals over 5 s, want 5", logged)
	}
	if covered+line.suppressed != 1000 {
		t.Errorf("the lines account for %d refusals and %d are pending, want 1000 in all", covered, line.suppressed)
	}
}

// A login throttle and a full hasher queue are refusals too, counted by the
// route they refused; a wrong password or a 404 is not.
func TestRefusalsByRoute(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEdge(nil, newRefusals(slog.New(slog.DiscardHandler), reg, time.Now))
	app := fiber.New(fiber.Config{ErrorHandler: e.errors(errorHandler(slog.New(slog.DiscardHandler)), nil)})
	app.Post(apiPrefix+"/login", func(*fiber.Ctx) error { return &commands.RetryLaterError{After: time.Second} })
	app.Post(apiPrefix+"/otp/login", func(*fiber.Ctx) error { return commands.ErrBusy })
	app.Post(apiPrefix+"/refresh", func(*fiber.Ctx) error { return commands.ErrInvalidRefreshToken })
	for _, path := range []string{"/login", "/otp/login", "/refresh", "/nope"} {
		resp, err := app.Test(httptest.NewRequest(fiber.MethodPost, apiPrefix+path, nil), -1)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	got := map[string]float64{}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			labels := ""
			for _, l := range m.GetLabel() {
				labels += l.GetName() + "=" + l.GetValue() + " "
			}
			got[f.GetName()+" "+labels] = m.GetCounter().GetValue()
		}
	}
	want := map[string]float64{
		"authd_http_refusals_total group=login reason=throttled ": 1,
		"authd_http_refusals_total group=otp/login reason=busy ":  1,
	}
	if !maps.Equal(got, want) {
		t.Errorf("counted %v, want %v", got, want)
	}
}

func TestFramingAndCodingRules(t *testing.T) {
	for raw, ambiguous := range map[string]bool{
		"Content-Length: 5\r\n":                                        false,
		"Transfer-Encoding: chunked\r\n":                               false,
		"Content-Length: 5\r\nContent-Length: 5\r\n":                   false,
		"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n":          true,
		"transfer-encoding: CHUNKED\r\ncontent-length: 5\r\n":          true,
		"Content-Length: 5\r\nContent-Length: 6\r\n":                   true,
		"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n": true,
		"Transfer-Encoding: gzip, chunked\r\n":                         true,
		"Transfer-Encoding: identity\r\nContent-Length: 5\r\n":         true,
		"Host: x\r\nX-Content-Length: 5\r\nContent-Length: 5\r\n":      false,
	} {
		if got := ambiguousFraming([]byte(raw)); got != ambiguous {
			t.Errorf("%q: ambiguous %v, want %v", raw, got, ambiguous)
		}
	}
	for raw, identity := range map[string]bool{
		"":                               true,
		"Content-Encoding: identity\r\n": true,
		"Content-Encoding: IDENTITY, identity\r\n":               true,
		"Content-Encoding: gzip\r\n":                             false,
		"Content-Encoding: identity\r\nContent-Encoding: br\r\n": false,
		"Content-Encoding: identity,x\r\n":                       false,
	} {
		if got := identityOnly([]byte(raw)); got != identity {
			t.Errorf("%q: identity only %v, want %v", raw, got, identity)
		}
	}
}

// The edge's checks run on every request: reading the raw headers costs no
// allocation.
func BenchmarkEdgeHeaderChecks(b *testing.B) {
	raw := []byte("Host: auth.example.com\r\nUser-Agent: Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7)\r\nContent-Type: application/json\r\nAuthorization: Bearer x.y.z\r\nContent-Length: 61\r\nAccept: */*\r\n\r\n")
	b.ReportAllocs()
	for b.Loop() {
		if ambiguousFraming(raw) || !identityOnly(raw) || !isJSON([]byte("application/json")) {
			b.Fatal("refused a plain request")
		}
	}
}
