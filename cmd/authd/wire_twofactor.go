package main

import (
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authd/authd/commands"
	"github.com/authd/authd/domain"
	"github.com/authd/authd/internal/challenges"
	"github.com/authd/authd/internal/seal"
)

// twoFactorConfig wires TOTP two-factor authentication: the login challenges
// in Postgres and the key backup codes are hashed under, derived from master,
// the sealing key main derives the email-code key from as well.
func twoFactorConfig(master []byte, pool *pgxpool.Pool) commands.TwoFactorConfig {
	return commands.TwoFactorConfig{
		Challenges:    challenges.NewChallenges(pool, seal.Derive(master, "2fa-challenge-tokens"), time.Now, domain.ChallengeTTL, domain.ChallengeTries),
		BackupCodeKey: seal.Derive(master, "backup-codes"),
	}
}
