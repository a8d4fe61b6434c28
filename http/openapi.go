package http

import (
	_ "embed"

	"github.com/gofiber/fiber/v2"
)

// openAPIDocument is the OpenAPI 3.1 description of the whole API of API.md.
// openapi_test.go keeps it in step with the routes.
//
//go:embed openapi.json
var openAPIDocument []byte

// OpenAPIPath is where the document is served.
const OpenAPIPath = "/api/v1/auth/openapi.json"

// serveOpenAPI registers GET OpenAPIPath, answering the embedded document.
func serveOpenAPI(r fiber.Router) {
	r.Get(OpenAPIPath, func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
		c.Set(fiber.HeaderCacheControl, "public, max-age=300")
		return c.Send(openAPIDocument)
	})
}
