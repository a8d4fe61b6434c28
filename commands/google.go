package commands

import "github.com/authd/authd/domain"

// GoogleConfig is what Google sign-in needs beyond Deps.
type GoogleConfig struct{}

func googleEvents(string) (domain.Event, bool) { return nil, false }
