package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"time"
)

const (
	healthTimeout = 3 * time.Second
	// healthBodyLimit bounds what is read and printed of the answer.
	healthBodyLimit = 64 << 10
)

func setupHealth(*flag.FlagSet) func(context.Context, *cli, []string) error {
	return func(ctx context.Context, c *cli, args []string) error {
		var target string
		switch len(args) {
		case 0:
			// Only AUTHD_ADDR matters here, but it is read through the same
			// validated configuration as authd's, so both agree on the address.
			cfg, err := c.loadConfig()
			if err != nil {
				return err
			}
			target = readyzURL(cfg.Addr)
		case 1:
			u, err := url.Parse(args[0])
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return usagef("%q is not an http:// or https:// URL", args[0])
			}
			target = args[0]
		default:
			return usagef("takes at most one URL, got %d arguments", len(args))
		}
		return health(ctx, c, target)
	}
}

// readyzURL is authd's readiness endpoint as seen from its own host (the
// healthcheck runs inside authd's container): an unspecified listen host
// (":8080", "0.0.0.0:8080", "[::]:8080") is reached on loopback.
func readyzURL(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		host, port = "", "8080"
	}
	if a, err := netip.ParseAddr(host); host == "" || (err == nil && a.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/readyz"
}

func health(ctx context.Context, c *cli, target string) error {
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", target, err)
	}
	client := &http.Client{
		// A probe of one endpoint: a redirect is an answer, not a hop to take.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("GET %s: no answer within %s", target, healthTimeout)
		}
		return fmt.Errorf("GET %s: %w", target, unwrapURLError(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, healthBodyLimit))
	if err != nil {
		return fmt.Errorf("GET %s: read answer: %w", target, err)
	}
	if len(body) > 0 {
		if !bytes.HasSuffix(body, []byte("\n")) {
			body = append(body, '\n')
		}
		if _, err := c.stdout.Write(body); err != nil {
			return err
		}
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", target, resp.Status)
	}
	return nil
}

// unwrapURLError drops the "Get \"url\": " prefix net/http adds, since the
// message names the URL already.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
