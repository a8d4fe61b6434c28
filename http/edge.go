package http

import (
	"bytes"
	"io"
	"iter"
	"mime"
	"net/netip"
	"slices"
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"
)

// drainLimit is how much of a body authd reads at most. A body over
// BodyLimit is read (and dropped) up to here before the 413 is sent: a client
// still sending when the server stops reading sees its connection reset
// rather than the answer. Past it the connection is closed.
const drainLimit = 8 << 20

// apiPrefix is where the API's routes are, whose answers are never cached.
const apiPrefix = "/api/v1/auth"

// Preflights may ask for these, and nothing else.
const (
	corsMethods = "GET, POST, PATCH, DELETE"
	corsHeaders = "Authorization, Content-Type"
	// corsExpose lets a page read the headers a client needs to act on.
	corsExpose = "Retry-After, X-Request-ID"
	// corsMaxAge is how long (seconds) a browser may keep a preflight's
	// answer: its own cap is 2 hours (Chrome) or 24 hours (Firefox).
	corsMaxAge = "600"
)

// edge checks what every request must satisfy before any route sees it:
// one way to frame the body, no content coding, a body that fits, and JSON.
// Nothing here decodes a body: a few hundred compressed bytes can stand
// for gigabytes.
type edge struct {
	origins  map[string]bool // may call the API from a browser
	refusals *refusals
}

func newEdge(origins []string, refusals *refusals) *edge {
	e := &edge{origins: make(map[string]bool, len(origins)), refusals: refusals}
	for _, o := range origins {
		e.origins[o] = true
	}
	return e
}

var (
	errBadFraming = &Error{Status: fiber.StatusBadRequest, Code: "validation_failed",
		Message: "the request's length is ambiguous: send either one Content-Length or Transfer-Encoding: chunked", refusal: "bad_framing"}
	errBrokenBody = &Error{Status: fiber.StatusBadRequest, Code: "validation_failed",
		Message: "the request body could not be read", refusal: "bad_framing"}
	errContentEncoding = &Error{Status: fiber.StatusUnsupportedMediaType, Code: "unsupported_media_type",
		Message: "compressed request bodies are not accepted; send the body without Content-Encoding", refusal: "content_encoding"}
	errContentType = &Error{Status: fiber.StatusUnsupportedMediaType, Code: "unsupported_media_type",
		Message: "the request body must be JSON: Content-Type: application/json", refusal: "unsupported_media_type"}
	errTooLarge = &Error{Status: fiber.StatusRequestEntityTooLarge, Code: "payload_too_large",
		Message: "request body is too large", refusal: "payload_too_large"}
)

// middleware refuses a request that breaks an edge rule of API.md, and
// otherwise leaves its body, read in full, where the routes find it.
func (e *edge) middleware(c *fiber.Ctx) error {
	req := c.Request()
	if ambiguousFraming(req.Header.RawHeaders()) {
		// Where this request ends is anyone's guess, so whatever follows on
		// the connection cannot be trusted to be the next request.
		c.Set(fiber.HeaderConnection, "close")
		return errBadFraming
	}
	securityHeaders(c)
	e.cors(c)
	if !identityOnly(req.Header.RawHeaders()) {
		discardBody(c, 0)
		return errContentEncoding
	}
	// fiber decodes any coding the header names when a route asks for the
	// body; with none named, the routes see exactly the bytes read here.
	req.Header.Del(fiber.HeaderContentEncoding)
	body, err := readBody(req)
	switch {
	case err == errTooLarge:
		discardBody(c, len(body))
		return errTooLarge
	case err != nil:
		c.Set(fiber.HeaderConnection, "close")
		return errBrokenBody
	}
	req.SetBodyRaw(body)
	if c.Method() == fiber.MethodOptions && c.Get(fiber.HeaderAccessControlRequestMethod) != "" {
		return c.SendStatus(fiber.StatusNoContent) // a preflight: e.cors said all there is to say
	}
	if len(body) > 0 && !isJSON(req.Header.ContentType()) {
		return errContentType
	}
	return c.Next()
}

// ambiguousFraming reports whether raw request headers give the body's end
// in more than one way, or in a way other than these two: one
// Content-Length (repeats of the same value allowed), or one
// Transfer-Encoding: chunked. A proxy in front may pick the other reading, and
// the rest of the body would then be taken for a request of its own.
func ambiguousFraming(raw []byte) bool {
	var length []byte
	lengths, chunked := 0, 0
	for key, value := range headerLines(raw) {
		switch {
		case bytes.EqualFold(key, []byte(fiber.HeaderContentLength)):
			if lengths > 0 && !bytes.Equal(value, length) {
				return true
			}
			length = value
			lengths++
		case bytes.EqualFold(key, []byte(fiber.HeaderTransferEncoding)):
			if !bytes.EqualFold(value, []byte("chunked")) {
				return true
			}
			chunked++
		}
	}
	return chunked > 1 || chunked > 0 && lengths > 0
}

// identityOnly reports whether every Content-Encoding header, if any, names
// only identity.
func identityOnly(raw []byte) bool {
	for key, value := range headerLines(raw) {
		if !bytes.EqualFold(key, []byte(fiber.HeaderContentEncoding)) {
			continue
		}
		for _, coding := range bytes.Split(value, []byte(",")) {
			if c := bytes.TrimSpace(coding); len(c) > 0 && !bytes.EqualFold(c, []byte("identity")) {
				return false
			}
		}
	}
	return true
}

// headerLines yields raw request headers as received: every occurrence of a
// name, where parsed headers keep one.
func headerLines(raw []byte) iter.Seq2[[]byte, []byte] {
	return func(yield func(key, value []byte) bool) {
		for len(raw) > 0 {
			var line []byte
			line, raw, _ = bytes.Cut(raw, []byte("\n"))
			key, value, ok := bytes.Cut(bytes.TrimSuffix(line, []byte("\r")), []byte(":"))
			if ok && !yield(key, bytes.TrimSpace(value)) {
				return
			}
		}
	}
}

// readBody takes the body off the connection, keeping at most BodyLimit+1
// bytes: fasthttp streams it (Config.StreamRequestBody) instead of reading it
// all first. Over the limit it answers errTooLarge with what it read.
func readBody(req *fasthttp.Request) ([]byte, error) {
	stream := req.BodyStream()
	if stream == nil {
		return req.Body(), nil
	}
	n := req.Header.ContentLength()
	if n > BodyLimit {
		return nil, errTooLarge
	}
	if n >= 0 {
		body := make([]byte, n)
		if _, err := io.ReadFull(stream, body); err != nil {
			return nil, err
		}
		return body, nil
	}
	body, err := io.ReadAll(io.LimitReader(stream, BodyLimit+1))
	if err != nil {
		return nil, err
	}
	if len(body) > BodyLimit {
		return body, errTooLarge
	}
	return body, nil
}

// discardBody reads and drops the rest of a refused request's body, of which
// read bytes are read already, so that its client, still sending, reads the
// answer. Past drainLimit, or when the body cannot be read to its end, the
// connection is closed after the answer instead.
func discardBody(c *fiber.Ctx, read int) {
	req := c.Request()
	stream := req.BodyStream()
	if stream == nil {
		return
	}
	left := int64(drainLimit - read)
	n, err := io.Copy(io.Discard, io.LimitReader(stream, left))
	if err == nil && n == left {
		var probe [1]byte
		_, err = stream.Read(probe[:])
		if err == io.EOF {
			err = nil
		} else if err == nil {
			err = errTooLarge
		}
	}
	if err != nil {
		c.Set(fiber.HeaderConnection, "close")
		return
	}
	req.SetBodyRaw(nil)
}

// isJSON accepts application/json with any parameters (charset=utf-8).
func isJSON(contentType []byte) bool {
	if string(contentType) == fiber.MIMEApplicationJSON {
		return true
	}
	t, _, err := mime.ParseMediaType(string(contentType))
	return err == nil && t == fiber.MIMEApplicationJSON
}

// securityHeaders: an API answer is about one user and never to be kept by
// a cache; no answer is to be sniffed into something it does not say it is.
func securityHeaders(c *fiber.Ctx) {
	c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	if p := c.Path(); p == apiPrefix || strings.HasPrefix(p, apiPrefix+"/") {
		c.Set(fiber.HeaderCacheControl, "no-store")
	}
}

// cors lets the configured origins' pages read authd's answers. Answers
// differ by Origin once any origin is allowed, so caches are told. An
// origin not allowed gets nothing: the browser then keeps the answer from
// the page, and refuses to send what a preflight did not allow.
func (e *edge) cors(c *fiber.Ctx) {
	if len(e.origins) == 0 {
		return
	}
	c.Vary(fiber.HeaderOrigin)
	origin := c.Get(fiber.HeaderOrigin)
	if !e.origins[origin] {
		return
	}
	c.Set(fiber.HeaderAccessControlAllowOrigin, origin)
	if c.Method() == fiber.MethodOptions {
		c.Set(fiber.HeaderAccessControlAllowMethods, corsMethods)
		c.Set(fiber.HeaderAccessControlAllowHeaders, corsHeaders)
		c.Set(fiber.HeaderAccessControlMaxAge, corsMaxAge)
		return
	}
	c.Set(fiber.HeaderAccessControlExposeHeaders, corsExpose)
}

// errors wraps the API's error handler with what every refusal gets, also
// those fasthttp answers before any middleware runs (a malformed request
// line or header): the security headers, a count and a log line.
func (e *edge) errors(next fiber.ErrorHandler, trusted []netip.Prefix) fiber.ErrorHandler {
	return func(c *fiber.Ctx, err error) error {
		securityHeaders(c)
		e.refusals.note(c, err, trusted)
		return next(c, err)
	}
}

// closeUnread wraps fasthttp's handler: a request whose body was not read to
// its end (one answered before the middleware ran) closes its connection,
// since the rest of its body would otherwise be read as the next request.
// The middleware replaces the stream of every body it read in full. A method
// fiber does not know is answered here, in the API's error shape: fiber
// answers it before any middleware, in plain text of its own.
func closeUnread(next fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		if !slices.Contains(fiber.DefaultMethods, string(ctx.Method())) {
			ctx.Response.Header.Set(fiber.HeaderXContentTypeOptions, "nosniff")
			ctx.Response.Header.Set(fiber.HeaderCacheControl, "no-store")
			ctx.SetContentType(fiber.MIMEApplicationJSON)
			ctx.SetStatusCode(fiber.StatusBadRequest)
			ctx.SetBodyString(`{"error":{"code":"validation_failed","message":"unsupported HTTP method"}}`)
			ctx.SetConnectionClose()
			return
		}
		next(ctx)
		if ctx.Request.IsBodyStream() {
			ctx.SetConnectionClose()
		}
	}
}
