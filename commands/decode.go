package commands

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
)

// newEvent returns an empty domain event of the given type. Each feature
// lists its own event types.
func newEvent(eventType string) (domain.Event, bool) {
	for _, f := range []func(string) (domain.Event, bool){accountEvents, twoFactorEvents, passkeyEvents, googleEvents} {
		if e, ok := f(eventType); ok {
			return e, true
		}
	}
	return nil, false
}

func accountEvents(eventType string) (domain.Event, bool) {
	switch eventType {
	case domain.TypeUserRegistered:
		return &domain.UserRegistered{}, true
	case domain.TypeRegistrationRenewed:
		return &domain.RegistrationRenewed{}, true
	case domain.TypeEmailVerified:
		return &domain.EmailVerified{}, true
	case domain.TypePasswordReset:
		return &domain.PasswordReset{}, true
	case domain.TypePasswordRehashed:
		return &domain.PasswordRehashed{}, true
	case domain.TypeSignupExpired:
		return &domain.SignupExpired{}, true
	case domain.TypeSignupAttempted:
		return &domain.SignupAttempted{}, true
	case domain.TypeTenantCreated:
		return &domain.TenantCreated{}, true
	case domain.TypeSessionStarted:
		return &domain.SessionStarted{}, true
	case domain.TypeLoginSucceeded:
		return &domain.LoginSucceeded{}, true
	case domain.TypeLoginFailed:
		return &domain.LoginFailed{}, true
	case domain.TypeSessionRefreshed:
		return &domain.SessionRefreshed{}, true
	case domain.TypeRefreshTokenReused:
		return &domain.RefreshTokenReused{}, true
	case domain.TypeSessionRevoked:
		return &domain.SessionRevoked{}, true
	case domain.TypeCodeGuessingDetected:
		return &domain.CodeGuessingDetected{}, true
	}
	return nil, false
}

// Decode turns a loaded log entry back into its domain event, secrets included.
func Decode(e eventstore.Event) (domain.Event, error) {
	d, ok := newEvent(e.Type)
	if !ok {
		return nil, fmt.Errorf("decode event %s: unknown type %q", e.ID, e.Type)
	}
	if err := json.Unmarshal(e.Data, d); err != nil {
		return nil, fmt.Errorf("decode event %s (%s): %w", e.ID, e.Type, err)
	}
	if sc, ok := d.(domain.SecretCarrier); ok && len(e.Secret) > 0 {
		if err := json.Unmarshal(e.Secret, sc.Secrets()); err != nil {
			return nil, fmt.Errorf("decode secrets of event %s (%s): %w", e.ID, e.Type, err)
		}
	}
	return d, nil
}

// applier is an aggregate rebuilt from its events.
type applier interface {
	Apply(e domain.Event, at time.Time)
}
