package main

import (
	"github.com/authd/authd/commands"
	"github.com/authd/authd/internal/config"
	"github.com/authd/authd/internal/googleauth"
)

// googleConfig sets up Google sign-in when GOOGLE_CLIENT_ID names at least
// one client; Google's keys are fetched on the first sign-in, not here.
func googleConfig(cfg config.Config) (commands.GoogleConfig, error) {
	if len(cfg.GoogleClientIDs) == 0 {
		return commands.GoogleConfig{}, nil
	}
	v, err := googleauth.New(googleauth.Options{JWKSURL: cfg.GoogleJWKSURL, ClientIDs: cfg.GoogleClientIDs})
	if err != nil {
		return commands.GoogleConfig{}, err
	}
	return commands.GoogleConfig{Verifier: v, ClientIDs: v.ClientIDs()}, nil
}
