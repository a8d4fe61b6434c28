package mail

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Purpose says what an emailed code is for; it picks the mail, whose name
// is the purpose as API.md spells it.
type Purpose int

// The zero Purpose is not valid, so a forgotten field fails instead of
// sending a sign-in email for a password reset.
const (
	Verify Purpose = iota + 1 // confirm the address at signup
	Login                     // sign in with a code instead of a password
	Reset                     // choose a new password
	// AccountExists answers a signup for an address that has an account
	// already: it tells the owner, and gives them a sign-in code in case it
	// was them.
	AccountExists
	EmailChange    // confirm a new address for the account, sent to it
	Reauthenticate // prove it is still the user before a sensitive change
)

// String is the purpose as API.md and the logs spell it.
func (p Purpose) String() string {
	switch p {
	case Verify:
		return "verify"
	case Login:
		return "login"
	case Reset:
		return "reset"
	case AccountExists:
		return "account_exists"
	case EmailChange:
		return "email_change"
	case Reauthenticate:
		return "reauthenticate"
	}
	return fmt.Sprintf("Purpose(%d)", int(p))
}

// purposes is every Purpose, in the order the README lists their mails.
func purposes() []Purpose {
	return []Purpose{Verify, Login, Reset, AccountExists, EmailChange, Reauthenticate}
}

// CodeData is what the templates of a code mail get.
type CodeData struct {
	Product string // AUTHD_PRODUCT_NAME
	Email   string // the recipient
	Code    string // 6 digits
	// Validity is how long the code works, in English words ("10 minutes");
	// Minutes is the same in whole minutes, rounded down (but at least 1) so
	// that a mail in another language never promises more time than it has.
	Validity string
	Minutes  int
}

// sampleCodeValue is the code of the sample data, which every body of a code
// mail must show.
const sampleCodeValue = "123456"

func sampleCode(product string) any {
	return CodeData{Product: product, Email: "someone@example.com", Code: sampleCodeValue, Validity: "10 minutes", Minutes: 10}
}

// Code renders the mail that carries a one-time code, in the template of the
// recipient's locale (BCP 47; empty for English): a plain-text and an HTML
// body showing the code, how long it is valid, and what to do if the
// recipient did not ask for it. code must be 6 digits and ttl positive.
func (t *Templates) Code(to, locale, code string, purpose Purpose, ttl time.Duration) (Message, error) {
	if !slices.Contains(purposes(), purpose) {
		return Message{}, fmt.Errorf("mail: unknown code purpose %v", purpose)
	}
	if !isSixDigits(code) {
		// The value is not quoted: if it is a code at all, it is a secret.
		return Message{}, errors.New("mail: a code must be 6 digits")
	}
	if ttl <= 0 {
		return Message{}, fmt.Errorf("mail: code validity %v is not positive", ttl)
	}
	return t.message(purpose.String(), locale, to, CodeData{
		Product:  t.product,
		Email:    to,
		Code:     code,
		Validity: validity(ttl),
		Minutes:  max(1, int(ttl/time.Minute)),
	})
}

func isSixDigits(s string) bool {
	if len(s) != 6 {
		return false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// validity says ttl the way a person would: "10 minutes", "1 hour", and
// seconds only when the duration is not whole minutes.
func validity(ttl time.Duration) string {
	n, unit := int64(ttl.Round(time.Second)/time.Second), "second"
	switch {
	case ttl%time.Hour == 0:
		n, unit = int64(ttl/time.Hour), "hour"
	case ttl%time.Minute == 0:
		n, unit = int64(ttl/time.Minute), "minute"
	}
	if n < 1 {
		n = 1
	}
	if n != 1 {
		unit += "s"
	}
	return fmt.Sprintf("%d %s", n, unit)
}
