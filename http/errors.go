package http

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/utils"

	"github.com/authd/authd/commands"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/password"
	"github.com/authd/authd/internal/pgpool"
)

// Error is an API error: the status and the snake_case code of API.md, with a
// message safe to show a client.
type Error struct {
	Status     int
	Code       string
	Message    string
	RetryAfter int // seconds; sets Retry-After when positive
	// Hold delays the answer. A client that retries a refusal at once (a
	// flood's closed loop) then waits for a timer instead of taking a
	// core away from the work that refused it.
	Hold time.Duration
	// refusal names, for the refusals' count and log, why the edge turned
	// the request away; empty for the answers of routes.
	refusal string
}

// busyHold is how long an answer that all password-hashing slots are taken
// is held back: far less than its Retry-After, so a well-behaved client
// loses nothing.
const busyHold = 100 * time.Millisecond

func (e *Error) Error() string { return e.Code + ": " + e.Message }

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// errorHandler is the one place where errors become API answers. Anything not
// already an *Error or a fiber error is a fault of ours: it is logged with the
// request id and answered with a bare 500, never with its text.
func errorHandler(log *slog.Logger) fiber.ErrorHandler {
	return func(c *fiber.Ctx, err error) error {
		var apiErr *Error
		var fe *fiber.Error
		var ve *commands.ValidationError
		var rl *commands.RetryLaterError
		switch {
		case errors.As(err, &apiErr):
		case errors.As(err, &fe):
			apiErr = fromFiber(fe)
		case errors.As(err, &ve):
			apiErr = &Error{Status: fiber.StatusBadRequest, Code: "validation_failed", Message: ve.Error()}
		case errors.As(err, &rl):
			apiErr = &Error{Status: fiber.StatusTooManyRequests, Code: "rate_limited", Message: "too many attempts; retry later", RetryAfter: seconds(rl.After)}
		case fromCommand(err) != nil:
			apiErr = fromCommand(err)
		case pgpool.Unavailable(err):
			log.Warn("the database could not serve a request for now", "err", err, "method", c.Method(), "path", c.Path(), "request_id", requestID(c))
			apiErr = &Error{Status: fiber.StatusServiceUnavailable, Code: "unavailable", Message: "the service is busy; retry shortly", RetryAfter: 1}
		default:
			log.Error("request failed", "err", err, "method", c.Method(), "path", c.Path(), "request_id", requestID(c))
			apiErr = &Error{Status: fiber.StatusInternalServerError, Code: "internal", Message: "internal error"}
		}
		if apiErr.RetryAfter > 0 {
			c.Set(fiber.HeaderRetryAfter, strconv.Itoa(apiErr.RetryAfter))
		}
		if apiErr.Hold > 0 {
			time.Sleep(apiErr.Hold)
		}
		var body errorBody
		body.Error.Code, body.Error.Message = apiErr.Code, apiErr.Message
		return c.Status(apiErr.Status).JSON(body)
	}
}

// fromCommand maps the commands' sentinel errors; nil means none matched.
func fromCommand(err error) *Error {
	switch {
	case errors.Is(err, commands.ErrInvalidCredentials):
		return &Error{Status: fiber.StatusUnauthorized, Code: "invalid_credentials", Message: "invalid email or password"}
	case errors.Is(err, commands.ErrEmailNotVerified):
		return &Error{Status: fiber.StatusForbidden, Code: "email_not_verified", Message: "verify your email address first"}
	case errors.Is(err, commands.ErrInvalidCode):
		return &Error{Status: fiber.StatusBadRequest, Code: "invalid_code", Message: "the code is wrong, expired or already used"}
	case errors.Is(err, commands.ErrInvalidChallenge):
		return &Error{Status: fiber.StatusUnauthorized, Code: "invalid_challenge", Message: "the challenge is invalid, expired, used up or already answered; sign in again"}
	case errors.Is(err, commands.ErrInvalidRefreshToken):
		return &Error{Status: fiber.StatusUnauthorized, Code: "invalid_refresh_token", Message: "refresh token is invalid, expired or revoked"}
	case errors.Is(err, commands.ErrPasskeyChallenge):
		return &Error{Status: fiber.StatusUnauthorized, Code: "invalid_challenge", Message: "the passkey challenge is unknown, expired or already used; start again"}
	case errors.Is(err, commands.ErrPasskeyRejected):
		return &Error{Status: fiber.StatusUnauthorized, Code: "invalid_credentials", Message: "the passkey could not be verified"}
	case errors.Is(err, commands.ErrInvalidToken):
		return &Error{Status: fiber.StatusUnauthorized, Code: "invalid_token", Message: "the Google ID token is invalid, expired or not for this service"}
	case errors.Is(err, commands.ErrGoogleUnavailable):
		return &Error{Status: fiber.StatusServiceUnavailable, Code: "unavailable", Message: "Google's signing keys cannot be fetched; retry shortly", RetryAfter: 5}
	case errors.Is(err, commands.ErrNotFound):
		return &Error{Status: fiber.StatusNotFound, Code: "not_found", Message: "no such resource"}
	case errors.Is(err, commands.ErrConflict), errors.Is(err, eventstore.ErrConflict):
		return &Error{Status: fiber.StatusConflict, Code: "conflict", Message: "the resource changed meanwhile; try again"}
	case errors.Is(err, password.ErrBusy):
		return &Error{Status: fiber.StatusServiceUnavailable, Code: "unavailable", Message: "too busy; retry shortly", RetryAfter: 1, Hold: busyHold}
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Status: fiber.StatusServiceUnavailable, Code: "unavailable", Message: "timed out; retry shortly", RetryAfter: 1}
	}
	return nil
}

func fromFiber(fe *fiber.Error) *Error {
	switch fe.Code {
	case fiber.StatusNotFound:
		return &Error{Status: fe.Code, Code: "not_found", Message: "no such resource"}
	case fiber.StatusMethodNotAllowed:
		return &Error{Status: fe.Code, Code: "method_not_allowed", Message: "method not allowed"}
	case fiber.StatusRequestEntityTooLarge:
		return &Error{Status: fe.Code, Code: "payload_too_large", Message: "request body is too large"}
	case fiber.StatusServiceUnavailable:
		return &Error{Status: fe.Code, Code: "unavailable", Message: "service unavailable", RetryAfter: 1}
	}
	if fe.Code >= 400 && fe.Code < 500 {
		// Never fe.Message: for a request fasthttp could not parse it is the
		// parser's own error text.
		msg := "the request is malformed"
		if fe.Code != fiber.StatusBadRequest {
			msg = strings.ToLower(utils.StatusMessage(fe.Code))
		}
		return &Error{Status: fe.Code, Code: "validation_failed", Message: msg}
	}
	return &Error{Status: fiber.StatusInternalServerError, Code: "internal", Message: "internal error"}
}
