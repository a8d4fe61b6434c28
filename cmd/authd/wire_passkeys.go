package main

import (
	"fmt"
	"time"

	"github.com/go-webauthn/webauthn/webauthn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authd/authd/commands"
	"github.com/authd/authd/internal/ceremony"
	"github.com/authd/authd/internal/config"
)

// passkeyConfig is the WebAuthn relying party of the configuration (RP id,
// display name and accepted origins) with its ceremony state in Postgres.
func passkeyConfig(cfg config.Config, pool *pgxpool.Pool) (commands.PasskeyConfig, error) {
	rp, err := webauthn.New(&webauthn.Config{
		RPID:          cfg.WebAuthnRPID,
		RPDisplayName: cfg.WebAuthnRPName,
		RPOrigins:     cfg.WebAuthnOrigins,
	})
	if err != nil {
		return commands.PasskeyConfig{}, fmt.Errorf("webauthn: %w", err)
	}
	return commands.PasskeyConfig{
		WebAuthn:    rp,
		Ceremonies:  ceremony.New(pool, time.Now),
		CeremonyTTL: commands.DefaultCeremonyTTL,
	}, nil
}
