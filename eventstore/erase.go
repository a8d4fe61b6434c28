package eventstore

import "github.com/google/uuid"

// Shred destroys user's data key, in the transaction of the Change it is
// committed with (Change.Also): from that commit on, the personal fields of
// every event of the user, wherever a copy of the log is, cannot be opened,
// and reads return them empty with Event.Erased set. A user with no key yet
// (no personal field ever sealed) gets a tombstone, so that none is made
// later.
func Shred(user uuid.UUID) Statement {
	return Statement{SQL: `INSERT INTO user_keys (user_id, kid, sealed_key, erased_at) VALUES ($1, NULL, NULL, now())
		ON CONFLICT (user_id) DO UPDATE SET kid = NULL, sealed_key = NULL, erased_at = coalesce(user_keys.erased_at, now())`,
		Args: []any{user}, erases: user}
}

// QueueStreamErasure asks the relay to delete user's messages from the
// JetStream stream once it has published the transaction this statement
// commits in (Change.Also), so the copies published before an erasure go
// too.
func QueueStreamErasure(user uuid.UUID) Statement {
	return Statement{SQL: `INSERT INTO stream_erasures (user_id) VALUES ($1)
		ON CONFLICT (user_id) DO UPDATE SET tx_id = pg_current_xact_id(), requested_at = now()`,
		Args: []any{user}}
}
