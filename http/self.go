package http

import (
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/authd/authd/commands"
	"github.com/authd/authd/internal/ratelimit"
)

// selfRoutes serves account self-service (API.md: PATCH /me, POST
// /me/password, POST /me/email, POST /me/email/verify, DELETE /me). A
// password or email change and a deletion need a fresh authentication,
// checked before the body is read. The
// per-IP limits bound the mail an email change sends and the code guesses
// a stolen token can make from one address.
func (a *Accounts) selfRoutes(r fiber.Router) {
	limitEmail := ratelimit.Limit{Requests: 5, Window: time.Minute}
	limitCode := ratelimit.Limit{Requests: 10, Window: time.Minute}
	r.Patch("/me", a.authenticate, a.updateProfile)
	r.Post("/me/password", a.authenticate, a.fresh, a.changePassword)
	r.Post("/me/email", a.authenticate, a.fresh, a.limit("email_change", limitEmail), a.requestEmailChange)
	r.Post("/me/email/verify", a.authenticate, a.limit("email_change_verify", limitCode), a.verifyEmailChange)
	r.Delete("/me", a.authenticate, a.fresh, a.deleteAccount)
}

// deleteAccount is DELETE /me: the account is erased (commands.DeleteAccount)
// and its tokens, this one included, are refused from now on.
func (a *Accounts) deleteAccount(c *fiber.Ctx) error {
	if err := a.App.DeleteAccount(c.UserContext(), claimsOf(c), a.request(c)); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

// updateProfile is PATCH /me; an empty body changes nothing and answers the
// user as it is.
func (a *Accounts) updateProfile(c *fiber.Ctx) error {
	var in struct {
		Name   *string `json:"name"`
		Locale *string `json:"locale"`
	}
	if len(c.Body()) > 0 {
		if err := bind(c, &in); err != nil {
			return err
		}
	}
	caller := claimsOf(c)
	if err := a.App.UpdateProfile(c.UserContext(), caller, commands.ProfileInput{Name: in.Name, Locale: in.Locale}, a.request(c)); err != nil {
		return err
	}
	return a.me(c)
}

func (a *Accounts) changePassword(c *fiber.Ctx) error {
	var in struct {
		NewPassword string `json:"new_password"`
	}
	if err := bind(c, &in); err != nil {
		return err
	}
	n, err := a.App.ChangePassword(c.UserContext(), claimsOf(c), in.NewPassword, a.request(c))
	if err != nil {
		return err
	}
	return c.JSON(fiber.Map{"status": "password_changed", "revoked_sessions": n})
}

func (a *Accounts) requestEmailChange(c *fiber.Ctx) error {
	var in struct {
		NewEmail string `json:"new_email"`
	}
	if err := bind(c, &in); err != nil {
		return err
	}
	if err := a.App.RequestEmailChange(c.UserContext(), claimsOf(c), in.NewEmail, a.request(c)); err != nil {
		return err
	}
	return c.Status(fiber.StatusAccepted).JSON(fiber.Map{"status": "verification_sent"})
}

func (a *Accounts) verifyEmailChange(c *fiber.Ctx) error {
	var in struct {
		Code string `json:"code"`
	}
	if err := bind(c, &in); err != nil {
		return err
	}
	if err := a.App.VerifyEmailChange(c.UserContext(), claimsOf(c), in.Code, a.request(c)); err != nil {
		return err
	}
	return a.me(c)
}
