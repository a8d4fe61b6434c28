package http

import (
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/authd/authd/commands"
)

// refusalLogEvery is how often at most one kind of refusal (group and
// reason) is logged: a flood of them must not become a flood of log lines.
// The line says how many were left out since the one before.
const refusalLogEvery = time.Second

// edgeGroup is the group of refusals decided before any route is chosen.
const edgeGroup = "edge"

// refusals counts the requests authd turns away on purpose, by group (the
// route, or edgeGroup) and reason, and logs them without flooding the log.
type refusals struct {
	log   *slog.Logger
	count *prometheus.CounterVec
	now   func() time.Time

	mu    sync.Mutex
	lines map[refusalKey]refusalLine
}

type refusalKey struct{ group, reason string }

// refusalLine is when a kind of refusal was last logged, and how many of it
// have not been since.
type refusalLine struct {
	at         time.Time
	suppressed int
}

func newRefusals(log *slog.Logger, reg prometheus.Registerer, now func() time.Time) *refusals {
	return &refusals{
		log: log,
		count: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "authd_http_refusals_total",
			Help: "Requests refused on purpose (limits, throttles, body and framing rules), by group (route, or edge before routing) and reason.",
		}, []string{"group", "reason"}),
		now:   now,
		lines: map[refusalKey]refusalLine{},
	}
}

// refusalOf names the reason err refuses a request for, and the group it
// counts in; ok is false for an error that is not a refusal (a 404, a wrong
// password, a fault of ours).
func refusalOf(c *fiber.Ctx, err error) (group, reason string, ok bool) {
	route := func() string {
		// A copy: fiber reuses the string's buffer for the next request.
		return strings.Clone(strings.TrimPrefix(c.Route().Path, apiPrefix+"/"))
	}
	var apiErr *Error
	var fe *fiber.Error
	var rl *commands.RetryLaterError
	switch {
	case errors.As(err, &apiErr) && apiErr.refusal != "":
		return edgeGroup, apiErr.refusal, true
	case errors.As(err, &apiErr) && apiErr.Status == fiber.StatusTooManyRequests:
		return route(), "rate_limited", true
	case errors.As(err, &rl):
		return route(), "throttled", true
	case errors.Is(err, commands.ErrBusy):
		return route(), "busy", true
	case errors.As(err, &fe):
		// fasthttp's own refusals, of requests it could not even parse.
		switch fe.Code {
		case fiber.StatusBadRequest:
			return edgeGroup, "malformed", true
		case fiber.StatusRequestEntityTooLarge:
			return edgeGroup, "payload_too_large", true
		case fiber.StatusRequestHeaderFieldsTooLarge:
			return edgeGroup, "headers_too_large", true
		case fiber.StatusRequestTimeout:
			return edgeGroup, "timeout", true
		}
	}
	return "", "", false
}

// note counts err when it is a refusal, and logs it unless one of its kind
// was logged less than refusalLogEvery ago. The line carries who and where,
// never a body or a header's value.
func (r *refusals) note(c *fiber.Ctx, err error, trusted []netip.Prefix) {
	group, reason, ok := refusalOf(c, err)
	if !ok {
		return
	}
	r.count.WithLabelValues(group, reason).Inc()
	key := refusalKey{group, reason}
	r.mu.Lock()
	line, log, left := nextRefusalLine(r.lines[key], r.now())
	r.lines[key] = line
	r.mu.Unlock()
	if !log {
		return
	}
	path := c.Path()
	if len(path) > 128 {
		path = path[:128]
	}
	r.log.Info("request refused", "group", group, "reason", reason, "suppressed", left,
		"method", c.Method(), "path", path, "ip", clientIP(c, trusted), "request_id", requestID(c))
}

// nextRefusalLine decides whether one more refusal of a kind is logged at
// now: the first one is, then one per refusalLogEvery. When it is, left is
// how many were not logged since the line before.
func nextRefusalLine(last refusalLine, now time.Time) (next refusalLine, log bool, left int) {
	if !last.at.IsZero() && now.Sub(last.at) < refusalLogEvery {
		return refusalLine{at: last.at, suppressed: last.suppressed + 1}, false, 0
	}
	return refusalLine{at: now}, true, last.suppressed
}
