package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"
)

// A conn sends a worker's requests over its one keep-alive connection.
type conn interface {
	// Do sends a request to path (below the base URL) and reads the whole
	// answer; it returns the body only when keep is true.
	Do(ctx context.Context, r *request, keep bool) (status int, body []byte, err error)
}

// request is what a scenario sends; header lines are sent as given.
type request struct {
	method, path string
	header       http.Header
	body         []byte
}

// newConn is how an engine builds a worker's connection.
type newConn func(base *url.URL, timeout time.Duration, dials *atomic.Int64) conn

// engine returns the named way of building a worker's connection. "nethttp"
// is Go's http.Client, the way a Go service calls authd; "raw" writes
// HTTP/1.1 itself on one net.Conn and parses answers with
// http.ReadResponse: no goroutines per connection, a few allocations per
// request, so that on a machine the tool shares with authd and Postgres it
// takes less CPU away from them.
func engine(name string) (newConn, bool) {
	switch name {
	case "nethttp":
		return func(base *url.URL, timeout time.Duration, dials *atomic.Int64) conn {
			return &httpConn{base: base.String(), cl: newClient(timeout, dials)}
		}, true
	case "raw":
		return func(base *url.URL, timeout time.Duration, dials *atomic.Int64) conn {
			return &rawConn{addr: hostPort(base), host: base.Host, dials: dials, timeout: timeout}
		}, true
	}
	return nil, false
}

type httpConn struct {
	base string
	cl   *http.Client
}

func (c *httpConn) Do(ctx context.Context, r *request, keep bool) (int, []byte, error) {
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, c.base+r.path, body)
	if err != nil {
		return 0, nil, err
	}
	req.Header = r.header
	resp, err := c.cl.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	if keep {
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, b, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil, err
}

func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	if u.Scheme == "https" {
		return net.JoinHostPort(u.Hostname(), "443")
	}
	return net.JoinHostPort(u.Hostname(), "80")
}

// rawConn is HTTP/1.1 over one TCP connection, redialled only when the
// server closes it or a request fails midway.
type rawConn struct {
	addr, host string
	dials      *atomic.Int64
	timeout    time.Duration

	nc  net.Conn
	br  *bufio.Reader
	buf []byte
}

func (c *rawConn) Do(ctx context.Context, r *request, keep bool) (status int, body []byte, err error) {
	if c.nc == nil {
		d := net.Dialer{Timeout: c.timeout}
		nc, err := d.DialContext(ctx, "tcp", c.addr)
		if err != nil {
			return 0, nil, err
		}
		c.dials.Add(1)
		c.nc = nc
		if c.br == nil {
			c.br = bufio.NewReaderSize(nc, 16<<10)
		} else {
			c.br.Reset(nc)
		}
	}
	defer func() {
		if err != nil && c.nc != nil {
			c.nc.Close()
			c.nc = nil
		}
	}()
	if dl, ok := ctx.Deadline(); ok {
		c.nc.SetDeadline(dl)
	} else {
		c.nc.SetDeadline(time.Time{})
	}
	b := c.buf[:0]
	b = append(b, r.method...)
	b = append(b, ' ')
	b = append(b, r.path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, c.host...)
	b = append(b, "\r\n"...)
	for k, vs := range r.header {
		for _, v := range vs {
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	if r.body != nil || r.method == http.MethodPost {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, int64(len(r.body)), 10)
		b = append(b, "\r\n"...)
	}
	b = append(b, "\r\n"...)
	b = append(b, r.body...)
	c.buf = b
	if _, err := c.nc.Write(b); err != nil {
		return 0, nil, err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return 0, nil, err
	}
	if keep {
		body, err = io.ReadAll(resp.Body)
	} else {
		_, err = io.Copy(io.Discard, resp.Body)
	}
	resp.Body.Close()
	if err != nil {
		return 0, nil, err
	}
	if resp.Close {
		c.nc.Close()
		c.nc = nil
	}
	return resp.StatusCode, body, nil
}
