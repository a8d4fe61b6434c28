package http

import (
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/authd/authd/commands"
	"github.com/authd/authd/internal/ratelimit"
)

func (a *Accounts) googleRoutes(r fiber.Router) {
	r.Post("/google", a.googleEnabled, a.limit("google", ratelimit.Limit{Requests: 10, Window: time.Minute}), a.google)
}

// googleEnabled answers 404 when Google sign-in is not configured, before
// the body is read or the request counted.
func (a *Accounts) googleEnabled(c *fiber.Ctx) error {
	if !a.App.GoogleEnabled() {
		return commands.ErrNotFound
	}
	return c.Next()
}

func (a *Accounts) google(c *fiber.Ctx) error {
	var in struct {
		IDToken string `json:"id_token"`
	}
	if err := bind(c, &in); err != nil {
		return err
	}
	s, err := a.App.GoogleSignIn(c.UserContext(), in.IDToken, a.request(c))
	if err != nil {
		return err
	}
	return a.signedIn(c, fiber.StatusOK, s)
}
