package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/config"
	"github.com/authd/authd/projections"
)

// exitCouldNotCheck is check's status when it could not finish: not a
// verdict on the data, which exitFailure is.
const exitCouldNotCheck = 2

// maxStreamProblems bounds the stream problems a report lists one by one;
// the counts are always complete.
const maxStreamProblems = 100

// checkReport is what `authctl check` prints.
type checkReport struct {
	Consistent  bool                 `json:"consistent"`
	Problems    []string             `json:"problems"` // one line per inconsistency; empty when consistent
	Stream      streamCheck          `json:"stream"`
	Projections []projectionCheck    `json:"projections"`
	Relay       checkpointStatus     `json:"relay"`
	Options     checkOptionsInReport `json:"options"`
}

type checkOptionsInReport struct {
	Sample            int64   `json:"sample"` // 0: every row compared
	PendingMaxSeconds float64 `json:"pending_max_seconds"`
}

// streamCheck compares the log with the JetStream stream.
type streamCheck struct {
	Name       string          `json:"name"`
	Messages   int64           `json:"messages"`     // read from the stream
	Matched    int64           `json:"matched"`      // events found once, in their place
	Missing    int64           `json:"missing"`      // committed, older than a published event, not in the stream
	Erased     int64           `json:"erased"`       // not in the stream as their user was erased (DELETE /me, an expired signup); not an inconsistency
	Duplicates int64           `json:"duplicates"`   // a second message of an event
	OutOfOrder int64           `json:"out_of_order"` // an event's message after a later event's
	Unknown    int64           `json:"unknown"`      // a relay message whose event the log does not have at that place
	Foreign    int64           `json:"foreign"`      // messages not written by the relay (no event headers); not an inconsistency
	Pending    pendingEvents   `json:"pending"`
	Problems   []streamProblem `json:"problem_list,omitempty"`
}

// pendingEvents are committed events the relay has not published yet.
type pendingEvents struct {
	Events           int64   `json:"events"`
	OldestAgeSeconds float64 `json:"oldest_age_seconds"` // the relay's real lag
	Stalled          bool    `json:"stalled"`            // older than the allowed lag
}

type streamProblem struct {
	Kind    string             `json:"kind"` // missing, duplicate, out_of_order, unknown
	EventID uuid.UUID          `json:"event_id"`
	Commit  *eventstore.Cursor `json:"commit,omitempty"`
	Seq     uint64             `json:"stream_seq,omitempty"` // 0 for a missing event
}

type projectionCheck struct {
	Consistent bool    `json:"consistent"`
	LagEvents  int64   `json:"lag_events"`
	LagSeconds float64 `json:"lag_seconds"`
	projections.Comparison
}

func setupCheck(fs *flag.FlagSet) func(context.Context, *cli, []string) error {
	timeout := fs.Duration("timeout", 60*time.Second, "give up (exit 2) when the check takes longer")
	sample := fs.Int64("sample", 0, "compare this many random rows of each read-model table (0: every row)")
	pendingMax := fs.Duration("pending-max", time.Minute, "unpublished events older than this are an inconsistency (a stalled relay)")
	batch := fs.Int("batch", projections.DefaultRebuildBatch, "events read per query")
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) > 0 {
			return usagef("takes no arguments, got %q", args)
		}
		switch {
		case *timeout <= 0:
			return usagef("--timeout must be positive, got %s", *timeout)
		case *sample < 0:
			return usagef("--sample must be 0 or more, got %d", *sample)
		case *pendingMax <= 0:
			return usagef("--pending-max must be positive, got %s", *pendingMax)
		case *batch <= 0:
			return usagef("--batch must be at least 1, got %d", *batch)
		}
		cfg, err := c.loadConfig()
		if err != nil {
			return &exitError{code: exitCouldNotCheck, err: err}
		}
		ctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		report, err := check(ctx, c, cfg, checkOptions{sample: *sample, pendingMax: *pendingMax, batch: *batch})
		if err != nil {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				err = fmt.Errorf("not finished within --timeout %s: %w", *timeout, err)
			}
			return &exitError{code: exitCouldNotCheck, err: fmt.Errorf("could not check: %w", schemaHint(err))}
		}
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(report); err != nil {
			return &exitError{code: exitCouldNotCheck, err: err}
		}
		if !report.Consistent {
			return &exitError{code: exitFailure, err: fmt.Errorf("inconsistent: %s", strings.Join(report.Problems, "; "))}
		}
		return nil
	}
}

// exitError is an error with its own exit status.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

type checkOptions struct {
	sample     int64
	pendingMax time.Duration
	batch      int
}

func check(ctx context.Context, c *cli, cfg config.Config, opt checkOptions) (checkReport, error) {
	report := checkReport{Options: checkOptionsInReport{Sample: opt.sample, PendingMaxSeconds: opt.pendingMax.Seconds()}}
	// Comparing the read models with a rebuild reads personal fields.
	sealer, pool, err := openSealedDB(ctx, cfg)
	if err != nil {
		return report, err
	}
	defer pool.Close()
	store := eventstore.NewStore(pool, sealer, nil)

	nc, err := connectNATS(ctx, cfg, c.logger(cfg))
	if err != nil {
		return report, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return report, fmt.Errorf("create JetStream handle: %w", err)
	}
	stream, err := js.Stream(ctx, cfg.NATSStream)
	if err != nil {
		return report, fmt.Errorf("look up JetStream stream %q: %w", cfg.NATSStream, err)
	}

	report.Stream, err = checkStream(ctx, pool, store, stream, opt)
	if err != nil {
		return report, err
	}
	report.Stream.Name = cfg.NATSStream
	s := report.Stream
	for _, k := range []struct {
		n    int64
		what string
	}{{s.Missing, "missing from the stream"}, {s.Duplicates, "duplicated in the stream"},
		{s.OutOfOrder, "out of order in the stream"}, {s.Unknown, "in the stream but not in the log"}} {
		if k.n > 0 {
			report.Problems = append(report.Problems, fmt.Sprintf("%d events %s", k.n, k.what))
		}
	}
	if s.Pending.Stalled {
		report.Problems = append(report.Problems, fmt.Sprintf("relay stalled: the oldest of %d unpublished events is %.1fs old (--pending-max %s)",
			s.Pending.Events, s.Pending.OldestAgeSeconds, opt.pendingMax))
	}

	status, err := readStatus(ctx, pool)
	if err != nil {
		return report, err
	}
	report.Relay = status.Relay
	report.Relay.Name = cfg.NATSStream
	lag := map[string]checkpointStatus{}
	for _, st := range status.Projections {
		lag[st.Name] = st
	}
	for _, p := range projections.All() {
		cmp, err := projections.Compare(ctx, pool, store, p, opt.sample, opt.batch)
		if err != nil {
			return report, err
		}
		pc := projectionCheck{Consistent: cmp.Consistent(), Comparison: cmp,
			LagEvents: lag[p.Name()].LagEvents, LagSeconds: lag[p.Name()].LagSeconds}
		for _, t := range cmp.Tables {
			if t.Differences > 0 {
				report.Problems = append(report.Problems, fmt.Sprintf("projection %s: table %s has %d rows unlike a rebuild", p.Name(), t.Table, t.Differences))
			}
		}
		report.Projections = append(report.Projections, pc)
	}
	report.Consistent = len(report.Problems) == 0
	if report.Problems == nil {
		report.Problems = []string{}
	}
	return report, nil
}

// streamMsg is what the check reads of one stream message.
type streamMsg struct {
	seq    uint64
	id     uuid.UUID
	commit eventstore.Cursor
}

// checkStream walks the stream in sequence order beside the log in relay
// order. The relay publishes in log order, each message expecting the one
// before it, so the stream must be the log's prefix: an event passed over
// is missing if a later event was published, and pending if none was.
func checkStream(ctx context.Context, pool *pgxpool.Pool, store *eventstore.Store, stream jetstream.Stream, opt checkOptions) (streamCheck, error) {
	var sc streamCheck
	info, err := stream.Info(ctx)
	if err != nil {
		return sc, fmt.Errorf("stream info: %w", err)
	}
	log := &logReader{store: store, batch: opt.batch}
	var lastMatched eventstore.Cursor
	passed := map[uuid.UUID]eventstore.Event{} // log events not found at their place
	problem := func(p streamProblem) {
		if len(sc.Problems) < maxStreamProblems {
			sc.Problems = append(sc.Problems, p)
		}
	}
	// inLog says whether the log holds event id at commit.
	inLog := func(id uuid.UUID, commit eventstore.Cursor) (bool, error) {
		var n int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE id = $1 AND tx_id = $2::text::xid8 AND position = $3`,
			id, fmt.Sprint(commit.Tx), commit.Position).Scan(&n)
		if err != nil {
			return false, fmt.Errorf("look up event %s: %w", id, err)
		}
		return n > 0, nil
	}

	err = readStream(ctx, stream, info.State, func(m streamMsg, relayed bool) error {
		sc.Messages++
		if !relayed {
			sc.Foreign++
			return nil
		}
		if !lastMatched.Before(m.commit) {
			// Behind the events already matched: an event passed over earlier
			// arriving late, or a second copy.
			if _, ok := passed[m.id]; ok {
				delete(passed, m.id)
				sc.OutOfOrder++
				problem(streamProblem{Kind: "out_of_order", EventID: m.id, Commit: &m.commit, Seq: m.seq})
				return nil
			}
			ok, err := inLog(m.id, m.commit)
			if err != nil {
				return err
			}
			if ok {
				sc.Duplicates++
				problem(streamProblem{Kind: "duplicate", EventID: m.id, Commit: &m.commit, Seq: m.seq})
			} else {
				sc.Unknown++
				problem(streamProblem{Kind: "unknown", EventID: m.id, Commit: &m.commit, Seq: m.seq})
			}
			return nil
		}
		for {
			e, ok, err := log.peek(ctx)
			if err != nil {
				return err
			}
			if !ok || !e.Commit.Before(m.commit) {
				if ok && e.Commit == m.commit && e.ID == m.id {
					log.next()
					lastMatched = m.commit
					sc.Matched++
				} else {
					sc.Unknown++
					problem(streamProblem{Kind: "unknown", EventID: m.id, Commit: &m.commit, Seq: m.seq})
				}
				return nil
			}
			passed[e.ID] = e
			log.next()
		}
	})
	if err != nil {
		return sc, err
	}
	missing := slices.SortedFunc(maps.Values(passed), func(a, b eventstore.Event) int {
		if a.Commit.Before(b.Commit) {
			return -1
		}
		return 1
	})
	erased, err := erasedUsers(ctx, pool, missing)
	if err != nil {
		return sc, err
	}
	for _, e := range missing {
		if erased[e.UserID] && eventstore.Erasable(e) {
			sc.Erased++
			continue
		}
		sc.Missing++
		problem(streamProblem{Kind: "missing", EventID: e.ID, Commit: &e.Commit})
	}

	// The relay may have published more while the stream was read: what is
	// pending is what lies past the newest event the stream holds now.
	newest := lastMatched
	if c, ok, err := newestRelayed(ctx, stream); err != nil {
		return sc, err
	} else if ok && newest.Before(c) {
		newest = c
	}
	n, age, err := store.Backlog(ctx, newest)
	if err != nil {
		return sc, err
	}
	sc.Pending = pendingEvents{Events: n, OldestAgeSeconds: math.Round(age*1000) / 1000}
	sc.Pending.Stalled = n > 0 && age > opt.pendingMax.Seconds()
	return sc, nil
}

// erasedUsers is which of the users of events have been erased: the relay
// deletes their messages from the stream, all but the one that ends the
// account. Erasure destroys the user's data key (eventstore.Shred).
func erasedUsers(ctx context.Context, pool *pgxpool.Pool, events []eventstore.Event) (map[uuid.UUID]bool, error) {
	var users []uuid.UUID
	for _, e := range events {
		if e.UserID != uuid.Nil {
			users = append(users, e.UserID)
		}
	}
	erased := map[uuid.UUID]bool{}
	if len(users) == 0 {
		return erased, nil
	}
	rows, err := pool.Query(ctx, `SELECT user_id FROM user_keys WHERE user_id = ANY($1) AND erased_at IS NOT NULL`, users)
	if err != nil {
		return nil, fmt.Errorf("look up erased users: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var u uuid.UUID
		if err := rows.Scan(&u); err != nil {
			return nil, fmt.Errorf("look up erased users: %w", err)
		}
		erased[u] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("look up erased users: %w", err)
	}
	return erased, nil
}

// logReader reads the log in relay order, a batch at a time.
type logReader struct {
	store *eventstore.Store
	batch int
	buf   []eventstore.Event
	after eventstore.Cursor
}

// peek returns the next event without taking it; ok is false at the log's
// readable end.
func (r *logReader) peek(ctx context.Context) (eventstore.Event, bool, error) {
	// The readable end moves on as the check runs, so reaching it is not
	// remembered: a later message reads again.
	if len(r.buf) == 0 {
		events, err := r.store.ReadLog(ctx, r.after, r.batch)
		if err != nil {
			return eventstore.Event{}, false, err
		}
		if len(events) == 0 {
			return eventstore.Event{}, false, nil
		}
		r.buf, r.after = events, events[len(events)-1].Commit
	}
	return r.buf[0], true, nil
}

func (r *logReader) next() { r.buf = r.buf[1:] }

// readStream calls f for each message, saying whether the relay wrote it, up to the stream's last sequence when
// the check began, in sequence order, through an ordered consumer: it acks
// nothing and leaves the projections' consumers alone.
func readStream(ctx context.Context, stream jetstream.Stream, state jetstream.StreamState, f func(m streamMsg, relayed bool) error) error {
	if state.Msgs == 0 {
		return nil
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return fmt.Errorf("create consumer: %w", err)
	}
	msgs, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("read stream: %w", err)
	}
	defer msgs.Stop()
	for {
		msg, err := msgs.Next(jetstream.NextContext(ctx))
		if err != nil {
			return fmt.Errorf("read stream: %w", err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("read stream: %w", err)
		}
		if meta.Sequence.Stream > state.LastSeq {
			return nil
		}
		m, ok := relayMessage(msg.Headers(), msg.Data())
		m.seq = meta.Sequence.Stream
		if err := f(m, ok); err != nil {
			return err
		}
		if meta.Sequence.Stream >= state.LastSeq || meta.NumPending == 0 {
			return nil
		}
	}
}

// relayMessage reads an event's id and commit from a message the relay
// wrote: the Nats-Msg-Id and commit headers, or the envelope when a header
// is missing (a message republished by hand).
func relayMessage(h nats.Header, data []byte) (streamMsg, bool) {
	var m streamMsg
	id, idErr := uuid.Parse(h.Get(nats.MsgIdHdr))
	c, ok := eventstore.CommitFromHeaders(h.Get(eventstore.HeaderTx), h.Get(eventstore.HeaderPosition))
	if idErr == nil && ok {
		m.id, m.commit = id, c
		return m, true
	}
	e, err := eventstore.FromMessage(h, data)
	if err != nil || e.ID == uuid.Nil {
		return m, false
	}
	m.id, m.commit = e.ID, e.Commit
	return m, true
}

// newestRelayed is the commit of the stream's last message, when the relay
// wrote it.
func newestRelayed(ctx context.Context, stream jetstream.Stream) (eventstore.Cursor, bool, error) {
	info, err := stream.Info(ctx)
	if err != nil {
		return eventstore.Cursor{}, false, fmt.Errorf("stream info: %w", err)
	}
	if info.State.Msgs == 0 {
		return eventstore.Cursor{}, false, nil
	}
	raw, err := stream.GetMsg(ctx, info.State.LastSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return eventstore.Cursor{}, false, nil
	}
	if err != nil {
		return eventstore.Cursor{}, false, fmt.Errorf("read stream message %d: %w", info.State.LastSeq, err)
	}
	m, ok := relayMessage(raw.Header, raw.Data)
	return m.commit, ok, nil
}
