package notices

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
)

// States of a row of notices_sent (migrations/00018_notices.sql).
const (
	stateSending = "sending"
	stateSent    = "sent"
	statePending = "pending"
	stateInDoubt = "in_doubt"
	stateSkipped = "skipped"
)

// claimed is what claiming an event's notice found.
type claimed struct {
	mine  bool          // this sender holds the claim: it sends the mail, then marks it
	state string        // the row's state when the claim is not this sender's
	wait  time.Duration // for stateSending: how long the other sender's lease still runs
	// tookOver: a claim whose lease had run out without a mark was found
	// and declared in doubt by this call.
	tookOver bool
	decided  bool // this call found no mail due: not a duplicate
}

// claim takes the notice of e for the sender claim, for the lease. Inserting
// the row is the check for duplicates: its primary key is the event id, so
// of all the instances and redeliveries that meet the event, one inserts and
// the others find its row (waiting, if it is not committed yet, for its
// outcome). due, run in the inserting transaction, decides whether a mail is
// due at all; when it is not, the row says skipped, so that a redelivery does
// not decide again on a history that now includes the event itself.
func claim(ctx context.Context, c *Consumer, e eventstore.Event, id uuid.UUID, due func(pgx.Tx) (bool, error)) (claimed, error) {
	tx, err := c.d.Pool.Begin(ctx)
	if err != nil {
		return claimed{}, fmt.Errorf("claim notice of %s: %w", e.ID, err)
	}
	defer tx.Rollback(ctx)
	tag, err := tx.Exec(ctx, `INSERT INTO notices_sent (event_id, event_type, user_id, state, claim, lease_until)
		VALUES ($1, $2, $3, 'sending', $4, now() + make_interval(secs => $5)) ON CONFLICT (event_id) DO NOTHING`,
		e.ID, e.Type, e.UserID, id, c.cfg.Lease.Seconds())
	if err != nil {
		return claimed{}, fmt.Errorf("claim notice of %s: %w", e.ID, err)
	}
	if tag.RowsAffected() == 0 {
		if err := tx.Rollback(ctx); err != nil {
			return claimed{}, fmt.Errorf("claim notice of %s: %w", e.ID, err)
		}
		return reclaim(ctx, c, e, id)
	}
	tell, err := due(tx)
	if err != nil {
		return claimed{}, err
	}
	if !tell {
		if _, err := tx.Exec(ctx, `UPDATE notices_sent SET state = 'skipped', claim = NULL, lease_until = NULL WHERE event_id = $1`, e.ID); err != nil {
			return claimed{}, fmt.Errorf("skip notice of %s: %w", e.ID, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return claimed{}, fmt.Errorf("claim notice of %s: %w", e.ID, err)
	}
	if !tell {
		return claimed{state: stateSkipped, decided: true}, nil
	}
	return claimed{mine: true}, nil
}

// reclaim handles an event whose row exists: a pending notice (its last send
// failed for sure) is claimed again; a claim whose lease ran out unmarked is
// in doubt, since its sender may have died after the server accepted the
// mail, and stays unsent; anything else is as it is.
func reclaim(ctx context.Context, c *Consumer, e eventstore.Event, id uuid.UUID) (claimed, error) {
	var before, after string
	var wait float64 // seconds
	err := c.d.Pool.QueryRow(ctx, `WITH old AS (SELECT state, lease_until FROM notices_sent WHERE event_id = $1 FOR UPDATE)
		UPDATE notices_sent n SET
			state = CASE WHEN old.state = 'pending' THEN 'sending'
			             WHEN old.state = 'sending' AND old.lease_until <= now() THEN 'in_doubt'
			             ELSE old.state END,
			claim = CASE WHEN old.state = 'pending' THEN $2 ELSE n.claim END,
			lease_until = CASE WHEN old.state = 'pending' THEN now() + make_interval(secs => $3) ELSE n.lease_until END,
			updated_at = CASE WHEN old.state = 'pending' OR (old.state = 'sending' AND old.lease_until <= now()) THEN now() ELSE n.updated_at END
		FROM old WHERE n.event_id = $1
		RETURNING old.state, n.state, greatest(coalesce(extract(epoch FROM old.lease_until - now()), 0), 0)::float8`,
		e.ID, id, c.cfg.Lease.Seconds()).Scan(&before, &after, &wait)
	if errors.Is(err, pgx.ErrNoRows) {
		// Deleted meanwhile: nothing does that, but the next delivery
		// would claim it afresh.
		return claimed{}, fmt.Errorf("notice of %s vanished while claimed", e.ID)
	}
	if err != nil {
		return claimed{}, fmt.Errorf("reclaim notice of %s: %w", e.ID, err)
	}
	switch {
	case before == statePending:
		return claimed{mine: true}, nil
	case before == stateSending && after == stateInDoubt:
		return claimed{state: stateInDoubt, tookOver: true}, nil
	}
	return claimed{state: after, wait: time.Duration(wait * float64(time.Second))}, nil
}

// settleTimeout bounds the statement that records how a send ended.
const settleTimeout = 5 * time.Second

// settle records how the send of a claimed notice ended, for the claim that
// made it only: state is sent, pending (the server refused it: another try
// may send it), in_doubt or skipped. A deleted account's address, kept for
// its farewell, goes in the same statement once no other try will need it.
//
// It has a deadline of its own: it follows a send that may have used up the
// message's whole time (a send cut off is exactly when in_doubt must be
// written), and a mark that missed its chance leaves the notice to its
// lease.
func settle(ctx context.Context, c *Consumer, e eventstore.Event, id uuid.UUID, state string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	_, err := c.d.Pool.Exec(ctx, `WITH farewell AS (DELETE FROM farewells WHERE $4 AND user_id = $5 AND $3 <> 'pending')
		UPDATE notices_sent SET state = $3, claim = NULL, lease_until = NULL, updated_at = now()
		WHERE event_id = $1 AND claim = $2`, e.ID, id, state, e.Type == domain.TypeAccountDeleted, e.UserID)
	if err != nil {
		return fmt.Errorf("mark notice of %s %s: %w", e.ID, state, err)
	}
	return nil
}
