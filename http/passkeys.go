package http

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/authd/authd/commands"
	"github.com/authd/authd/internal/ratelimit"
	"github.com/authd/authd/projections"
)

// PasskeyDemoPath serves a small page that registers a passkey for a signed-in
// user and signs in with it (the access token comes in the URL fragment,
// which is never sent to a server). It is what the real-browser test drives,
// and a way to try passkeys by hand against a running authd.
const PasskeyDemoPath = "/passkey/demo"

func (a *Accounts) passkeyRoutes(r fiber.Router) {
	perMinute := func(n int) ratelimit.Limit { return ratelimit.Limit{Requests: n, Window: time.Minute} }
	// Each options call stores a ceremony row: bounded per IP, like logins.
	limitOptions, limitLogin, limitRegister := perMinute(30), perMinute(10), perMinute(10)
	r.Get("/passkey/list", a.authenticate, a.listPasskeys)
	r.Post("/passkey/register/options", a.authenticate, a.fresh, a.limit("passkey_register", limitRegister), a.passkeyRegisterOptions)
	r.Post("/passkey/register/verify", a.authenticate, a.fresh, a.passkeyRegisterVerify)
	r.Post("/passkey/login/options", a.limit("passkey_login_options", limitOptions), a.passkeyLoginOptions)
	r.Post("/passkey/login/verify", a.limit("passkey_login", limitLogin), a.passkeyLoginVerify)
	r.Post("/passkey/reauthenticate/options", a.authenticate, a.limit("passkey_reauth_options", limitOptions), a.passkeyReauthOptions)
	r.Patch("/passkey/:passkey_id", a.authenticate, a.renamePasskey)
	r.Delete("/passkey/:passkey_id", a.authenticate, a.fresh, a.removePasskey)
	r.Get(PasskeyDemoPath, servePasskeyDemo)
}

type passkeyBody struct {
	ID         uuid.UUID  `json:"id"`
	Name       string     `json:"name"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
}

func passkeyJSON(p commands.Passkey) passkeyBody {
	return passkeyBody{ID: p.ID, Name: p.Name, CreatedAt: p.CreatedAt, LastUsedAt: p.LastUsedAt}
}

func (a *Accounts) listPasskeys(c *fiber.Ctx) error {
	user := claimsOf(c).UserID
	list, err := projections.UserPasskeys(c.UserContext(), a.Reads, user)
	if errors.Is(err, projections.ErrBehind) {
		list, err = a.passkeysFromLog(c.UserContext(), user)
	}
	if err != nil {
		return err
	}
	return c.JSON(fiber.Map{"passkeys": list})
}

// passkeysFromLog lists a user's passkeys as their stream has them, in the
// read model's order: a passkey just added or removed shows as such.
func (a *Accounts) passkeysFromLog(ctx context.Context, user uuid.UUID) ([]projections.PasskeyView, error) {
	keys, err := a.App.PasskeysFromLog(ctx, user)
	if err != nil {
		return nil, err
	}
	list := make([]projections.PasskeyView, 0, len(keys))
	for _, k := range keys {
		// The event keeps the registration's time to the nanosecond; the read
		// model, as Postgres stores it, to the microsecond, rounded.
		v := projections.PasskeyView{ID: k.ID, Name: k.Name, CreatedAt: k.CreatedAt.UTC().Round(time.Microsecond)}
		if !k.LastUsedAt.IsZero() {
			used := k.LastUsedAt.UTC()
			v.LastUsedAt = &used
		}
		list = append(list, v)
	}
	slices.SortStableFunc(list, func(x, y projections.PasskeyView) int {
		if c := x.CreatedAt.Compare(y.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(x.ID.String(), y.ID.String())
	})
	return list, nil
}

func (a *Accounts) passkeyRegisterOptions(c *fiber.Ctx) error {
	creation, err := a.App.PasskeyRegisterOptions(c.UserContext(), claimsOf(c))
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(fiber.Map{"publicKey": creation.Response})
}

func (a *Accounts) passkeyRegisterVerify(c *fiber.Ctx) error {
	var in struct {
		Name       string          `json:"name"`
		Credential json.RawMessage `json:"credential"`
	}
	if err := bind(c, &in); err != nil {
		return err
	}
	p, err := a.App.RegisterPasskey(c.UserContext(), claimsOf(c), commands.RegisterPasskeyInput{Name: in.Name, Credential: in.Credential}, a.request(c))
	if err != nil {
		return err
	}
	return c.Status(fiber.StatusCreated).JSON(passkeyJSON(p))
}

func (a *Accounts) passkeyLoginOptions(c *fiber.Ctx) error {
	assertion, err := a.App.PasskeyLoginOptions(c.UserContext())
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(fiber.Map{"publicKey": assertion.Response})
}

func (a *Accounts) passkeyReauthOptions(c *fiber.Ctx) error {
	assertion, err := a.App.PasskeyReauthOptions(c.UserContext(), claimsOf(c))
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(fiber.Map{"publicKey": assertion.Response})
}

func (a *Accounts) passkeyLoginVerify(c *fiber.Ctx) error {
	var in struct {
		Credential json.RawMessage `json:"credential"`
	}
	if err := bind(c, &in); err != nil {
		return err
	}
	t, err := a.App.PasskeyLogin(c.UserContext(), in.Credential, a.request(c))
	if err != nil {
		return err
	}
	return a.tokens(c, fiber.StatusOK, t)
}

func passkeyID(c *fiber.Ctx) (uuid.UUID, error) {
	id, err := uuid.Parse(c.Params("passkey_id"))
	if err != nil {
		return uuid.Nil, &Error{Status: fiber.StatusBadRequest, Code: "validation_failed", Message: "passkey_id must be a UUID"}
	}
	return id, nil
}

func (a *Accounts) renamePasskey(c *fiber.Ctx) error {
	id, err := passkeyID(c)
	if err != nil {
		return err
	}
	var in struct {
		Name string `json:"name"`
	}
	if err := bind(c, &in); err != nil {
		return err
	}
	p, err := a.App.RenamePasskey(c.UserContext(), claimsOf(c), id, in.Name, a.request(c))
	if err != nil {
		return err
	}
	return c.JSON(passkeyJSON(p))
}

func (a *Accounts) removePasskey(c *fiber.Ctx) error {
	id, err := passkeyID(c)
	if err != nil {
		return err
	}
	if err := a.App.RemovePasskey(c.UserContext(), claimsOf(c), id, a.request(c)); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

//go:embed passkey_demo.html
var passkeyDemoPage []byte

// passkeyDemoCSP allows the page's one inline script by its hash, and
// fetches to authd itself only.
var passkeyDemoCSP = func() string {
	m := regexp.MustCompile(`(?s)<script>(.*?)</script>`).FindSubmatch(passkeyDemoPage)
	if m == nil {
		panic("passkey_demo.html has no inline script")
	}
	sum := sha256.Sum256(m[1])
	return "default-src 'none'; script-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) +
		"'; style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}()

func servePasskeyDemo(c *fiber.Ctx) error {
	c.Set(fiber.HeaderContentType, fiber.MIMETextHTMLCharsetUTF8)
	c.Set("Content-Security-Policy", passkeyDemoCSP)
	c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	c.Set("Referrer-Policy", "no-referrer")
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Send(passkeyDemoPage)
}
