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
		case asCommand(err, &apiErr):
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

// answers is the API's answer to each of the commands' errors (API.md), and
// to a request that ran out of time, which a query can do as well as a
// command. The first entry whose error err is (errors.Is) answers it. It is
// only read: asCommand hands out copies.
var answers = []struct {
	err    error
	answer Error
}{
	{commands.ErrInvalidCredentials, Error{Status: fiber.StatusUnauthorized, Code: "invalid_credentials", Message: "invalid email or password"}},
	{commands.ErrEmailNotVerified, Error{Status: fiber.StatusForbidden, Code: "email_not_verified", Message: "verify your email address first"}},
	{commands.ErrInvalidCode, Error{Status: fiber.StatusBadRequest, Code: "invalid_code", Message: "the code is wrong, expired or already used"}},
	{commands.ErrInvalidChallenge, Error{Status: fiber.StatusUnauthorized, Code: "invalid_challenge", Message: "the challenge is invalid, expired, used up or already answered; sign in again"}},
	{commands.ErrInvalidRefreshToken, Error{Status: fiber.StatusUnauthorized, Code: "invalid_refresh_token", Message: "refresh token is invalid, expired or revoked"}},
	{commands.ErrPasskeyChallenge, Error{Status: fiber.StatusUnauthorized, Code: "invalid_challenge", Message: "the passkey challenge is unknown, expired or already used; start again"}},
	{commands.ErrPasskeyRejected, Error{Status: fiber.StatusUnauthorized, Code: "invalid_credentials", Message: "the passkey could not be verified"}},
	{commands.ErrInvalidToken, Error{Status: fiber.StatusUnauthorized, Code: "invalid_token", Message: "the Google ID token is invalid, expired or not for this service"}},
	{commands.ErrGoogleUnavailable, Error{Status: fiber.StatusServiceUnavailable, Code: "unavailable", Message: "Google's signing keys cannot be fetched; retry shortly", RetryAfter: 5}},
	{commands.ErrSessionEnded, Error{Status: fiber.StatusUnauthorized, Code: "unauthorized", Message: "the session has ended; sign in again"}},
	{commands.ErrReauthenticationRequired, Error{Status: fiber.StatusForbidden, Code: "reauthentication_required", Message: "prove who you are again first: POST /reauthenticate"}},
	{commands.ErrNotFound, Error{Status: fiber.StatusNotFound, Code: "not_found", Message: "no such resource"}},
	{commands.ErrConflict, Error{Status: fiber.StatusConflict, Code: "conflict", Message: "the resource changed meanwhile; try again"}},
	{commands.ErrBusy, Error{Status: fiber.StatusServiceUnavailable, Code: "unavailable", Message: "too busy; retry shortly", RetryAfter: 1, Hold: busyHold}},
	{context.DeadlineExceeded, Error{Status: fiber.StatusServiceUnavailable, Code: "unavailable", Message: "timed out; retry shortly", RetryAfter: 1}},
}

// asCommand sets *out to the answer to err from answers, as errors.As would,
// and says whether there was one.
func asCommand(err error, out **Error) bool {
	for _, a := range answers {
		if errors.Is(err, a.err) {
			answer := a.answer
			*out = &answer
			return true
		}
	}
	return false
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
