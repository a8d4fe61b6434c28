package http

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/authd/authd/internal/tokens"
)

// requestLog writes one structured line per request, so an operator holding
// a request id from an answer can find what happened to it. It logs what
// identifies the request and its outcome, never a header's value, a body, a
// query string or a path's parameters: tokens and codes travel in those.
type requestLog struct {
	log     *slog.Logger
	trusted []netip.Prefix
	// rate is the share of requests logged: 1 logs every one, 0 none. Answers
	// of 500 and above are logged whatever it is.
	rate float64
}

func newRequestLog(d Deps) *requestLog {
	return &requestLog{log: d.Log.With("component", "http"), trusted: d.TrustedProxies, rate: d.RequestLogRate}
}

func (l *requestLog) middleware(c *fiber.Ctx) error {
	start := time.Now()
	err := answer(c, c.Next())
	status := c.Response().StatusCode()
	if status < fiber.StatusInternalServerError && (l.rate <= 0 || l.rate < 1 && rand.Float64() >= l.rate) {
		return err
	}
	attrs := []slog.Attr{
		slog.String("method", c.Method()),
		slog.String("route", route(c, status)),
		slog.Int("status", status),
		slog.Duration("duration", time.Since(start)),
		slog.String("request_id", requestID(c)),
		slog.String("client_ip", clientIP(c, l.trusted)),
	}
	if claims, ok := c.Locals(claimsKey).(tokens.Claims); ok {
		attrs = append(attrs, slog.String("user_id", claims.UserID.String()))
	}
	if l.rate < 1 {
		attrs = append(attrs, slog.Float64("sample_rate", l.rate))
	}
	l.log.LogAttrs(context.Background(), slog.LevelInfo, "request", attrs...)
	return err
}

// answer turns a handler's error into the answer the client gets, through
// the app's error handler, so a middleware after it sees the status that was
// sent. Fiber would otherwise map the error only once every middleware has
// returned; the wrong passwords, bad codes and load shedding a command
// returns as errors were all counted as 500s.
func answer(c *fiber.Ctx, err error) error {
	if err == nil {
		return nil
	}
	return c.App().ErrorHandler(c, err)
}

// route is the request's route pattern ("/api/v1/auth/sessions/:id"), not
// its path: ids in paths would make a metric series each, and a path can
// carry what the log must not show. A path no route matched is "unmatched".
func route(c *fiber.Ctx, status int) string {
	r := c.Route().Path
	if status == fiber.StatusNotFound && r == "/" {
		return "unmatched"
	}
	return r
}
