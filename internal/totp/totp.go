// Package totp is authd's use of RFC 6238 time-based one-time passwords, over
// github.com/pquerna/otp: SHA-1, 6 digits, 30-second steps and a 160-bit
// secret, which is what every authenticator app reads. It has no clock of its
// own: every function takes the time it works at.
package totp

import (
	"bytes"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"image/png"
	"io"
	"net/url"
	"strconv"
	"time"

	"github.com/pquerna/otp"
	ptotp "github.com/pquerna/otp/totp"
)

// The parameters of authd's TOTP.
const (
	Period     = 30 // seconds per step
	Digits     = 6
	SecretSize = 20 // bytes: 160 bits, RFC 4226's recommendation
	// Skew is how many steps before and after the current one a code may
	// come from, for clocks that drift and users who type slowly.
	Skew = 1
)

var (
	b32  = base32.StdEncoding.WithPadding(base32.NoPadding)
	opts = ptotp.ValidateOpts{Period: Period, Skew: Skew, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}
)

// qrSize is the QR code's width and height in pixels.
const qrSize = 256

// NewSecret draws a secret from r (crypto/rand in production) and returns it
// base32-encoded without padding, as authenticator apps take it.
func NewSecret(r io.Reader) (string, error) {
	b := make([]byte, SecretSize)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", fmt.Errorf("totp: draw a secret: %w", err)
	}
	return b32.EncodeToString(b), nil
}

// StepAt is the time step t falls in.
func StepAt(t time.Time) int64 { return t.Unix() / Period }

// CodeAt is the code of secret for the step t falls in.
func CodeAt(secret string, t time.Time) (string, error) {
	return ptotp.GenerateCodeCustom(secret, t, opts)
}

// Match checks a 6-digit code against secret at now, within ±Skew steps, and
// returns the step it belongs to. Steps at or before after are not tried:
// that is how a step, once accepted, is never accepted again. When the code
// fits several steps (a one-in-a-million coincidence) the latest wins. All
// candidate steps are computed and compared in constant time, so the time
// taken says nothing about which step, if any, matched.
func Match(secret, code string, now time.Time, after int64) (step int64, ok bool) {
	if len(code) != Digits {
		return 0, false
	}
	cur := StepAt(now)
	for s := cur - Skew; s <= cur+Skew; s++ {
		want, err := ptotp.GenerateCodeCustom(secret, time.Unix(s*Period, 0), opts)
		if err != nil {
			return 0, false // not base32: no code can match
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 && s > after {
			step, ok = s, true
		}
	}
	return step, ok
}

// URI is the otpauth:// provisioning URI of a secret for account at issuer, in
// Google Authenticator's key URI format:
// otpauth://totp/ISSUER:ACCOUNT?secret=...&issuer=ISSUER&algorithm=SHA1&digits=6&period=30.
// Spaces are %20, not +, which some apps would show as is.
func URI(issuer, account, secret string) (string, error) {
	if _, err := b32.DecodeString(secret); err != nil {
		return "", fmt.Errorf("totp: secret is not base32: %w", err)
	}
	if issuer == "" || account == "" {
		return "", errors.New("totp: a provisioning URI needs an issuer and an account name")
	}
	return "otpauth://totp/" + url.PathEscape(issuer) + ":" + url.PathEscape(account) +
		"?secret=" + secret + "&issuer=" + url.PathEscape(issuer) +
		"&algorithm=SHA1&digits=" + strconv.Itoa(Digits) + "&period=" + strconv.Itoa(Period), nil
}

// QRCode renders a provisioning URI as a QR code in a PNG data URL
// ("data:image/png;base64,..."), for a page to show without a QR library.
func QRCode(uri string) (string, error) {
	key, err := otp.NewKeyFromURL(uri)
	if err != nil {
		return "", fmt.Errorf("totp: QR code: %w", err)
	}
	img, err := key.Image(qrSize, qrSize)
	if err != nil {
		return "", fmt.Errorf("totp: QR code: %w", err)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return "", fmt.Errorf("totp: QR code: %w", err)
	}
	return "data:image/png;base64," + base64.StdEncoding.EncodeToString(buf.Bytes()), nil
}
