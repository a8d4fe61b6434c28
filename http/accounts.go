package http

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/mileusna/useragent"

	"github.com/authd/authd/commands"
	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/ratelimit"
	"github.com/authd/authd/internal/revocation"
	"github.com/authd/authd/internal/tokens"
	"github.com/authd/authd/projections"
)

// Limiter is the shared per-key request counter (ratelimit.Limiter).
type Limiter interface {
	Allow(ctx context.Context, key string, lim ratelimit.Limit) (bool, time.Duration, error)
}

// Accounts serves the account and session endpoints of API.md.
type Accounts struct {
	App       *commands.App
	Keys      *tokens.Keyring
	Revoked   *revocation.Set
	Reads     projections.Querier
	Store     *eventstore.Store // opens the personal parts of the log's events a read shows
	Users     *projections.UserReader
	Limiter   Limiter
	RateLimit bool
	Now       func() time.Time
	Log       *slog.Logger

	trusted []netip.Prefix
	// devices holds the device names of recent User-Agents: parsing one costs
	// about 4 µs, on every refresh, and a client sends the same one each time.
	devices *lru.Cache[string, string]
}

func (a *Accounts) routes(r fiber.Router) {
	a.devices, _ = lru.New[string, string](4096) // fails only for a size under 1
	// Per-IP limits of the unauthenticated endpoints, each its own group.
	// Sending mail and creating accounts are the costliest to abuse.
	perMinute := func(n int) ratelimit.Limit { return ratelimit.Limit{Requests: n, Window: time.Minute} }
	limitRegister, limitCodeSend := perMinute(5), perMinute(5)
	limitLogin, limitCode := perMinute(10), perMinute(10)
	limitRefresh := perMinute(30) // tabs and devices behind one NAT refresh too
	r.Post("/register", a.limit("register", limitRegister), a.register)
	r.Post("/register/verify", a.limit("register_verify", limitCode), a.verify)
	r.Post("/login", a.limit("login", limitLogin), a.login)
	r.Post("/refresh", a.limit("refresh", limitRefresh), a.refresh)
	r.Post("/otp/send", a.limit("otp_send", limitCodeSend), a.sendCode)
	r.Post("/otp/login", a.limit("otp_login", limitCode), a.codeLogin)
	r.Post("/reset-password", a.limit("reset_password", limitCode), a.resetPassword)
	r.Post("/logout", a.authenticate, a.logout)
	r.Get("/me", a.authenticate, a.me)
	r.Get("/me/activity", a.authenticate, a.activity)
	r.Get("/sessions", a.authenticate, a.sessions)
	r.Delete("/sessions/:session_id", a.authenticate, a.revokeSession)
	r.Delete("/sessions", a.authenticate, a.fresh, a.revokeOtherSessions)
	a.twoFactorRoutes(r)
	a.passkeyRoutes(r)
	a.googleRoutes(r)
	a.reauthRoutes(r)
	a.selfRoutes(r)
}

// limit refuses a client past lim within the group, before the handler does
// any work (above all, any password hashing). A client is an IPv4 address or
// an IPv6 /64 (rateLimitKey).
func (a *Accounts) limit(group string, lim ratelimit.Limit) fiber.Handler {
	return func(c *fiber.Ctx) error {
		if !a.RateLimit {
			return c.Next()
		}
		ok, retry, err := a.Limiter.Allow(c.UserContext(), "ip:"+group+":"+rateLimitKey(clientIP(c, a.trusted)), lim)
		if err != nil {
			return err
		}
		if !ok {
			return &Error{Status: fiber.StatusTooManyRequests, Code: "rate_limited", Message: "too many requests; retry later", RetryAfter: seconds(retry)}
		}
		return c.Next()
	}
}

func seconds(d time.Duration) int {
	return max(1, int((d+time.Second-1)/time.Second))
}

const claimsKey = "authd.claims"

// authenticate admits a request with a valid, unrevoked access token.
func (a *Accounts) authenticate(c *fiber.Ctx) error {
	scheme, token, ok := strings.Cut(c.Get(fiber.HeaderAuthorization), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return errUnauthorized
	}
	claims, err := a.Keys.Verify(c.UserContext(), strings.TrimSpace(token))
	if err != nil || !a.Revoked.Allows(claims.SessionID, claims.UserID, claims.IssuedAt) {
		return errUnauthorized
	}
	c.Locals(claimsKey, claims)
	return c.Next()
}

// fresh admits an authenticated request to a sensitive change only when the
// caller proved who they are lately (commands.RequireFresh). It runs before
// the handler reads the body, so a stale token learns nothing from the
// answer to a bad one. Every "fresh" route of API.md has it after
// authenticate.
func (a *Accounts) fresh(c *fiber.Ctx) error {
	if err := a.App.RequireFresh(claimsOf(c)); err != nil {
		return err
	}
	return c.Next()
}

var errUnauthorized = &Error{Status: fiber.StatusUnauthorized, Code: "unauthorized", Message: "missing, invalid or revoked access token"}

func claimsOf(c *fiber.Ctx) tokens.Claims { return c.Locals(claimsKey).(tokens.Claims) }

func (a *Accounts) request(c *fiber.Ctx) commands.Request {
	uaString := c.Get(fiber.HeaderUserAgent)
	if len(uaString) > 512 {
		uaString = uaString[:512]
	}
	dev, ok := a.devices.Get(uaString)
	if !ok {
		dev = device(uaString)
		a.devices.Add(uaString, dev)
	}
	return commands.Request{IP: clientIP(c, a.trusted), UserAgent: uaString, Device: dev, RequestID: requestID(c)}
}

// device names a client the way a sessions list shows it: "Chrome on macOS".
func device(ua string) string {
	if ua == "" {
		return "Unknown device"
	}
	// A parser that keeps no tables: medama-io/go-useragent's trie was
	// 166,000 heap objects, most of what every garbage collection marked.
	p := useragent.Parse(ua)
	browser, os := p.Name, p.OS
	switch {
	case browser != "" && os != "":
		return browser + " on " + os
	case browser != "":
		return browser
	case os != "":
		return os
	}
	return "Unknown device"
}

// bind parses a JSON body into v: unknown fields are ignored; a malformed
// body, or a field of the wrong type, is a 400.
func bind(c *fiber.Ctx, v any) error {
	body := c.Body()
	if len(body) == 0 {
		return &Error{Status: fiber.StatusBadRequest, Code: "validation_failed", Message: "request body is required"}
	}
	if err := json.Unmarshal(body, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return &Error{Status: fiber.StatusBadRequest, Code: "validation_failed", Message: te.Field + " has the wrong type"}
		}
		return &Error{Status: fiber.StatusBadRequest, Code: "validation_failed", Message: "request body is not valid JSON"}
	}
	return nil
}

type tokensBody struct {
	AccessToken      string               `json:"access_token"`
	RefreshToken     string               `json:"refresh_token"`
	TokenType        string               `json:"token_type"`
	ExpiresIn        int                  `json:"expires_in"`
	RefreshExpiresIn int                  `json:"refresh_expires_in"`
	SessionID        uuid.UUID            `json:"session_id"`
	User             projections.UserView `json:"user"`
}

func (a *Accounts) tokens(c *fiber.Ctx, status int, t commands.Tokens) error {
	u, err := a.user(c.UserContext(), t.UserID)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Status(status).JSON(tokensBody{
		AccessToken: t.AccessToken, RefreshToken: t.RefreshToken, TokenType: "Bearer",
		ExpiresIn: int(t.ExpiresIn / time.Second), RefreshExpiresIn: int(t.RefreshTTL / time.Second),
		SessionID: t.SessionID, User: u,
	})
}

// signedIn answers a first-factor login: the tokens with the given status,
// or a 200 challenge when a second factor is needed.
func (a *Accounts) signedIn(c *fiber.Ctx, status int, s commands.SignIn) error {
	if ch := s.Challenge; ch != nil {
		c.Set(fiber.HeaderCacheControl, "no-store")
		return c.JSON(fiber.Map{
			"two_factor_required": true,
			"challenge_token":     ch.Token,
			"methods":             ch.Methods,
			"expires_in":          int(ch.ExpiresIn / time.Second),
		})
	}
	return a.tokens(c, status, *s.Tokens)
}

func (a *Accounts) register(c *fiber.Ctx) error {
	var in struct {
		Email      string `json:"email"`
		Password   string `json:"password"`
		Name       string `json:"name"`
		TenantName string `json:"tenant_name"`
	}
	if err := bind(c, &in); err != nil {
		return err
	}
	err := a.App.Register(c.UserContext(), commands.RegisterInput{Email: in.Email, Password: in.Password, Name: in.Name, TenantName: in.TenantName}, a.request(c))
	if err != nil {
		return err
	}
	return c.Status(fiber.StatusAccepted).JSON(fiber.Map{"status": "verification_sent"})
}

type emailCode struct {
	Email string `json:"email"`
	Code  string `json:"code"`
}

func (a *Accounts) verify(c *fiber.Ctx) error {
	var in emailCode
	if err := bind(c, &in); err != nil {
		return err
	}
	s, err := a.App.VerifyRegistration(c.UserContext(), in.Email, in.Code, a.request(c))
	if err != nil {
		return err
	}
	return a.signedIn(c, fiber.StatusCreated, s)
}

func (a *Accounts) login(c *fiber.Ctx) error {
	var in struct {
		Email    string `json:"email"`
		Password string `json:"password"`
	}
	if err := bind(c, &in); err != nil {
		return err
	}
	s, err := a.App.Login(c.UserContext(), in.Email, in.Password, a.request(c))
	if err != nil {
		return err
	}
	return a.signedIn(c, fiber.StatusOK, s)
}

func (a *Accounts) refresh(c *fiber.Ctx) error {
	var in struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := bind(c, &in); err != nil {
		return err
	}
	if in.RefreshToken == "" {
		return &Error{Status: fiber.StatusBadRequest, Code: "validation_failed", Message: "refresh_token is required"}
	}
	t, err := a.App.Refresh(c.UserContext(), in.RefreshToken, a.request(c))
	if err != nil {
		return err
	}
	return a.tokens(c, fiber.StatusOK, t)
}

func (a *Accounts) sendCode(c *fiber.Ctx) error {
	var in struct {
		Email   string `json:"email"`
		Purpose string `json:"purpose"`
	}
	if err := bind(c, &in); err != nil {
		return err
	}
	if err := a.App.SendCode(c.UserContext(), in.Email, in.Purpose, a.request(c)); err != nil {
		return err
	}
	return c.Status(fiber.StatusAccepted).JSON(fiber.Map{"status": "sent"})
}

func (a *Accounts) codeLogin(c *fiber.Ctx) error {
	var in emailCode
	if err := bind(c, &in); err != nil {
		return err
	}
	s, err := a.App.CodeLogin(c.UserContext(), in.Email, in.Code, a.request(c))
	if err != nil {
		return err
	}
	return a.signedIn(c, fiber.StatusOK, s)
}

func (a *Accounts) resetPassword(c *fiber.Ctx) error {
	var in struct {
		Email       string `json:"email"`
		Code        string `json:"code"`
		NewPassword string `json:"new_password"`
	}
	if err := bind(c, &in); err != nil {
		return err
	}
	if err := a.App.ResetPassword(c.UserContext(), in.Email, in.Code, in.NewPassword, a.request(c)); err != nil {
		return err
	}
	return c.JSON(fiber.Map{"status": "password_reset"})
}

func (a *Accounts) logout(c *fiber.Ctx) error {
	if err := a.App.Logout(c.UserContext(), claimsOf(c), a.request(c)); err != nil && !errors.Is(err, commands.ErrNotFound) {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (a *Accounts) me(c *fiber.Ctx) error {
	u, err := a.user(c.UserContext(), claimsOf(c).UserID)
	if errors.Is(err, commands.ErrNotFound) {
		return errUnauthorized // the account is gone from the log too
	}
	if err != nil {
		return err
	}
	return c.JSON(u)
}

// user reads an account from the users read model or, when that has not
// caught up with the account (the write's wait gave up, NATS is down), from
// the log: a read never shows less than a write already answered, such as
// a 401 for a session just started or an email not yet verified.
// commands.ErrNotFound when the log has no such account either.
func (a *Accounts) user(ctx context.Context, id uuid.UUID) (projections.UserView, error) {
	u, err := a.Users.Get(ctx, id)
	if !errors.Is(err, projections.ErrNotFound) && !errors.Is(err, projections.ErrBehind) {
		return u, err
	}
	w, tf, err := a.App.AccountFromLog(ctx, id)
	if err != nil {
		return projections.UserView{}, err
	}
	return writeSideView(w, tf), nil
}

func (a *Accounts) sessions(c *fiber.Ctx) error {
	claims := claimsOf(c)
	list, err := a.App.ActiveSessions(c.UserContext(), claims.UserID)
	if err != nil {
		return err
	}
	for i := range list {
		list[i].Current = list[i].ID == claims.SessionID
	}
	return c.JSON(fiber.Map{"sessions": list})
}

func (a *Accounts) revokeSession(c *fiber.Ctx) error {
	id, err := uuid.Parse(c.Params("session_id"))
	if err != nil {
		return &Error{Status: fiber.StatusBadRequest, Code: "validation_failed", Message: "session_id must be a UUID"}
	}
	if err := a.App.RevokeSession(c.UserContext(), claimsOf(c), id, a.request(c)); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (a *Accounts) revokeOtherSessions(c *fiber.Ctx) error {
	n, err := a.App.RevokeOtherSessions(c.UserContext(), claimsOf(c), a.request(c))
	if err != nil {
		return err
	}
	return c.JSON(fiber.Map{"revoked": n})
}

func writeSideView(u *domain.User, tf *domain.TwoFactor) projections.UserView {
	tenant := u.TenantName
	if tenant == "" {
		tenant = domain.DefaultTenantName(u.Name, u.Email)
	}
	return projections.UserView{
		ID: u.ID, Email: u.Email, Name: u.Name, EmailVerified: u.EmailVerified,
		Tenant: projections.Tenant{ID: u.TenantID, Name: tenant}, TwoFactorEnabled: tf != nil && tf.Enabled,
		CreatedAt: u.CreatedAt.UTC(), Locale: u.Locale,
	}
}
