package eventstore

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/authd/authd/domain"
)

// streamRecord is a published message of a user that an erasure must delete.
type streamRecord struct {
	user uuid.UUID
	seq  uint64
}

// Erasable says whether e's message goes when its user is erased: every
// message with a user id but the two that end an account, AccountDeleted
// and SignupExpired. They hold ids only, and outside consumers must still
// receive them, after the erasure, to erase their own copies (API.md). Not
// recording them makes stream_messages exactly what an erasure deletes.
func Erasable(e Event) bool {
	return e.UserID != uuid.Nil && e.Type != domain.TypeAccountDeleted && e.Type != domain.TypeSignupExpired
}

// saveCheckpoint moves the relay's checkpoint to to and records the users'
// messages published up to it, in one statement: no crash can leave the
// checkpoint past a message that is not recorded. With forget, it also drops
// the records of sequences past to's, which a stream restored or recreated
// behind the checkpoint does not hold as they were.
func saveCheckpoint(ctx context.Context, conn execer, to relayed, records []streamRecord, forget bool) error {
	users := make([]uuid.UUID, len(records))
	seqs := make([]int64, len(records))
	for i, rec := range records {
		users[i], seqs[i] = rec.user, int64(rec.seq)
	}
	if _, err := conn.Exec(ctx, `WITH recorded AS (
			INSERT INTO stream_messages (user_id, seq) SELECT * FROM unnest($4::uuid[], $5::bigint[])
			ON CONFLICT DO NOTHING),
		forgotten AS (DELETE FROM stream_messages WHERE $6 AND seq > $3)
		UPDATE relay_checkpoint SET tx_id = $1::text::xid8, position = $2, stream_seq = $3, updated_at = now()`,
		to.cp.txText(), to.cp.Position, int64(to.seq), users, seqs, forget); err != nil {
		return fmt.Errorf("relay: save checkpoint %s: %w", to.cp, err)
	}
	return nil
}

// execer is a connection or the pool.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// readBackWait bounds the wait for each message read back from the stream.
const readBackWait = 5 * time.Second

// readBack reads the stream's messages from first to last, in order, and
// returns the records of those the relay wrote that an erasure must delete.
// A message deleted meanwhile (an erasure) is simply not delivered.
func readBack(ctx context.Context, stream jetstream.Stream, first, last uint64) ([]streamRecord, error) {
	create, cancel := context.WithTimeout(ctx, readBackWait)
	defer cancel()
	cons, err := stream.OrderedConsumer(create, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: first,
	})
	if err != nil {
		return nil, fmt.Errorf("relay: read the stream back from %d: %w", first, err)
	}
	msgs, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("relay: read the stream back from %d: %w", first, err)
	}
	defer msgs.Stop()
	var records []streamRecord
	for {
		next, cancel := context.WithTimeout(ctx, readBackWait)
		msg, err := msgs.Next(jetstream.NextContext(next))
		cancel()
		if err != nil {
			return nil, fmt.Errorf("relay: read the stream back from %d to %d: %w", first, last, err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return nil, fmt.Errorf("relay: read the stream back: %w", err)
		}
		if meta.Sequence.Stream > last {
			return records, nil
		}
		if e, err := FromMessage(msg.Headers(), msg.Data()); err == nil && Erasable(e) {
			records = append(records, streamRecord{user: e.UserID, seq: meta.Sequence.Stream})
		}
		if meta.Sequence.Stream == last || meta.NumPending == 0 {
			return records, nil
		}
	}
}
