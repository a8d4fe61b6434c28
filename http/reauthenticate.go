package http

import (
	"encoding/json"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/authd/authd/commands"
	"github.com/authd/authd/internal/ratelimit"
)

// reauthRoutes serves fresh authentication (API.md: POST /reauthenticate):
// the caller proves again who they are and gets a fresh pair for the same
// session. The per-IP limit keeps one address from spraying passwords over
// many stolen tokens; the account's own slow-down is the commands'.
func (a *Accounts) reauthRoutes(r fiber.Router) {
	limitReauth := ratelimit.Limit{Requests: 10, Window: time.Minute}
	limitCodeSend := ratelimit.Limit{Requests: 5, Window: time.Minute}
	r.Post("/reauthenticate", a.authenticate, a.limit("reauthenticate", limitReauth), a.reauthenticate)
	r.Post("/reauthenticate/code", a.authenticate, a.limit("reauthenticate_code", limitCodeSend), a.sendReauthCode)
}

func (a *Accounts) sendReauthCode(c *fiber.Ctx) error {
	if err := a.App.SendReauthCode(c.UserContext(), claimsOf(c), a.request(c)); err != nil {
		return err
	}
	return c.Status(fiber.StatusAccepted).JSON(fiber.Map{"status": "sent"})
}

func (a *Accounts) reauthenticate(c *fiber.Ctx) error {
	var in struct {
		Password   string          `json:"password"`
		Code       string          `json:"code"`
		EmailCode  string          `json:"email_code"`
		Credential json.RawMessage `json:"credential"`
	}
	if err := bind(c, &in); err != nil {
		return err
	}
	if string(in.Credential) == "null" {
		in.Credential = nil
	}
	t, err := a.App.Reauthenticate(c.UserContext(), claimsOf(c),
		commands.ReauthInput{Password: in.Password, Code: in.Code, EmailCode: in.EmailCode, Credential: in.Credential}, a.request(c))
	if err != nil {
		return err
	}
	return a.tokens(c, fiber.StatusOK, t)
}
