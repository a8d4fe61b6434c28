package main

import (
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authd/authd/commands"
	"github.com/authd/authd/domain"
	"github.com/authd/authd/internal/challenges"
)

// twoFactorConfig wires TOTP two-factor authentication: the login challenges
// in Postgres, whose tokens are HMACs under challengeKey, and the key backup
// codes are hashed under.
func twoFactorConfig(pool *pgxpool.Pool, challengeKey, backupCodeKey []byte) commands.TwoFactorConfig {
	return commands.TwoFactorConfig{
		Challenges:    challenges.NewChallenges(pool, challengeKey, time.Now, domain.ChallengeTTL, domain.ChallengeTries),
		BackupCodeKey: backupCodeKey,
	}
}
