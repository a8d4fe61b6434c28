package commands

import "github.com/authd/authd/domain"

// PasskeyConfig is what the passkey commands need beyond Deps.
type PasskeyConfig struct{}

func passkeyEvents(string) (domain.Event, bool) { return nil, false }
