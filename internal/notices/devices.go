package notices

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/ratelimit"
)

// devicesLockSQL locks the device history of user ($1) until the
// transaction ends.
const devicesLockSQL = `SELECT pg_advisory_xact_lock(hashtextextended('authd.notices.devices.' || $1::text, 0))`

// ForgetDevices deletes user's device history, to commit with the erasure
// of the account (eventstore.Change.Also). The lock comes first, in a
// statement of its own, so that the delete (whose snapshot is taken after
// it) sees the row of a sign-in judged meanwhile.
func ForgetDevices(user uuid.UUID) []eventstore.Statement {
	return []eventstore.Statement{
		{SQL: devicesLockSQL, Args: []any{user}},
		{SQL: `DELETE FROM notice_devices WHERE user_id = $1`, Args: []any{user}},
	}
}

// DeviceMemory is how long a device and network that signed in to an
// account stay known to it: a sign-in from a pair not seen for longer is
// told to the owner (API.md: 90 days, as for known networks).
const DeviceMemory = ratelimit.KnownNetworkMemory

// signIn records a sign-in of user from device and the network of ip at at,
// in tx, and says whether the owner is told: when the account signed in
// before at, and not from this device and network in the DeviceMemory
// before at (nor after it: see below). The account's first sign-in (right
// after verifying its email) is not told: there is nothing yet it could be
// new to.
//
// The account's rows are locked first, and times are the events' own, for
// sign-ins judged out of their order: by two instances at once, or after a
// redelivery. A pair is told once, whichever of its sign-ins is judged first
// (a later one judged before an earlier finds no row of its pair and is
// told; the earlier then finds the pair known). The account's first sign-in
// judged after a later one from elsewhere makes the later one look like the
// first, so out of order a notice can be missed, never sent twice for one
// new pair. On one instance sign-ins are judged in the stream's order
// (Consumer.runOnce).
//
// An erased account (its data key destroyed: user_keys) gets no row: a
// sign-in judged after the erasure would otherwise bring its device and
// network back. ForgetDevices takes the same lock, so a judgment runs wholly
// before the erasure's delete or wholly after its commit.
func signIn(ctx context.Context, tx pgx.Tx, user uuid.UUID, device, ip string, at time.Time) (tell bool, err error) {
	network := ratelimit.NetworkOf(ip)
	if _, err := tx.Exec(ctx, devicesLockSQL, user); err != nil {
		return false, fmt.Errorf("lock the device history of %s: %w", user, err)
	}
	// One statement: the reads see the history as it was before the upsert.
	err = tx.QueryRow(ctx, `WITH history AS (
		SELECT EXISTS (SELECT 1 FROM notice_devices WHERE user_id = $1 AND first_sign_in_at < $4) AS before,
		       EXISTS (SELECT 1 FROM notice_devices WHERE user_id = $1 AND device = $2 AND network = $3
		               AND last_sign_in_at >= $5) AS known
	), seen AS (
		INSERT INTO notice_devices (user_id, device, network, first_sign_in_at, last_sign_in_at) SELECT $1, $2, $3, $4, $4
		WHERE NOT EXISTS (SELECT 1 FROM user_keys WHERE user_id = $1 AND erased_at IS NOT NULL)
		ON CONFLICT (user_id, device, network) DO UPDATE SET
			first_sign_in_at = least(notice_devices.first_sign_in_at, excluded.first_sign_in_at),
			last_sign_in_at = greatest(notice_devices.last_sign_in_at, excluded.last_sign_in_at)
	)
	SELECT before AND NOT known FROM history`, user, device, network, at, at.Add(-DeviceMemory)).Scan(&tell)
	if err != nil {
		return false, fmt.Errorf("record a sign-in of %s: %w", user, err)
	}
	return tell, nil
}
