package http

import (
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		requests: f.NewCounterVec(prometheus.CounterOpts{Name: "authd_http_requests_total", Help: "HTTP requests by route, method and the status the client received."},
			[]string{"route", "method", "status"}),
		latency: f.NewHistogramVec(prometheus.HistogramOpts{
			Name: "authd_http_request_seconds", Help: "HTTP request latency by route and method.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}, []string{"route", "method"}),
	}
}

// middleware labels by route pattern, not raw path, so ids in paths do not
// explode the series count, and by the status the client received: a
// handler's error is answered first (answer), so a wrong password counts as
// the 401 it is and load shedding as a 503, not as 500s.
func (m *metrics) middleware(c *fiber.Ctx) error {
	start := time.Now()
	err := answer(c, c.Next())
	status := c.Response().StatusCode()
	// fiber's strings point into buffers it reuses for the next request: a
	// label kept by Prometheus must be a copy, or it changes under it.
	r, method := strings.Clone(route(c, status)), strings.Clone(c.Method())
	m.requests.WithLabelValues(r, method, strconv.Itoa(status)).Inc()
	m.latency.WithLabelValues(r, method).Observe(time.Since(start).Seconds())
	return err
}

func metricsHandler(g prometheus.Gatherer) fiber.Handler {
	return adaptor.HTTPHandler(promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
}
