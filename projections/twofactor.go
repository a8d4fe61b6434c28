package projections

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
)

// TwoFactor is the read model behind GET /2fa/status and /me's
// two_factor_enabled: whether a user has TOTP on, since when, and how many
// backup codes are left. It never holds a secret or a code.
type TwoFactor struct{}

func (TwoFactor) Name() string     { return "twofactor" }
func (TwoFactor) Tables() []string { return []string{"two_factor"} }

// Uses lists the event types Apply acts on (Selective).
func (tf TwoFactor) Uses(eventType string) bool {
	return slices.Contains(tf.types(), eventType) || ends(eventType)
}

// types are the event types Apply acts on: also those whose being past the
// checkpoint makes a user's two-factor state stale (UserReader).
func (TwoFactor) types() []string {
	return []string{domain.TypeTotpEnabled, domain.TypeTotpDisabled, domain.TypeBackupCodesRegenerated, domain.TypeBackupCodeUsed}
}

// Each statement is an upsert that sets the row to what the event says (a
// count, not a decrement), so the order of the batch is all that matters.
const (
	twoFactorEnabledSQL = `INSERT INTO two_factor AS t (user_id, enabled, enabled_at, backup_codes_remaining, updated_at)
		VALUES ($1, true, $2, $3, $2)
		ON CONFLICT (user_id) DO UPDATE SET enabled = true, enabled_at = $2, backup_codes_remaining = $3, updated_at = $2`
	twoFactorDisabledSQL = `INSERT INTO two_factor AS t (user_id, enabled, enabled_at, backup_codes_remaining, updated_at)
		VALUES ($1, false, NULL, 0, $2)
		ON CONFLICT (user_id) DO UPDATE SET enabled = false, enabled_at = NULL, backup_codes_remaining = 0, updated_at = $2`
	twoFactorCodesSQL = `UPDATE two_factor SET backup_codes_remaining = $3, updated_at = $2 WHERE user_id = $1 AND enabled`
)

// Apply queues one statement per event that changes the status, each of
// which must touch exactly one row.
func (tf TwoFactor) Apply(b *Batch, events []eventstore.Event) error {
	return eachUsed(tf, events, func(e eventstore.Event, d domain.Event) error {
		switch v := d.(type) {
		case *domain.TotpEnabled:
			b.Row(e, twoFactorEnabledSQL, v.UserID, e.OccurredAt, v.BackupCodes)
		case *domain.TotpDisabled:
			b.Row(e, twoFactorDisabledSQL, v.UserID, e.OccurredAt)
		case *domain.BackupCodesRegenerated:
			b.Row(e, twoFactorCodesSQL, v.UserID, e.OccurredAt, v.BackupCodes)
		case *domain.BackupCodeUsed:
			b.Row(e, twoFactorCodesSQL, v.UserID, e.OccurredAt, v.Remaining)
		default:
			forget(b, e, d, "two_factor")
		}
		return nil
	})
}

// TwoFactorStatus is GET /2fa/status.
type TwoFactorStatus struct {
	Enabled              bool       `json:"enabled"`
	EnabledAt            *time.Time `json:"enabled_at"`
	BackupCodesRemaining int        `json:"backup_codes_remaining"`
}

// GetTwoFactorStatus reads a user's two-factor status; a user who never
// turned it on has it off. ErrBehind when the user's two-factor stream holds
// a change the read model has not applied yet.
func GetTwoFactorStatus(ctx context.Context, q Querier, user uuid.UUID) (TwoFactorStatus, error) {
	var s TwoFactorStatus
	var behind bool
	err := q.QueryRow(ctx, `SELECT coalesce(tf.enabled, false), tf.enabled_at, coalesce(tf.backup_codes_remaining, 0),
		`+behindSQL("$2", "$3", "$4")+`
		FROM (SELECT) AS one LEFT JOIN two_factor tf ON tf.user_id = $1`,
		user, domain.TwoFactorStream(user), TwoFactor{}.Name(), TwoFactor{}.types()).
		Scan(&s.Enabled, &s.EnabledAt, &s.BackupCodesRemaining, &behind)
	if err != nil {
		return TwoFactorStatus{}, fmt.Errorf("read two-factor status of %s: %w", user, err)
	}
	if behind {
		return TwoFactorStatus{}, ErrBehind
	}
	if s.EnabledAt != nil {
		at := s.EnabledAt.UTC()
		s.EnabledAt = &at
	}
	return s, nil
}
