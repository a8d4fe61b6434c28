package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/authd/authd/internal/totp"
)

const apiPrefix = "/api/v1/auth"

// api is the unmeasured client the setup uses to create users and sessions
// through the real API.
type api struct {
	base   string // authd's base URL, no trailing slash
	client *http.Client
}

// apiError is an answer other than the one expected, with authd's error code.
type apiError struct {
	Method, Path string
	Status       int
	Code         string
	RetryAfter   time.Duration
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s %s: HTTP %d %s", e.Method, e.Path, e.Status, e.Code)
}

// retryable says whether the setup should try again: authd is busy hashing
// (503) or an account or IP limit pushed back (429).
func (e *apiError) retryable() bool {
	return e.Status == http.StatusServiceUnavailable || e.Status == http.StatusTooManyRequests
}

// call sends a JSON request and decodes a JSON answer with status want into out.
func (a *api) call(ctx context.Context, method, path string, in any, bearer string, want int, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	req.Header.Set("User-Agent", userAgent)
	resp, err := a.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		e := &apiError{Method: method, Path: path, Status: resp.StatusCode}
		var eb struct {
			Error struct{ Code string } `json:"error"`
		}
		if json.Unmarshal(raw, &eb) == nil {
			e.Code = eb.Error.Code
		}
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			e.RetryAfter = time.Duration(s) * time.Second
		}
		return e
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

// retry runs f again while authd answers 503 or 429, waiting as it asks (a
// little for 503s, which clear as soon as a hash finishes), until ctx ends.
func retry(ctx context.Context, f func() error) error {
	for attempt := 0; ; attempt++ {
		err := f()
		ae, ok := err.(*apiError)
		if !ok || !ae.retryable() {
			return err
		}
		wait := ae.RetryAfter
		if ae.Status == http.StatusServiceUnavailable || wait == 0 {
			wait = time.Duration(20+10*min(attempt, 20)) * time.Millisecond
		}
		if err := sleepCtx(ctx, wait); err != nil {
			return fmt.Errorf("%w (last answer: %v)", err, ae)
		}
	}
}

// tokens is the part of API.md's Tokens answer the tool uses.
type tokens struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	SessionID    string `json:"session_id"`
}

func (a *api) register(ctx context.Context, email, password string) error {
	return retry(ctx, func() error {
		return a.call(ctx, http.MethodPost, apiPrefix+"/register",
			map[string]string{"email": email, "password": password, "name": "authbench", "tenant_name": "authbench"},
			"", http.StatusAccepted, nil)
	})
}

func (a *api) verify(ctx context.Context, email, code string) (tokens, error) {
	var t tokens
	err := a.call(ctx, http.MethodPost, apiPrefix+"/register/verify",
		map[string]string{"email": email, "code": code}, "", http.StatusCreated, &t)
	return t, err
}

// signedIn is API.md's answer to a first-factor login: Tokens, or for a
// user with TOTP on a Challenge.
type signedIn struct {
	tokens
	Required  bool   `json:"two_factor_required"`
	Challenge string `json:"challenge_token"`
}

func (a *api) signIn(ctx context.Context, email, password string) (signedIn, error) {
	var s signedIn
	err := retry(ctx, func() error {
		return a.call(ctx, http.MethodPost, apiPrefix+"/login",
			map[string]string{"email": email, "password": password}, "", http.StatusOK, &s)
	})
	return s, err
}

// login signs in a user without TOTP and returns the session's tokens.
func (a *api) login(ctx context.Context, email, password string) (tokens, error) {
	s, err := a.signIn(ctx, email, password)
	if err == nil && (s.AccessToken == "" || s.RefreshToken == "") {
		return s.tokens, fmt.Errorf("login of %s answered no tokens: is TOTP on?", email)
	}
	return s.tokens, err
}

// challenge signs in a user with TOTP on and returns the token of the
// challenge the password earned.
func (a *api) challenge(ctx context.Context, email, password string) (string, error) {
	s, err := a.signIn(ctx, email, password)
	if err == nil && (!s.Required || s.Challenge == "") {
		return "", fmt.Errorf("login of %s answered no challenge: is TOTP on?", email)
	}
	return s.Challenge, err
}

// enableTOTP turns TOTP on for the user of access: POST /2fa/setup, then
// /2fa/enable with the current code of the secret it answered. It returns
// the backup codes.
func (a *api) enableTOTP(ctx context.Context, access string) ([]string, error) {
	var setup struct {
		Secret string `json:"secret"`
	}
	err := retry(ctx, func() error {
		return a.call(ctx, http.MethodPost, apiPrefix+"/2fa/setup", nil, access, http.StatusOK, &setup)
	})
	if err != nil {
		return nil, err
	}
	var enabled struct {
		BackupCodes []string `json:"backup_codes"`
	}
	err = retry(ctx, func() error {
		// Computed on every try: a retry may fall in the next 30 s step.
		code, err := totp.CodeAt(setup.Secret, time.Now())
		if err != nil {
			return fmt.Errorf("TOTP code of the secret /2fa/setup answered: %w", err)
		}
		return a.call(ctx, http.MethodPost, apiPrefix+"/2fa/enable", map[string]string{"code": code}, access, http.StatusOK, &enabled)
	})
	if err == nil && len(enabled.BackupCodes) == 0 {
		return nil, errors.New("/2fa/enable answered no backup codes")
	}
	return enabled.BackupCodes, err
}

func (a *api) healthy(ctx context.Context) error {
	return a.call(ctx, http.MethodGet, "/healthz", nil, "", http.StatusOK, nil)
}

// metricValue reads one unlabelled sample from authd's /metrics, e.g.
// process_cpu_seconds_total; ok is false when it is not there.
func (a *api) metricValue(ctx context.Context, name string) (v float64, ok bool) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+"/metrics", nil)
	if err != nil {
		return 0, false
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		return 0, false
	}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if rest, found := strings.CutPrefix(line, name+" "); found {
			f, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return f, err == nil
		}
	}
	return 0, false
}

const userAgent = "authbench/1 (Go net/http)"
