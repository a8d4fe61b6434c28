// Package http is authd's HTTP edge: it parses requests, authenticates and
// rate-limits them, calls a command or a query, and maps the outcome to the
// API's shapes and codes.
package http

import (
	"context"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/recover"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/authd/authd/internal/tokens"
)

// BodyLimit caps request bodies: every API body is a few small fields.
const BodyLimit = 64 << 10

// headerLimit is how large a request's headers may be. Past it fasthttp
// answers 431 and closes the connection without reading the rest, which a
// client still sending sees as a broken pipe rather than the answer; so it is
// set well above any real request (large cookies included), as proxies' 8 to
// 16 KiB defaults are, instead of fasthttp's 4 KiB.
const headerLimit = 16 << 10

// Check is a named readiness probe.
type Check struct {
	Name  string
	Check func(ctx context.Context) error
	// Degrades marks a dependency this instance serves without, worse: its
	// failure is reported ("degraded: …") but leaves the instance ready, so
	// that a load balancer does not take every instance out at once for
	// what they all share.
	Degrades bool
}

// Deps is what the HTTP edge needs.
type Deps struct {
	Log            *slog.Logger
	Registry       *prometheus.Registry
	Ready          []Check
	TrustedProxies []netip.Prefix // proxies whose X-Forwarded-For is believed
	Accounts       *Accounts
	JWKS           func() []byte
	CORSOrigins    []string // may call the API from a browser
	RequestLogRate float64  // share of requests logged (config AUTHD_REQUEST_LOG): 1 all, 0 none
}

// New returns the fiber app with every route of authd.
func New(d Deps) *fiber.App {
	edge := newEdge(d.CORSOrigins, newRefusals(d.Log, d.Registry, time.Now))
	cfg := fiber.Config{
		AppName: "authd",
		// Bodies are streamed, never read whole before a handler runs: the
		// edge middleware reads them, at most BodyLimit kept, and drops the
		// rest of one too large. BodyLimit here only caps what fasthttp reads
		// ahead (8 KiB at most).
		StreamRequestBody:     true,
		BodyLimit:             BodyLimit,
		ReadBufferSize:        headerLimit,
		DisableStartupMessage: true,
		ErrorHandler:          edge.errors(errorHandler(d.Log), d.TrustedProxies),
		ReadTimeout:           10 * time.Second,
		WriteTimeout:          10 * time.Second,
		IdleTimeout:           60 * time.Second,
	}
	cfg.DisablePreParseMultipartForm = true // it would read a whole form into memory or files
	app := fiber.New(cfg)
	app.Server().Handler = closeUnread(app.Server().Handler)
	app.Use(withRequestID)
	app.Use(newMetrics(d.Registry).middleware)
	app.Use(newRequestLog(d).middleware)
	// Inside the counting and logging, so a panic is a 500 they see.
	app.Use(recover.New())
	app.Use(edge.middleware)

	app.Get("/healthz", func(c *fiber.Ctx) error { return c.JSON(fiber.Map{"status": "ok"}) })
	app.Get("/readyz", readyz(d.Ready))
	app.Get("/metrics", metricsHandler(d.Registry))
	if d.JWKS != nil {
		app.Get("/.well-known/jwks.json", func(c *fiber.Ctx) error {
			c.Set(fiber.HeaderCacheControl, "public, max-age="+strconv.Itoa(int(tokens.JWKSMaxAge/time.Second)))
			c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
			return c.Send(d.JWKS())
		})
	}
	serveOpenAPI(app)
	api := app.Group("/api/v1/auth")
	if d.Accounts != nil {
		d.Accounts.trusted = d.TrustedProxies
		d.Accounts.routes(api)
	}
	return app
}

const requestIDKey = "authd.request_id"

// withRequestID keeps a caller's X-Request-ID when it is a plain token, so
// logs and audit events can be joined with the caller's, and makes one up
// otherwise: an id of any length or content would go into every audit event.
func withRequestID(c *fiber.Ctx) error {
	id := c.Get(fiber.HeaderXRequestID)
	if !plainID(id) {
		id = uuid.NewString()
	}
	c.Locals(requestIDKey, id)
	c.Set(fiber.HeaderXRequestID, id)
	return c.Next()
}

func plainID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._:-", r)) {
			return false
		}
	}
	return true
}

func requestID(c *fiber.Ctx) string {
	id, _ := c.Locals(requestIDKey).(string)
	return id
}

// degradeWithin bounds a check that only degrades the instance.
const degradeWithin = 500 * time.Millisecond

// readyz reports each check, so an operator sees which dependency is missing.
// The checks run at once, and one that only degrades is given
// degradeWithin: a NATS election held its ping for up to 2 s, longer than a
// readiness probe's usual one-second timeout, and so took every instance out
// at once over what Degrades exists to keep them in for.
func readyz(checks []Check) fiber.Handler {
	return func(c *fiber.Ctx) error {
		ctx, cancel := context.WithTimeout(c.UserContext(), 2*time.Second)
		defer cancel()
		errs := make([]error, len(checks))
		var wg sync.WaitGroup
		for i, ch := range checks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx := ctx
				if ch.Degrades {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, degradeWithin)
					defer cancel()
				}
				errs[i] = ch.Check(ctx)
			}()
		}
		wg.Wait()
		results := make(map[string]string, len(checks))
		ready := true
		for i, ch := range checks {
			switch err := errs[i]; {
			case err != nil && ch.Degrades:
				results[ch.Name] = "degraded: " + err.Error()
			case err != nil:
				results[ch.Name] = err.Error()
				ready = false
			default:
				results[ch.Name] = "ok"
			}
		}
		if !ready {
			c.Set(fiber.HeaderRetryAfter, "1")
			return c.Status(fiber.StatusServiceUnavailable).JSON(fiber.Map{
				"error":  fiber.Map{"code": "unavailable", "message": "not ready"},
				"checks": results,
			})
		}
		return c.JSON(fiber.Map{"status": "ready", "checks": results})
	}
}
