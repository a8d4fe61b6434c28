package main

// The edge rules of API.md, over real connections: framing, content coding
// and type, body size, headers, CORS, and the count and log of refusals.

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/authd/authd/internal/testenv"
)

const (
	corsAllowed = "https://dash.example.com"
	corsOther   = "https://evil.example.net"
)

// edgeInstance starts a cluster with CORS for corsAllowed and the per-IP
// limits on, and returns an instance and its log.
func edgeInstance(t *testing.T) (*cluster, *instance, *logBuffer) {
	t.Helper()
	return edgeInstanceWith(t, nil)
}

// edgeInstanceWith is edgeInstance with limitsNow, when not nil, as the
// clock of its rate limits.
func edgeInstanceWith(t *testing.T, limitsNow func() time.Time) (*cluster, *instance, *logBuffer) {
	t.Helper()
	c := newCluster(t, map[string]string{"AUTHD_CORS_ORIGINS": corsAllowed + ", http://127.0.0.1:3000", "AUTHD_RATE_LIMIT": "on"})
	c.limitsNow = limitsNow
	logs := &logBuffer{}
	return c, c.startLogged(t, logs), logs
}

func (in *instance) addr() string { return strings.TrimPrefix(in.base, "http://") }

// exchange is what came back on one connection: the answers read, in order,
// and how the reading ended (io.EOF: the server closed the connection).
type exchange struct {
	answers []rawAnswer
	end     error
}

type rawAnswer struct {
	status int
	header http.Header
	raw    string
}

func (a rawAnswer) response() response {
	r := response{status: a.status, header: a.header, raw: a.raw}
	_ = json.Unmarshal([]byte(a.raw), &r.body)
	return r
}

// sendRaw writes payload on a new connection, as it is, while reading the
// answers until the server closes the connection, want answers are read, or
// nothing more comes for a long while.
func sendRaw(t *testing.T, addr string, payload []byte, want int) exchange {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	written := make(chan error, 1)
	go func() { _, err := conn.Write(payload); written <- err }()
	// Generous: the wait ends early whenever the server does its part.
	_ = conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	br := bufio.NewReader(conn)
	var ex exchange
	for len(ex.answers) < want+1 {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			ex.end = err
			break
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		ex.answers = append(ex.answers, rawAnswer{status: resp.StatusCode, header: resp.Header, raw: string(body)})
		if err != nil {
			ex.end = err
			break
		}
		if len(ex.answers) == want {
			// One more read says whether the server closed the connection
			// or answered more than was asked; an open, quiet connection is
			// told by a short wait.
			_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		}
	}
	conn.Close()
	<-written
	return ex
}

func closed(ex exchange) bool {
	return errors.Is(ex.end, io.EOF) || errors.Is(ex.end, io.ErrUnexpectedEOF)
}

func request(method, path string, headers ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: authd.test\r\nUser-Agent: authd-edge-test/1.0\r\n", method, path)
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

func gzipped(t *testing.T, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	w, _ := gzip.NewWriterLevel(&out, gzip.BestCompression)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// zeros is a reader of n zero bytes, so a bomb is built without holding it.
func gzippedZeros(t *testing.T, n int64) []byte {
	t.Helper()
	var out bytes.Buffer
	w, _ := gzip.NewWriterLevel(&out, gzip.BestCompression)
	if _, err := io.CopyN(w, zeroReader{}, n); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// refusalCount reads authd_http_refusals_total{group,reason} from /metrics.
func refusalCount(t *testing.T, in *instance, group, reason string) int {
	t.Helper()
	r := in.rawCall(t, "GET", "/metrics", nil, nil)
	re := regexp.MustCompile(`(?m)^authd_http_refusals_total\{group="` + regexp.QuoteMeta(group) + `",reason="` + regexp.QuoteMeta(reason) + `"\} (\d+)$`)
	m := re.FindStringSubmatch(r.raw)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// A compressed body is refused before anything decodes it: 987 bytes of
// gzip in gzip stood for 512 MiB, inflated (twice) before the size check.
func TestCompressedBodiesAreRefusedUndecoded(t *testing.T) {
	t.Parallel()
	c, in, logs := edgeInstance(t)
	pool := c.dbPool(t)
	// 32 MiB of zeros, gzipped twice: a few hundred bytes on the wire.
	bomb := gzipped(t, gzippedZeros(t, 32<<20))
	login := gzipped(t, jsonBody(t, map[string]any{"email": "nobody@example.com", "password": "correct horse battery staple"}))
	before := readDBState(t, pool)
	refusedBefore := refusalCount(t, in, "edge", "content_encoding")
	for _, p := range []probe{
		{name: "the bomb at /healthz", method: "POST", path: "/healthz", header: hdr("Content-Encoding", "gzip, gzip"), body: bomb},
		{name: "the bomb at /login", method: "POST", path: api + "/login", header: hdr("Content-Encoding", "gzip, gzip"), body: bomb},
		{name: "gzipped login", method: "POST", path: api + "/login", header: hdr("Content-Encoding", "gzip"), body: login},
		{name: "deflate", method: "POST", path: api + "/login", header: hdr("Content-Encoding", "deflate"), body: login},
		{name: "br", method: "POST", path: api + "/login", header: hdr("Content-Encoding", "br"), body: login},
		{name: "unknown coding", method: "POST", path: api + "/login", header: hdr("Content-Encoding", "x-nothing"), body: login},
		{name: "identity then gzip", method: "POST", path: api + "/login", header: hdr("Content-Encoding", "identity, gzip"), body: login},
		{name: "on a GET", method: "GET", path: "/healthz", header: hdr("Content-Encoding", "gzip"), body: bomb},
	} {
		r := in.rawCall(t, p.method, p.path, p.header, p.body)
		if problems := errorShapeProblems(r); len(problems) > 0 || r.status != 415 || r.errCode() != "unsupported_media_type" {
			t.Errorf("%s: %d %s, want 415 unsupported_media_type\n\t%s", p.name, r.status, clip(r.raw, 200), strings.Join(problems, "\n\t"))
		}
	}
	// Two Content-Encoding headers, the second naming gzip: fiber decodes
	// the last one it sees.
	ex := sendRaw(t, in.addr(), append([]byte(request("POST", api+"/login", "Content-Type: application/json",
		"Content-Encoding: identity", "Content-Encoding: gzip", "Content-Length: "+strconv.Itoa(len(login)))), login...), 1)
	if len(ex.answers) == 0 || ex.answers[0].status != 415 {
		t.Errorf("identity and gzip in two headers: %+v (%v), want 415", ex.answers, ex.end)
	}
	if after := readDBState(t, pool); after.events != before.events || after.loginFailures != before.loginFailures {
		t.Errorf("a refused compressed body changed state: events %d -> %d, failed logins %d -> %d", before.events, after.events, before.loginFailures, after.loginFailures)
	}
	// identity is no coding at all: the body is taken as it is.
	plain := jsonBody(t, map[string]any{"email": "nobody@example.com", "password": "correct horse battery staple"})
	if r := in.rawCall(t, "POST", api+"/login", hdr("Content-Encoding", "identity, identity"), plain); r.status != 401 || r.errCode() != "invalid_credentials" {
		t.Errorf("Content-Encoding: identity: %d %s, want the login answered (401 invalid_credentials)", r.status, clip(r.raw, 200))
	}
	if n := refusalCount(t, in, "edge", "content_encoding") - refusedBefore; n < 9 {
		t.Errorf("authd_http_refusals_total{group=edge,reason=content_encoding} grew by %d, want 9", n)
	}
	if !strings.Contains(logs.String(), `"reason":"content_encoding"`) {
		t.Error("no log line for the refused compressed bodies")
	}
}

// A body over 64 KiB is read up to 8 MiB and answered 413; the client still
// sending reads the answer instead of a reset, and the connection goes on.
func TestLargeBodiesAreAnswered413(t *testing.T) {
	t.Parallel()
	_, in, _ := edgeInstance(t)
	refusedBefore := refusalCount(t, in, "edge", "payload_too_large")
	next := request("GET", "/healthz", "Connection: close")
	for _, size := range []int{70 << 10, 2 << 20, 8<<20 - 1024} {
		body := bytes.Repeat([]byte("x"), size)
		for _, path := range []string{"/healthz", api + "/login", api + "/register"} {
			for _, chunked := range []bool{false, true} {
				name := fmt.Sprintf("%d bytes to %s (chunked %v)", size, path, chunked)
				var payload []byte
				if chunked {
					payload = []byte(request("POST", path, "Content-Type: application/json", "Transfer-Encoding: chunked"))
					for b := body; len(b) > 0; {
						n := min(len(b), 32<<10)
						payload = append(payload, fmt.Sprintf("%x\r\n", n)...)
						payload = append(append(payload, b[:n]...), "\r\n"...)
						b = b[n:]
					}
					payload = append(payload, "0\r\n\r\n"...)
				} else {
					payload = append([]byte(request("POST", path, "Content-Type: application/json", "Content-Length: "+strconv.Itoa(size))), body...)
				}
				ex := sendRaw(t, in.addr(), append(payload, next...), 2)
				if len(ex.answers) == 0 {
					t.Errorf("%s: no answer (%v), want 413", name, ex.end)
					continue
				}
				r := ex.answers[0].response()
				if problems := errorShapeProblems(r); len(problems) > 0 || r.status != 413 || r.errCode() != "payload_too_large" {
					t.Errorf("%s: %d %s, want 413 payload_too_large\n\t%s", name, r.status, clip(r.raw, 200), strings.Join(problems, "\n\t"))
				}
				if len(ex.answers) < 2 || ex.answers[1].status != 200 {
					t.Errorf("%s: the next request on the connection got %d answers (%v), want it answered 200", name, len(ex.answers), ex.end)
				}
			}
		}
	}
	// Past 8 MiB the answer may or may not be read, but authd stays up.
	sendRaw(t, in.addr(), append([]byte(request("POST", "/healthz", "Content-Type: application/json", "Content-Length: "+strconv.Itoa(9<<20))), bytes.Repeat([]byte("x"), 9<<20)...), 1)
	if r := in.rawCall(t, "GET", "/healthz", nil, nil); r.status != 200 {
		t.Errorf("after a 9 MiB body: /healthz = %d", r.status)
	}
	if n := refusalCount(t, in, "edge", "payload_too_large") - refusedBefore; n < 18 {
		t.Errorf("authd_http_refusals_total{group=edge,reason=payload_too_large} grew by %d, want at least 18", n)
	}
}

// A request whose length can be read two ways is refused and its connection
// closed: what a proxy in front took for its body would otherwise be served
// as a request of its own.
func TestAmbiguousFramingIsRefusedAndClosed(t *testing.T) {
	t.Parallel()
	_, in, logs := edgeInstance(t)
	smuggled := request("GET", api+"/openapi.json")
	for name, head := range map[string]string{
		"Content-Length and chunked": request("POST", "/healthz", "Content-Type: application/json",
			"Content-Length: "+strconv.Itoa(len("0\r\n\r\n")), "Transfer-Encoding: chunked"),
		"chunked and Content-Length": request("POST", "/healthz", "Content-Type: application/json",
			"Transfer-Encoding: chunked", "Content-Length: "+strconv.Itoa(len("0\r\n\r\n"))),
		"two Content-Lengths": request("POST", "/healthz", "Content-Type: application/json",
			"Content-Length: 5", "Content-Length: "+strconv.Itoa(len("0\r\n\r\n")+len(smuggled))),
		"chunked twice": request("POST", "/healthz", "Content-Type: application/json",
			"Transfer-Encoding: chunked", "Transfer-Encoding: chunked"),
		"a coding before chunked": request("POST", "/healthz", "Content-Type: application/json",
			"Transfer-Encoding: gzip, chunked"),
	} {
		ex := sendRaw(t, in.addr(), []byte(head+"0\r\n\r\n"+smuggled), 1)
		if len(ex.answers) == 0 {
			t.Errorf("%s: no answer (%v), want 400", name, ex.end)
			continue
		}
		r := ex.answers[0].response()
		if problems := errorShapeProblems(r); len(problems) > 0 || r.status != 400 {
			t.Errorf("%s: %d %s, want 400 in the error shape\n\t%s", name, r.status, clip(r.raw, 200), strings.Join(problems, "\n\t"))
		}
		if len(ex.answers) > 1 {
			t.Errorf("%s: the smuggled request was answered too: %d", name, ex.answers[1].status)
		}
		if !closed(ex) {
			t.Errorf("%s: the connection stayed open (%v), want it closed", name, ex.end)
		}
	}
	// The same length twice says one thing: served, and the connection goes on.
	body := `{}`
	ex := sendRaw(t, in.addr(), []byte(request("POST", api+"/logout", "Content-Type: application/json",
		"Content-Length: 2", "Content-Length: 2")+body+request("GET", "/healthz")), 2)
	if len(ex.answers) != 2 || ex.answers[0].status != 401 || ex.answers[1].status != 200 {
		t.Errorf("the same Content-Length twice: %+v (%v), want 401 then 200", ex.answers, ex.end)
	}
	if n := refusalCount(t, in, "edge", "bad_framing"); n < 5 {
		t.Errorf("authd_http_refusals_total{group=edge,reason=bad_framing} = %d, want at least 5", n)
	}
	if !strings.Contains(logs.String(), `"reason":"bad_framing"`) {
		t.Error("no log line for the refused framing")
	}
}

// Only JSON is read: a text/plain or form body is what a page on any site
// can make a browser send without a preflight.
func TestOnlyJSONBodiesAreRead(t *testing.T) {
	t.Parallel()
	c, in, _ := edgeInstance(t)
	pool := c.dbPool(t)
	const pw = "correct horse battery staple"
	creds := jsonBody(t, map[string]any{"email": "nobody@example.com", "password": pw})
	register := jsonBody(t, map[string]any{"email": "csrf@example.com", "password": pw})
	var probes []probe
	for _, ct := range []string{"", "text/plain", "text/plain; charset=utf-8", "application/x-www-form-urlencoded",
		"multipart/form-data; boundary=x", "application/jsonx", "text/json", "application/json-seq", "garbage;;"} {
		probes = append(probes,
			probe{name: "login as " + ct, method: "POST", path: api + "/login", header: hdr("Content-Type", ct), body: creds, wantCode: "unsupported_media_type"},
			probe{name: "register as " + ct, method: "POST", path: api + "/register", header: hdr("Content-Type", ct), body: register, wantCode: "unsupported_media_type"},
			probe{name: "otp/send as " + ct, method: "POST", path: api + "/otp/send", header: hdr("Content-Type", ct), body: jsonBody(t, map[string]any{"email": "csrf@example.com", "purpose": "login"}), wantCode: "unsupported_media_type"},
		)
	}
	mails := c.mailCount(t)
	runProbes(t, in, pool, probes)
	if n := c.mailCount(t); n != mails {
		t.Errorf("refused bodies sent %d mails", n-mails)
	}
	for _, ct := range []string{"application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8"} {
		if r := in.rawCall(t, "POST", api+"/login", hdr("Content-Type", ct), creds); r.status != 401 || r.errCode() != "invalid_credentials" {
			t.Errorf("Content-Type %q: %d %s, want the login answered (401 invalid_credentials)", ct, r.status, clip(r.raw, 200))
		}
	}
	// No body, no type needed.
	if r := in.rawCall(t, "GET", "/healthz", hdr("Content-Type", ""), nil); r.status != 200 {
		t.Errorf("GET /healthz without a body or Content-Type: %d", r.status)
	}
	if n := refusalCount(t, in, "edge", "unsupported_media_type"); n < len(probes) {
		t.Errorf("authd_http_refusals_total{group=edge,reason=unsupported_media_type} = %d, want at least %d", n, len(probes))
	}
}

// Every API answer is kept from caches and from sniffing, errors included;
// none shows the HTTP library's own error text; the configured origins, and
// only they, may read answers from a browser.
func TestEdgeHeadersAndCORS(t *testing.T) {
	t.Parallel()
	c, in, _ := edgeInstance(t)
	alice := c.signupVerified(t, in, "alice@example.com", "correct horse battery staple", nil)
	bearer := hdr("Authorization", "Bearer "+alice.str("access_token"))

	t.Run("no-store and nosniff", func(t *testing.T) {
		for _, r := range map[string]response{
			"GET /me":                     in.rawCall(t, "GET", api+"/me", bearer, nil),
			"GET /sessions":               in.rawCall(t, "GET", api+"/sessions", bearer, nil),
			"GET /me without token":       in.rawCall(t, "GET", api+"/me", nil, nil),
			"POST /login, bad JSON":       in.rawCall(t, "POST", api+"/login", nil, []byte("{")),
			"unknown path under the API":  in.rawCall(t, "GET", api+"/nope", nil, nil),
			"PUT /me (method not allowd)": in.rawCall(t, "PUT", api+"/me", bearer, nil),
			"text/plain body":             in.rawCall(t, "POST", api+"/login", hdr("Content-Type", "text/plain"), []byte("{}")),
		} {
			if r.header.Get("Cache-Control") != "no-store" || r.header.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("%d %s: Cache-Control %q, X-Content-Type-Options %q; want no-store and nosniff", r.status, clip(r.raw, 100), r.header.Get("Cache-Control"), r.header.Get("X-Content-Type-Options"))
			}
		}
	})

	t.Run("no library error text", func(t *testing.T) {
		for name, payload := range map[string]string{
			"bad chunk size":        request("POST", api+"/login", "Content-Type: application/json", "Transfer-Encoding: chunked") + "zz\r\n{}\r\n0\r\n\r\n",
			"empty chunk size":      request("POST", api+"/login", "Content-Type: application/json", "Transfer-Encoding: chunked") + "\r\n{}\r\n0\r\n\r\n",
			"bad Content-Length":    request("POST", api+"/login", "Content-Type: application/json", "Content-Length: 1x") + "{}",
			"header without colon":  request("GET", api+"/me", "this is no header"),
			"space before colon":    request("GET", api+"/me", "Authorization : Bearer x"),
			"negative length":       request("POST", api+"/login", "Content-Type: application/json", "Content-Length: -5") + "{}",
			"bad request line":      "GET /healthz HTTP/1.1 extra\r\nHost: x\r\n\r\n",
			"control char in value": request("GET", api+"/me", "X-Test: a\x00b"),
		} {
			ex := sendRaw(t, in.addr(), []byte(payload), 1)
			if len(ex.answers) == 0 {
				continue // closed without an answer shows nothing either
			}
			a := ex.answers[0]
			for _, leak := range []string{"hex", "error when", "cannot", "unexpected", "invalid header", "body size", "fasthttp", "bufio"} {
				if strings.Contains(a.raw, leak) {
					t.Errorf("%s: %d %s shows %q", name, a.status, clip(a.raw, 300), leak)
				}
			}
			if a.status >= 400 {
				if problems := errorShapeProblems(a.response()); len(problems) > 0 {
					t.Errorf("%s: %d %s\n\t%s", name, a.status, clip(a.raw, 300), strings.Join(problems, "\n\t"))
				}
			}
		}
	})

	t.Run("CORS", func(t *testing.T) {
		r := in.rawCall(t, "GET", api+"/me", hdr("Authorization", "Bearer "+alice.str("access_token"), "Origin", corsAllowed), nil)
		if r.status != 200 || r.header.Get("Access-Control-Allow-Origin") != corsAllowed {
			t.Errorf("GET /me from %s: %d, Access-Control-Allow-Origin %q, want 200 and the origin", corsAllowed, r.status, r.header.Get("Access-Control-Allow-Origin"))
		}
		if !strings.Contains(strings.Join(r.header.Values("Vary"), ","), "Origin") || r.header.Get("Access-Control-Allow-Credentials") != "" {
			t.Errorf("GET /me from %s: Vary %q, Access-Control-Allow-Credentials %q; want Origin in Vary, no credentials", corsAllowed, r.header.Values("Vary"), r.header.Get("Access-Control-Allow-Credentials"))
		}
		if r := in.rawCall(t, "POST", api+"/login", hdr("Origin", corsAllowed), []byte("{")); r.header.Get("Access-Control-Allow-Origin") != corsAllowed {
			t.Errorf("an error to %s: Access-Control-Allow-Origin %q, want the origin, so that the page can read it", corsAllowed, r.header.Get("Access-Control-Allow-Origin"))
		}
		if r := in.rawCall(t, "GET", api+"/me", hdr("Authorization", "Bearer "+alice.str("access_token"), "Origin", corsOther), nil); len(corsHeaders(r.header)) > 0 {
			t.Errorf("GET /me from %s: %v, want no Access-Control-* header", corsOther, corsHeaders(r.header))
		}

		pre := in.rawCall(t, "OPTIONS", api+"/login", hdr("Origin", corsAllowed, "Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "content-type", "Content-Type", ""), nil)
		if pre.status != 204 || pre.header.Get("Access-Control-Allow-Origin") != corsAllowed ||
			pre.header.Get("Access-Control-Allow-Methods") != "GET, POST, PATCH, DELETE" ||
			pre.header.Get("Access-Control-Allow-Headers") != "Authorization, Content-Type" ||
			pre.header.Get("Access-Control-Allow-Credentials") != "" {
			t.Errorf("preflight from %s: %d %v, want 204 allowing the origin, GET, POST, PATCH, DELETE and Authorization, Content-Type", corsAllowed, pre.status, corsHeaders(pre.header))
		}
		for _, origin := range []string{corsOther, "null", "https://dash.example.com.evil.net", "http://dash.example.com"} {
			pre := in.rawCall(t, "OPTIONS", api+"/me", hdr("Origin", origin, "Access-Control-Request-Method", "GET", "Access-Control-Request-Headers", "authorization", "Content-Type", ""), nil)
			if pre.status != 204 || len(corsHeaders(pre.header)) > 0 {
				t.Errorf("preflight from %s: %d %v, want 204 without Access-Control-Allow-*", origin, pre.status, corsHeaders(pre.header))
			}
		}

		// Without AUTHD_CORS_ORIGINS, no CORS header at all.
		env := map[string]string{}
		for k, v := range c.env {
			env[k] = v
		}
		delete(env, "AUTHD_CORS_ORIGINS")
		port := testenv.FreePort(t)
		env["AUTHD_ADDR"] = fmt.Sprintf("127.0.0.1:%d", port)
		plain := runAuthd(t, env, fmt.Sprintf("http://127.0.0.1:%d", port), io.Discard)
		for _, origin := range []string{corsAllowed, corsOther} {
			r := plain.rawCall(t, "GET", api+"/me", hdr("Authorization", "Bearer "+alice.str("access_token"), "Origin", origin), nil)
			pre := plain.rawCall(t, "OPTIONS", api+"/me", hdr("Origin", origin, "Access-Control-Request-Method", "GET", "Content-Type", ""), nil)
			if len(corsHeaders(r.header)) > 0 || pre.status != 204 || len(corsHeaders(pre.header)) > 0 {
				t.Errorf("no CORS configured, from %s: GET %d %v, preflight %d %v; want no Access-Control-* and a 204 preflight", origin, r.status, corsHeaders(r.header), pre.status, corsHeaders(pre.header))
			}
		}
	})
}

func corsHeaders(h http.Header) []string {
	var out []string
	for k, v := range h {
		if strings.HasPrefix(k, "Access-Control-") {
			out = append(out, k+": "+strings.Join(v, ","))
		}
	}
	return out
}

// Refusals by the per-IP limits are counted by route and logged, at most one
// line a second for each kind, with how many were left out; no line holds a
// body.
func TestRefusalsAreCountedAndLogged(t *testing.T) {
	t.Parallel()
	_, in, logs := edgeInstanceWith(t, stillInOneWindow())
	const secret = "refusal-secret-code-000111"
	body := jsonBody(t, map[string]any{"email": "nobody@example.com", "code": secret})
	start := time.Now()
	limited := 0
	for range 40 {
		if r := in.rawCall(t, "POST", api+"/register/verify", nil, body); r.status == 429 {
			limited++
		}
	}
	elapsed := time.Since(start)
	if limited < 30 {
		t.Fatalf("%d of 40 verifications were refused 429, want at least 30 past the limit of 10 a minute", limited)
	}
	if n := refusalCount(t, in, "register/verify", "rate_limited"); n != limited {
		t.Errorf("authd_http_refusals_total{group=register/verify,reason=rate_limited} = %d, want %d", n, limited)
	}
	var lines, covered int
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, secret) {
			t.Errorf("a log line holds the request's code: %s", l)
		}
		if !strings.Contains(l, `"msg":"request refused"`) || !strings.Contains(l, `"reason":"rate_limited"`) {
			continue
		}
		var entry struct {
			Group      string `json:"group"`
			Suppressed int    `json:"suppressed"`
		}
		if err := json.Unmarshal([]byte(l), &entry); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if entry.Group == "register/verify" {
			lines++
			covered += 1 + entry.Suppressed
		}
	}
	// One line a second at most: the requests took elapsed, so no more than
	// this many lines, however slow the machine.
	if most := int(elapsed/time.Second) + 1; lines < 1 || lines > most {
		t.Errorf("%d log lines for %d refusals in %v, want between 1 and %d", lines, limited, elapsed, most)
	}
	if covered > limited {
		t.Errorf("the log lines account for %d refusals, more than the %d made", covered, limited)
	}
}

// A method fiber does not know gets the API's error shape, never fiber's own
// plain text, and the connection closes: its body, if any, is never read.
func TestUnknownMethodsGetTheErrorShape(t *testing.T) {
	t.Parallel()
	_, in, _ := edgeInstance(t)
	ex := sendRaw(t, in.addr(), []byte(request("FOO", "/healthz", "Content-Type: application/json", "Content-Length: 2")+"{}"+request("GET", "/healthz")), 1)
	if len(ex.answers) == 0 {
		t.Fatalf("no answer (%v), want 400", ex.end)
	}
	r := ex.answers[0].response()
	if problems := errorShapeProblems(r); len(problems) > 0 || r.status != 400 {
		t.Errorf("%d %s, want 400 in the error shape\n\t%s", r.status, clip(r.raw, 200), strings.Join(problems, "\n\t"))
	}
	if len(ex.answers) > 1 {
		t.Errorf("the request after it was answered too: %d", ex.answers[1].status)
	}
	if !closed(ex) {
		t.Errorf("the connection stayed open (%v), want it closed", ex.end)
	}
}
