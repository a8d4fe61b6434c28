package notices

import (
	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/mail"
)

// detail fills in what a notice's mail says about its event beyond the time,
// device and IP every notice has; acc is the account as its stream stands.
// Setting n.Email sends the notice there instead of the account's address.
type detail func(e domain.Event, acc account, n *mail.Notice)

// kinds is every event type that tells the account's owner by mail (API.md,
// "Security notices"), with what its mail says of it. Adding a notice is one
// line here and its templates in internal/mail.
func kinds() map[string]detail {
	return map[string]detail{
		domain.TypeSessionStarted:         nothing, // only from a device and network new to the account: devices.go
		domain.TypePasswordReset:          nothing,
		domain.TypePasswordChanged:        nothing,
		domain.TypeEmailChangeRequested:   emailChange,
		domain.TypeEmailChanged:           emailChange,
		domain.TypeTotpEnabled:            nothing,
		domain.TypeTotpDisabled:           nothing,
		domain.TypeBackupCodesRegenerated: nothing,
		domain.TypePasskeyAdded:           passkeyName,
		domain.TypePasskeyRemoved:         passkeyName,
		domain.TypeRefreshTokenReused:     nothing,
		domain.TypeCodeGuessingDetected:   guessing,
		domain.TypeAccountDeleted:         nothing, // to the address kept for it: Farewells
	}
}

func nothing(domain.Event, account, *mail.Notice) {}

// passkeyName names the passkey by the name the account last gave it, which
// a PasskeyRemoved does not carry.
func passkeyName(e domain.Event, acc account, n *mail.Notice) {
	switch e := e.(type) {
	case *domain.PasskeyAdded:
		n.PasskeyName = acc.passkeys[e.PasskeyID]
		if n.PasskeyName == "" {
			n.PasskeyName = e.Name
		}
	case *domain.PasskeyRemoved:
		n.PasskeyName = acc.passkeys[e.PasskeyID]
	}
}

// emailChange names the new address, and sends the notice to the address
// the account had when the change was asked for or made: the owner is told
// there, not at the address that may be someone else's.
func emailChange(e domain.Event, _ account, n *mail.Notice) {
	switch e := e.(type) {
	case *domain.EmailChangeRequested:
		n.Email, n.NewEmail = e.Email, e.NewEmail
	case *domain.EmailChanged:
		n.Email, n.NewEmail = e.OldEmail, e.NewEmail
	}
}

func guessing(e domain.Event, _ account, n *mail.Notice) {
	if g, ok := e.(*domain.CodeGuessingDetected); ok {
		n.Failures, n.GuessedCode = g.Failures, g.Kind
	}
}

// decode is the one place this package turns a log entry into its domain
// event: the project's codec.
func decode(e eventstore.Event) (domain.Event, error) { return eventstore.Decode(e) }
