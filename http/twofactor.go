package http

import (
	"context"
	"errors"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/authd/authd/internal/ratelimit"
	"github.com/authd/authd/projections"
)

// twoFactorRoutes serves TOTP enrolment, backup codes and the login
// challenge's answer (API.md: /2fa/...).
func (a *Accounts) twoFactorRoutes(r fiber.Router) {
	// Each answer also counts against its challenge's tries and the user's
	// second-factor throttle; this keeps one address from spraying tokens.
	limitVerify := ratelimit.Limit{Requests: 20, Window: time.Minute}
	r.Get("/2fa/status", a.authenticate, a.twoFactorStatus)
	r.Post("/2fa/setup", a.authenticate, a.fresh, a.twoFactorSetup)
	r.Post("/2fa/enable", a.authenticate, a.twoFactorEnable)
	r.Post("/2fa/disable", a.authenticate, a.fresh, a.twoFactorDisable)
	r.Post("/2fa/verify", a.limit("2fa_verify", limitVerify), a.twoFactorVerify)
	r.Post("/2fa/backup-codes/regenerate", a.authenticate, a.fresh, a.regenerateBackupCodes)
}

type codeBody struct {
	Code string `json:"code"`
}

func (a *Accounts) twoFactorStatus(c *fiber.Ctx) error {
	user := claimsOf(c).UserID
	s, err := projections.GetTwoFactorStatus(c.UserContext(), a.Reads, user)
	if errors.Is(err, projections.ErrBehind) {
		// A change just answered (an enable, a used backup code) is in the
		// log only: show the log's.
		s, err = a.twoFactorFromLog(c.UserContext(), user)
	}
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(s)
}

func (a *Accounts) twoFactorSetup(c *fiber.Ctx) error {
	s, err := a.App.SetupTwoFactor(c.UserContext(), claimsOf(c), a.request(c))
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(fiber.Map{"secret": s.Secret, "provisioning_uri": s.ProvisioningURI, "qr_code": s.QRCode})
}

func (a *Accounts) twoFactorEnable(c *fiber.Ctx) error {
	var in codeBody
	if err := bind(c, &in); err != nil {
		return err
	}
	codes, err := a.App.EnableTwoFactor(c.UserContext(), claimsOf(c), in.Code, a.request(c))
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(fiber.Map{"backup_codes": codes})
}

func (a *Accounts) twoFactorDisable(c *fiber.Ctx) error {
	var in codeBody
	if err := bind(c, &in); err != nil {
		return err
	}
	if err := a.App.DisableTwoFactor(c.UserContext(), claimsOf(c), in.Code, a.request(c)); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (a *Accounts) twoFactorVerify(c *fiber.Ctx) error {
	var in struct {
		ChallengeToken string `json:"challenge_token"`
		Code           string `json:"code"`
	}
	if err := bind(c, &in); err != nil {
		return err
	}
	t, err := a.App.VerifyChallenge(c.UserContext(), in.ChallengeToken, in.Code, a.request(c))
	if err != nil {
		return err
	}
	return a.tokens(c, fiber.StatusOK, t)
}

func (a *Accounts) regenerateBackupCodes(c *fiber.Ctx) error {
	codes, err := a.App.RegenerateBackupCodes(c.UserContext(), claimsOf(c), a.request(c))
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(fiber.Map{"backup_codes": codes})
}

// twoFactorFromLog is a user's two-factor status as their stream has it.
func (a *Accounts) twoFactorFromLog(ctx context.Context, user uuid.UUID) (projections.TwoFactorStatus, error) {
	_, tf, err := a.App.AccountFromLog(ctx, user)
	if err != nil || !tf.Enabled {
		return projections.TwoFactorStatus{}, err
	}
	at := tf.EnabledAt.UTC()
	return projections.TwoFactorStatus{Enabled: true, EnabledAt: &at, BackupCodesRemaining: len(tf.BackupCodes)}, nil
}
