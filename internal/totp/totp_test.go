package totp

import (
	"crypto/rand"
	"encoding/base32"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp"
	ptotp "github.com/pquerna/otp/totp"
)

// RFC 6238 appendix B, the SHA-1 rows: the 20-byte ASCII secret
// "12345678901234567890" and 8-digit codes.
var rfc6238 = []struct {
	unix int64
	code string
}{
	{59, "94287082"},
	{1111111109, "07081804"},
	{1111111111, "14050471"},
	{1234567890, "89005924"},
	{2000000000, "69279037"},
	{20000000000, "65353130"},
}

var rfcSecret = base32.StdEncoding.EncodeToString([]byte("12345678901234567890"))

func TestRFC6238Vectors(t *testing.T) {
	for _, v := range rfc6238 {
		at := time.Unix(v.unix, 0).UTC()
		got, err := ptotp.GenerateCodeCustom(rfcSecret, at, ptotp.ValidateOpts{Period: 30, Digits: otp.DigitsEight, Algorithm: otp.AlgorithmSHA1})
		if err != nil || got != v.code {
			t.Errorf("T=%d, 8 digits: %q %v, want %q", v.unix, got, err, v.code)
		}
		// Six digits are the same truncated value mod 10^6: the last six.
		six, err := CodeAt(rfcSecret, at)
		if err != nil || six != v.code[2:] {
			t.Errorf("T=%d, 6 digits: %q %v, want %q", v.unix, six, err, v.code[2:])
		}
		if step, ok := Match(rfcSecret, v.code[2:], at, -1); !ok || step != v.unix/30 {
			t.Errorf("T=%d: Match = %d %v, want step %d", v.unix, step, ok, v.unix/30)
		}
	}
}

func TestWindowIsOneStepEitherSide(t *testing.T) {
	secret, err := NewSecret(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_700_000_015, 0) // mid-step
	cur := StepAt(now)
	for d := int64(-3); d <= 3; d++ {
		code, err := CodeAt(secret, time.Unix((cur+d)*Period, 0))
		if err != nil {
			t.Fatal(err)
		}
		step, ok := Match(secret, code, now, -1)
		want := d >= -1 && d <= 1
		if ok != want || ok && step != cur+d {
			// A code of a far step may by chance equal one inside the window.
			if other, _ := CodeAt(secret, now); !want && ok && other == code {
				continue
			}
			t.Errorf("step %+d: Match = %d %v, want ok=%v", d, step, ok, want)
		}
	}
}

func TestAcceptedStepsAreNotAcceptedAgain(t *testing.T) {
	secret, _ := NewSecret(rand.Reader)
	now := time.Unix(1_800_000_000, 0)
	cur := StepAt(now)
	code, _ := CodeAt(secret, now)
	step, ok := Match(secret, code, now, -1)
	if !ok || step != cur {
		t.Fatalf("Match = %d %v", step, ok)
	}
	if _, ok := Match(secret, code, now, step); ok {
		t.Fatal("a code of an accepted step was accepted again")
	}
	if _, ok := Match(secret, code, now.Add(29*time.Second), step); ok {
		t.Fatal("a code of an accepted step was accepted again later")
	}
	next, _ := CodeAt(secret, now.Add(Period*time.Second))
	if s, ok := Match(secret, next, now, step); !ok || s != cur+1 {
		t.Fatalf("the next step's code after an accepted one: %d %v", s, ok)
	}
	prev, _ := CodeAt(secret, now.Add(-Period*time.Second))
	if _, ok := Match(secret, prev, now, step); ok && prev != code {
		t.Fatal("an earlier step's code was accepted after a later one")
	}
	for _, bad := range []string{"", "12345", "1234567", "abcdef", "12345\x00"} {
		if _, ok := Match(secret, bad, now, -1); ok {
			t.Errorf("Match accepted %q", bad)
		}
	}
}

func TestSecretURIAndQRCode(t *testing.T) {
	secret, err := NewSecret(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(secret)
	if err != nil || len(raw) != 20 {
		t.Fatalf("secret %q: %d bytes, %v", secret, len(raw), err)
	}
	uri, err := URI("authd", "ada+x@example.com", secret)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(uri, "otpauth://totp/authd:ada+x@example.com?secret="+secret+"&issuer=authd") {
		t.Fatalf("uri %s", uri)
	}
	key, err := otp.NewKeyFromURL(uri)
	if err != nil || key.Secret() != secret || key.Issuer() != "authd" || key.AccountName() != "ada+x@example.com" ||
		key.Digits() != otp.DigitsSix || key.Period() != 30 || key.Algorithm() != otp.AlgorithmSHA1 {
		t.Fatalf("pquerna/otp reads %s as %+v (%v)", uri, key, err)
	}
	u, _ := url.Parse(uri)
	if u.Scheme != "otpauth" || u.Host != "totp" {
		t.Fatalf("uri %s", uri)
	}
	qr, err := QRCode(uri)
	if err != nil || !strings.HasPrefix(qr, "data:image/png;base64,iVBORw0KGgo") {
		t.Fatalf("qr code %.60q %v", qr, err)
	}
	if _, err := URI("authd", "a@b.c", "not base32!"); err == nil {
		t.Fatal("URI took a bad secret")
	}
}
