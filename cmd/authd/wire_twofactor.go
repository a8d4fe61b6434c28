package main

import (
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authd/authd/commands"
	"github.com/authd/authd/domain"
	"github.com/authd/authd/internal/challenges"
	"github.com/authd/authd/internal/config"
	"github.com/authd/authd/internal/seal"
)

// twoFactorConfig wires TOTP two-factor authentication: the login challenges
// in Postgres and the key backup codes are hashed under, derived from the
// sealing master key the way main derives the email-code key.
func twoFactorConfig(cfg config.Config, pool *pgxpool.Pool) (commands.TwoFactorConfig, error) {
	var master []byte
	if len(cfg.MasterKeys) > 0 {
		master = cfg.MasterKeys[0]
	} else {
		// The development key main has already made and warned about.
		k, _, err := seal.DevKey(cfg.DataDir)
		if err != nil {
			return commands.TwoFactorConfig{}, fmt.Errorf("two-factor: master key: %w", err)
		}
		master = k
	}
	return commands.TwoFactorConfig{
		Challenges:    challenges.NewChallenges(pool, seal.Derive(master, "2fa-challenge-tokens"), time.Now, domain.ChallengeTTL, domain.ChallengeTries),
		BackupCodeKey: seal.Derive(master, "backup-codes"),
		Issuer:        "authd",
	}, nil
}
