package mail

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// NoticeHeader carries the event type of a security notice, so that a mail
// filter or a test can tell notices apart without reading their words.
const NoticeHeader = "X-Authd-Notice"

// noticeEvents is every event that tells the account's owner by mail (API.md,
// "Security notices"); a notice's mail is named by its event type.
func noticeEvents() []string {
	return []string{
		"SessionStarted", // only from a device and network new to the account
		"PasswordChanged",
		"PasswordReset",
		"EmailChangeRequested", // to the old address
		"EmailChanged",         // to the old address
		"TotpEnabled",
		"TotpDisabled",
		"BackupCodesRegenerated",
		"PasskeyAdded",
		"PasskeyRemoved",
		"RefreshTokenReused",
		"CodeGuessingDetected",
		"AccountDeleted",
	}
}

// Notice is what the templates of a security notice get. Product and Email
// (the recipient: the account's address, the old one for an email change) are
// set by Templates.Notice. The fields after IP are filled only for the
// notices named beside them.
type Notice struct {
	Product string
	Email   string
	When    time.Time // when it happened; in UTC by the time a template sees it
	Device  string    // the device, as its user agent names it; empty when unknown
	IP      string    // the client's address; empty when unknown

	NewEmail    string // EmailChangeRequested, EmailChanged: the address asked for
	PasskeyName string // PasskeyAdded, PasskeyRemoved
	Failures    int    // CodeGuessingDetected: wrong codes within the day
	// GuessedCode is CodeGuessingDetected's kind of code: totp, backup_code
	// or email_code.
	GuessedCode string
}

// WhenUTC is When written the same way in every language: 2026-12-06 07:06 UTC.
func (n Notice) WhenUTC() string { return n.When.UTC().Format("2006-01-02 15:04 UTC") }

func sampleNotice(product string) any {
	return Notice{
		Product:     product,
		Email:       "someone@example.com",
		When:        time.Date(2026, 12, 6, 7, 6, 0, 0, time.UTC),
		Device:      "Firefox on Linux",
		IP:          "203.0.113.7",
		NewEmail:    "someone.new@example.com",
		PasskeyName: "Work laptop",
		Failures:    10,
		GuessedCode: "totp",
	}
}

// Notice renders the security notice of event (an event type such as
// PasswordChanged) for the account's owner at to, in the template of their
// locale (BCP 47; empty for English). The message carries NoticeHeader.
func (t *Templates) Notice(to, locale, event string, n Notice) (Message, error) {
	if !slices.Contains(noticeEvents(), event) {
		return Message{}, fmt.Errorf("mail: %q is not an event authd sends a notice for", event)
	}
	if n.When.IsZero() {
		return Message{}, errors.New("mail: a notice needs the time of its event")
	}
	n.Product, n.Email = t.product, to
	n.When = n.When.UTC()
	m, err := t.message(event, locale, to, n)
	if err != nil {
		return Message{}, err
	}
	m.Headers = map[string]string{NoticeHeader: event}
	return m, nil
}
