package http

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/authd/authd/commands"
)

const errorSchemaRef = "#/components/schemas/Error"

var httpMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// testApp builds the real router with every route registered. The routes
// are only registered, never called, so zero-value Accounts suffice.
func testApp(t *testing.T) *fiber.App {
	t.Helper()
	return New(Deps{
		Log:      slog.New(slog.DiscardHandler),
		Registry: prometheus.NewRegistry(),
		Accounts: &Accounts{},
		JWKS:     func() []byte { return []byte(`{"keys":[]}`) },
	})
}

func loadDoc(t *testing.T) map[string]any {
	t.Helper()
	if !json.Valid(openAPIDocument) {
		t.Fatal("openapi.json is not valid JSON")
	}
	var doc map[string]any
	if err := json.Unmarshal(openAPIDocument, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	return doc
}

// operation is one documented method of one path.
type operation struct {
	path, method string
	op           map[string]any
}

func (o operation) key() string { return strings.ToUpper(o.method) + " " + o.path }

func operations(t *testing.T, doc map[string]any) []operation {
	t.Helper()
	paths, ok := doc["paths"].(map[string]any)
	if !ok || len(paths) == 0 {
		t.Fatal("openapi.json has no paths")
	}
	var ops []operation
	for path, item := range paths {
		item, ok := item.(map[string]any)
		if !ok {
			t.Fatalf("path %s is not an object", path)
		}
		for _, m := range httpMethods {
			if op, ok := item[m].(map[string]any); ok {
				ops = append(ops, operation{path: path, method: m, op: op})
			}
		}
	}
	sort.Slice(ops, func(i, j int) bool { return ops[i].key() < ops[j].key() })
	return ops
}

// resolve follows a local JSON pointer ("#/a/b") in doc.
func resolve(doc map[string]any, ref string) (any, error) {
	pointer, ok := strings.CutPrefix(ref, "#")
	if !ok {
		return nil, errors.New("not a local reference")
	}
	var cur any = doc
	for _, tok := range strings.Split(strings.TrimPrefix(pointer, "/"), "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch node := cur.(type) {
		case map[string]any:
			next, ok := node[tok]
			if !ok {
				return nil, errors.New("no " + tok)
			}
			cur = next
		default:
			return nil, errors.New("cannot descend into " + tok)
		}
	}
	return cur, nil
}

// deref resolves v when it is a {"$ref": ...} object.
func deref(t *testing.T, doc map[string]any, v any) map[string]any {
	t.Helper()
	m, _ := v.(map[string]any)
	for range 10 {
		ref, ok := m["$ref"].(string)
		if !ok {
			return m
		}
		target, err := resolve(doc, ref)
		if err != nil {
			t.Fatalf("$ref %s: %v", ref, err)
		}
		m, _ = target.(map[string]any)
	}
	t.Fatal("$ref chain too long")
	return nil
}

// refersToError says whether a schema is the Error schema, or composes it
// with allOf (as /readyz's NotReady does).
func refersToError(doc map[string]any, schema map[string]any, depth int) bool {
	if depth > 5 || schema == nil {
		return false
	}
	if ref, ok := schema["$ref"].(string); ok {
		if ref == errorSchemaRef {
			return true
		}
		target, err := resolve(doc, ref)
		if err != nil {
			return false
		}
		next, _ := target.(map[string]any)
		return refersToError(doc, next, depth+1)
	}
	all, _ := schema["allOf"].([]any)
	for _, s := range all {
		if s, ok := s.(map[string]any); ok && refersToError(doc, s, depth+1) {
			return true
		}
	}
	return false
}

func TestOpenAPIDocumentIsWellFormed(t *testing.T) {
	doc := loadDoc(t)

	if v, _ := doc["openapi"].(string); !regexp.MustCompile(`^3\.1\.\d+$`).MatchString(v) {
		t.Errorf("openapi is %q, want 3.1.x", v)
	}
	info, _ := doc["info"].(map[string]any)
	if info["title"] == nil || info["version"] == nil {
		t.Error("info needs a title and a version")
	}
	if servers, _ := doc["servers"].([]any); len(servers) != 1 || deref(t, doc, servers[0])["url"] != "/" {
		t.Errorf(`servers = %v, want [{"url": "/"}]`, doc["servers"])
	}

	// Every $ref resolves.
	var walk func(at string, v any)
	walk = func(at string, v any) {
		switch node := v.(type) {
		case map[string]any:
			if ref, ok := node["$ref"].(string); ok {
				if _, err := resolve(doc, ref); err != nil {
					t.Errorf("%s: $ref %q does not resolve: %v", at, ref, err)
				}
			}
			for k, child := range node {
				walk(at+"/"+k, child)
			}
		case []any:
			for _, child := range node {
				walk(at+"[]", child)
			}
		}
	}
	walk("#", doc)

	schemes, _ := deref(t, doc, doc["components"])["securitySchemes"].(map[string]any)
	params := regexp.MustCompile(`\{([^}]+)\}`)
	ids := map[string]string{}
	for _, o := range operations(t, doc) {
		id, _ := o.op["operationId"].(string)
		if id == "" {
			t.Errorf("%s has no operationId", o.key())
		} else if other, dup := ids[id]; dup {
			t.Errorf("operationId %q is used by %s and %s", id, other, o.key())
		} else {
			ids[id] = o.key()
		}

		// Every security requirement names a declared scheme.
		sec, _ := o.op["security"].([]any)
		for _, req := range sec {
			for name := range deref(t, doc, req) {
				if _, ok := schemes[name]; !ok {
					t.Errorf("%s: security scheme %q is not declared", o.key(), name)
				}
			}
		}

		// Every {param} of the path is a declared path parameter.
		declared := map[string]bool{}
		opParams, _ := o.op["parameters"].([]any)
		for _, p := range opParams {
			p := deref(t, doc, p)
			if p["in"] == "path" {
				declared[p["name"].(string)] = true
			}
		}
		for _, m := range params.FindAllStringSubmatch(o.path, -1) {
			if !declared[m[1]] {
				t.Errorf("%s: path parameter %q is not declared", o.key(), m[1])
			}
		}

		responses, _ := o.op["responses"].(map[string]any)
		if len(responses) == 0 {
			t.Errorf("%s has no responses", o.key())
		}
		success := false
		for status, r := range responses {
			r := deref(t, doc, r)
			if d, _ := r["description"].(string); d == "" {
				t.Errorf("%s %s: no description", o.key(), status)
			}
			if strings.HasPrefix(status, "2") {
				success = true
				continue
			}
			content, _ := r["content"].(map[string]any)
			media := deref(t, doc, content["application/json"])
			schema, _ := media["schema"].(map[string]any)
			if !refersToError(doc, schema, 0) {
				t.Errorf("%s %s: an error answer must use %s", o.key(), status, errorSchemaRef)
			}
		}
		if !success {
			t.Errorf("%s documents no 2xx answer", o.key())
		}
	}
}

// TestOpenAPIIsValid31 validates the document against OpenAPI 3.1 with
// kin-openapi (JSON Schema 2020-12 for the schemas).
func TestOpenAPIIsValid31(t *testing.T) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(openAPIDocument)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if !doc.IsOpenAPI31OrLater() || doc.IsOpenAPI32OrLater() {
		t.Fatalf("openapi is %s, want 3.1", doc.OpenAPI)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("not a valid OpenAPI 3.1 document: %v", err)
	}
}

// TestOpenAPIMatchesRoutes keeps the document and the router in step: every
// route is documented and every documented operation is served.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	doc := loadDoc(t)
	param := regexp.MustCompile(`:([A-Za-z0-9_]+)\??`)
	routed := map[string]bool{}
	for _, r := range testApp(t).GetRoutes(true) {
		if r.Method == fiber.MethodHead { // fiber adds a HEAD to every GET
			continue
		}
		path := param.ReplaceAllString(r.Path, "{$1}")
		if len(path) > 1 {
			path = strings.TrimSuffix(path, "/")
		}
		routed[r.Method+" "+path] = true
	}
	if len(routed) < 10 {
		t.Fatalf("only %d routes registered: %v", len(routed), routed)
	}

	documented := map[string]bool{}
	for _, o := range operations(t, doc) {
		documented[o.key()] = true
		if !routed[o.key()] {
			t.Errorf("%s is documented but has no route", o.key())
		}
	}
	var missing []string
	for k := range routed {
		if !documented[k] {
			missing = append(missing, k)
		}
	}
	slices.Sort(missing)
	for _, k := range missing {
		t.Errorf("route %s is not in openapi.json", k)
	}
}

// TestOpenAPIErrorCodes checks that every code the error handler can answer
// is in the document's ErrorCode enum.
func TestOpenAPIErrorCodes(t *testing.T) {
	doc := loadDoc(t)
	codeSchema, err := resolve(doc, "#/components/schemas/ErrorCode")
	if err != nil {
		t.Fatal(err)
	}
	enum := map[string]bool{}
	for _, c := range codeSchema.(map[string]any)["enum"].([]any) {
		enum[c.(string)] = true
	}

	cases := []error{
		&commands.ValidationError{Field: "email", Message: "is required"},
		&commands.RetryLaterError{After: time.Second},
		errUnauthorized, errBadFraming, errBrokenBody, errContentEncoding, errContentType, errTooLarge,
		fiber.ErrBadRequest, fiber.ErrNotFound, fiber.ErrMethodNotAllowed, fiber.ErrRequestEntityTooLarge,
		fiber.ErrServiceUnavailable, fiber.ErrRequestHeaderFieldsTooLarge, fiber.ErrBadGateway,
		errors.New("a fault of ours"),
	}
	for _, a := range answers {
		cases = append(cases, a.err)
	}
	app := fiber.New(fiber.Config{ErrorHandler: errorHandler(slog.New(slog.DiscardHandler))})
	app.Get("/:i", func(c *fiber.Ctx) error {
		i, _ := c.ParamsInt("i")
		return cases[i]
	})
	for i, e := range cases {
		resp, err := app.Test(httptest.NewRequest(fiber.MethodGet, "/"+strconv.Itoa(i), nil))
		if err != nil {
			t.Fatal(err)
		}
		var body errorBody
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatalf("%v: the answer is not an Error: %v", e, err)
		}
		resp.Body.Close()
		if !enum[body.Error.Code] {
			t.Errorf("%v answers %d %q, which the ErrorCode enum of openapi.json lacks", e, resp.StatusCode, body.Error.Code)
		}
		if (resp.StatusCode == fiber.StatusTooManyRequests || resp.StatusCode == fiber.StatusServiceUnavailable) && resp.Header.Get(fiber.HeaderRetryAfter) == "" {
			t.Errorf("%v answers %d without Retry-After", e, resp.StatusCode)
		}
	}
}

// TestOpenAPIServed: GET /api/v1/auth/openapi.json answers the embedded
// document as it is.
func TestOpenAPIServed(t *testing.T) {
	resp, err := testApp(t).Test(httptest.NewRequest(fiber.MethodGet, OpenAPIPath, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != fiber.StatusOK {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	if ct := resp.Header.Get(fiber.HeaderContentType); !strings.HasPrefix(ct, fiber.MIMEApplicationJSON) {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, openAPIDocument) {
		t.Errorf("served %d bytes that differ from the embedded document (%d bytes)", len(got), len(openAPIDocument))
	}
	if !json.Valid(got) {
		t.Error("the served document is not JSON")
	}
}
