// Package notices tells an account's owner by mail about the security events
// of their account (API.md: "Security notices"), once per event: a durable
// consumer of the event stream, shared by every instance, that records in
// Postgres what it sent, keyed by event id.
//
// Why one mail, and never two, per event (the README says it for operators):
//
//   - The JetStream consumer is durable and every message is acked only once
//     its notice is settled, so an event is delivered again after a crash, a
//     restart or a lost ack until some instance has dealt with it: none is lost.
//   - Every delivery, on whichever instance, first claims the event's row in
//     notices_sent (primary key: the event id) with a lease. Only the claim's
//     holder sends; the others find the row and ack (sent, skipped, in doubt)
//     or come back when the lease ends (sending).
//   - The holder marks the row sent after the SMTP server accepted the mail.
//     A crash between the two leaves a claim whose lease runs out unmarked:
//     the mail may be out or not, and whoever meets it next marks it in_doubt
//     (logged, counted) and does not send. So the scheme errs towards never
//     twice; the lease (longer than a send may take) keeps a slow sender from
//     being taken for a dead one.
//   - A send that fails for sure (the server refused it, or could not be
//     reached) puts the row back to pending, and the message is delivered
//     again later: a notice is retried until it goes. A send cut off by its
//     own deadline is in doubt, like a crash.
//
// SMTP itself has one window no client closes: the server accepts the
// message and the connection breaks before its reply arrives. That failure
// is taken as "not sent" and may, rarely, send the mail twice.
package notices

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/mail"
)

// Bus is what the consumer needs of the NATS connection (natsbus.Bus).
type Bus interface {
	EnsureStream(ctx context.Context) (jetstream.Stream, error)
	SubjectFilter() string
}

// Composer writes a notice's mail (mail.Templates): to the account's address,
// in its locale, for the event type, with what the notice says.
type Composer interface {
	Notice(to, locale, event string, n mail.Notice) (mail.Message, error)
}

// Deps are the consumer's collaborators.
type Deps struct {
	Pool  *pgxpool.Pool
	Bus   Bus
	Store *eventstore.Store // the accounts' own streams: who to tell
	// Farewells opens the address of a deleted account (AccountDeleted's
	// notice); nil: deleted accounts are not told.
	Farewells *Farewells
	Compose   Composer
	Mail      mail.Sender
	Replicas  int // of the durable consumer (AUTHD_NATS_REPLICAS)
	Log       *slog.Logger
	Registry  prometheus.Registerer // nil: no metrics registered
	Now       func() time.Time
}

// Config tunes the consumer; the zero value is usable.
type Config struct {
	Durable     string        // the consumer's name (default authd_notices)
	Batch       int           // messages pulled ahead at most (default 100)
	Senders     int           // messages handled at once (default 8)
	AckWait     time.Duration // how long JetStream waits for an ack before delivering again (default 1m)
	SendTimeout time.Duration // bound of one SMTP send (default 30s)
	// Lease is how long a claim keeps other instances from the notice
	// (default and least: 4 times SendTimeout). A claim whose lease ran out
	// is taken for a sender that died, so it must outlast the longest a
	// live sender holds one: its deadline of two sends (prepare).
	Lease time.Duration
	// MaxAge: an event older than this when first handled gets no mail
	// (default 24h), so that a consumer created on a stream with history,
	// or one that was off for days, does not mail about the past.
	MaxAge  time.Duration
	Backoff time.Duration // first wait after a failure, doubling to 30 times it (default 200ms)
	LagPoll time.Duration // how often the lag is measured (default 5s)
}

func (c Config) withDefaults() Config {
	if c.Durable == "" {
		c.Durable = "authd_notices"
	}
	if c.Batch <= 0 {
		c.Batch = 100
	}
	if c.Senders <= 0 {
		c.Senders = 8
	}
	if c.AckWait <= 0 {
		c.AckWait = time.Minute
	}
	if c.SendTimeout <= 0 {
		c.SendTimeout = 30 * time.Second
	}
	c.Lease = max(c.Lease, 4*c.SendTimeout)
	if c.MaxAge <= 0 {
		c.MaxAge = 24 * time.Hour
	}
	if c.Backoff <= 0 {
		c.Backoff = 200 * time.Millisecond
	}
	if c.LagPoll <= 0 {
		c.LagPoll = 5 * time.Second
	}
	return c
}

// Consumer sends the security notices.
//
// All instances pull from one durable consumer rather than one leader
// sending for all (as the projections do): a notice needs no order, so
// spreading the work costs nothing, and when an instance dies its unacked
// messages go to the others after AckWait, with no lock to hand over.
// Exactly-once comes from Postgres, not from who pulls.
type Consumer struct {
	d     Deps
	cfg   Config
	log   *slog.Logger
	kinds map[string]detail

	mu      sync.Mutex
	lastErr error

	sent, failed, deduplicated *prometheus.CounterVec
	inDoubt                    prometheus.Counter
	lag, backlog, failing      prometheus.Gauge
}

// New returns a consumer; Run starts it.
func New(d Deps, cfg Config) *Consumer {
	if d.Now == nil {
		d.Now = time.Now
	}
	f := promauto.With(d.Registry)
	return &Consumer{
		d: d, cfg: cfg.withDefaults(), log: d.Log.With("component", "notices"), kinds: kinds(),
		sent:         f.NewCounterVec(prometheus.CounterOpts{Name: "authd_notices_sent_total", Help: "Security notices the SMTP server accepted, by event type."}, []string{"type"}),
		failed:       f.NewCounterVec(prometheus.CounterOpts{Name: "authd_notices_failed_total", Help: "Security notices whose send failed (to be tried again, or in doubt), by event type."}, []string{"type"}),
		deduplicated: f.NewCounterVec(prometheus.CounterOpts{Name: "authd_notices_deduplicated_total", Help: "Deliveries of an event whose notice was already dealt with, by event type."}, []string{"type"}),
		inDoubt:      f.NewCounter(prometheus.CounterOpts{Name: "authd_notices_in_doubt_total", Help: "Notices a sender lost track of (it died or timed out mid-send): never sent again."}),
		lag:          f.NewGauge(prometheus.GaugeOpts{Name: "authd_notices_lag_seconds", Help: "Age of the oldest event the notices consumer has not settled; 0 when there is none."}),
		backlog:      f.NewGauge(prometheus.GaugeOpts{Name: "authd_notices_backlog", Help: "Events the notices consumer has not settled: not yet delivered or not yet acked."}),
		failing:      f.NewGauge(prometheus.GaugeOpts{Name: "authd_notices_failing", Help: "1 while this instance's notices consumer is stopped by an error."}),
	}
}

// Err is why the consumer is stopped on this instance (NATS or Postgres
// gone), nil while it runs: a readiness detail.
func (c *Consumer) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastErr
}

func (c *Consumer) setErr(err error) {
	c.mu.Lock()
	c.lastErr = err
	c.mu.Unlock()
	if err != nil {
		c.failing.Set(1)
	} else {
		c.failing.Set(0)
	}
}

// Run sends notices until ctx ends.
func (c *Consumer) Run(ctx context.Context) {
	backoff := c.cfg.Backoff
	for ctx.Err() == nil {
		ran, err := c.runOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if ran {
			backoff = c.cfg.Backoff // a new failure, not the old one going on
		}
		c.setErr(err)
		c.log.Error("notices consumer stopped; starting again", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*c.cfg.Backoff)
	}
}

// runOnce consumes until ctx ends or an error; ran says whether it got as
// far as consuming.
//
// Messages are handled Senders at a time as they come: notices need no
// order, and one at a time an instance spends most of each waiting on the
// SMTP server. Claims keep two of them from sending one event twice.
func (c *Consumer) runOnce(ctx context.Context) (ran bool, err error) {
	stream, cons, err := c.consumer(ctx)
	if err != nil {
		return false, err
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(c.cfg.Batch))
	if err != nil {
		return false, fmt.Errorf("notices: consume: %w", err)
	}
	defer it.Stop()
	c.setErr(nil)
	measuring, stop := context.WithCancel(ctx)
	defer stop()
	go c.measure(measuring, stream, cons)
	go c.sweepEvery(measuring, time.Hour)
	// Shutting down: what was pulled and not yet handled goes to the other
	// instances now rather than after AckWait.
	defer context.AfterFunc(ctx, it.Drain)()
	slots := make(chan struct{}, c.cfg.Senders)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		m, err := it.Next()
		switch {
		case errors.Is(err, jetstream.ErrMsgIteratorClosed):
			return true, nil
		case err != nil:
			return true, fmt.Errorf("notices: consume: %w", err)
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			_ = m.Nak()
			continue
		}
		// A sign-in is judged against the ones before it, so on one instance
		// sign-ins are claimed in the stream's order, here; only their
		// sends run beside the rest.
		var finish func() outcome
		if eventTypeOf(m) == domain.TypeSessionStarted {
			finish = c.prepare(ctx, m)
		}
		wg.Go(func() {
			defer func() { <-slots }()
			if finish == nil {
				finish = c.prepare(ctx, m)
			}
			c.answer(m, finish())
		})
	}
}

// consumer creates the shared durable consumer, or finds it as another
// instance created it.
func (c *Consumer) consumer(ctx context.Context) (jetstream.Stream, jetstream.Consumer, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	stream, err := c.d.Bus.EnsureStream(ctx)
	if err != nil {
		return nil, nil, err
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:     c.cfg.Durable,
		Description: "authd security notices; shared by every instance, sent once per event id as recorded in Postgres",
		AckPolicy:   jetstream.AckExplicitPolicy,
		AckWait:     c.cfg.AckWait,
		MaxDeliver:  -1,
		// Enough for every instance's batch in hand, and a bound on what a
		// stalled instance holds back.
		MaxAckPending: 10 * c.cfg.Batch,
		// One subject filter: servers before 2.10 take no list of them. The
		// events that tell nobody are acked unread.
		FilterSubject: c.d.Bus.SubjectFilter(),
		DeliverPolicy: jetstream.DeliverAllPolicy,
		Replicas:      c.d.Replicas,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("notices: create consumer %s: %w", c.cfg.Durable, err)
	}
	return stream, cons, nil
}

// outcome says what to tell JetStream about a message.
type outcome struct {
	ack   bool
	retry time.Duration // when not acked: deliver again after this
}

// answer acks m, or has it delivered again, as o says.
func (c *Consumer) answer(m jetstream.Msg, o outcome) {
	var err error
	if o.ack {
		err = m.Ack()
	} else {
		err = m.NakWithDelay(o.retry)
	}
	if err != nil {
		// Delivered again after AckWait, and settled as a duplicate then.
		c.log.Warn("notices: ack failed", "subject", m.Subject(), "err", err)
	}
}

// eventTypeOf is the type of m's event, the last token of its subject.
func eventTypeOf(m jetstream.Msg) string {
	subject := m.Subject()
	return subject[strings.LastIndexByte(subject, '.')+1:]
}

// process deals with one message, short of acking it.
func (c *Consumer) process(ctx context.Context, m jetstream.Msg) outcome { return c.prepare(ctx, m)() }

// done is a message's outcome, known without a send.
func done(o outcome) func() outcome { return func() outcome { return o } }

// prepare reads m and claims its notice, and returns the rest: the send,
// when the claim is this sender's and a mail is due, and what to tell
// JetStream. A message in hand is finished even when ctx ends meanwhile,
// within the bounds of one send.
func (c *Consumer) prepare(ctx context.Context, m jetstream.Msg) func() outcome {
	eventType := eventTypeOf(m)
	tell, ok := c.kinds[eventType]
	if !ok {
		return done(outcome{ack: true})
	}
	// The rest of the batch waited its turn: AckWait starts again for this
	// one, so it is not delivered elsewhere while it is being sent.
	if err := m.InProgress(); err != nil {
		c.log.Debug("notices: cannot extend the ack wait", "err", err)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*c.cfg.SendTimeout)
	e, err := eventstore.FromMessage(m.Headers(), m.Data())
	var d domain.Event
	if err == nil && e.UserID == uuid.Nil {
		err = fmt.Errorf("event %s (%s) names no user", e.ID, e.Type)
	}
	if err == nil {
		d, err = decode(e)
	}
	if err != nil {
		// A message that cannot be read is not skipped: it is tried
		// again, loudly, like an event a projection cannot apply.
		cancel()
		c.log.Error("notices: cannot read an event; trying again later", "subject", m.Subject(), "err", err)
		c.failed.WithLabelValues(eventType).Inc()
		return done(outcome{retry: c.retryAfter(m)})
	}
	send, o := c.claimFor(ctx, m, e, d, tell)
	if send == nil {
		cancel()
		return done(o)
	}
	return func() outcome {
		defer cancel()
		return send()
	}
}

// claimFor claims the notice of e, and returns its send when the claim is
// this sender's and a mail is due, or else what to tell JetStream.
func (c *Consumer) claimFor(ctx context.Context, m jetstream.Msg, e eventstore.Event, d domain.Event, tell detail) (send func() outcome, o outcome) {
	log := c.log.With("event_id", e.ID, "type", e.Type, "user_id", e.UserID)
	stale := c.d.Now().Sub(e.OccurredAt) > c.cfg.MaxAge
	id := uuid.New()
	cl, err := claim(ctx, c, e, id, func(tx pgx.Tx) (bool, error) {
		if s, ok := d.(*domain.SessionStarted); ok {
			isNew, err := signIn(ctx, tx, e.UserID, s.Device, s.IP, e.OccurredAt)
			return isNew && !stale, err
		}
		return !stale, nil
	})
	switch {
	case err != nil:
		log.Warn("notices: cannot claim; trying again later", "err", err)
		return nil, outcome{retry: c.retryAfter(m)}
	case cl.tookOver:
		c.inDoubt.Inc()
		log.Error("notices: a sender lost track of this notice (it died or timed out mid-send): not sending it again, it may or may not have gone out")
		return nil, outcome{ack: true}
	case cl.state == stateSending:
		// Another sender holds it: look again, backing off, until it has
		// settled it or its lease has ended.
		return nil, outcome{retry: min(cl.wait+c.cfg.Backoff, c.retryAfter(m))}
	case !cl.mine:
		if !cl.decided {
			c.deduplicated.WithLabelValues(e.Type).Inc()
		}
		return nil, outcome{ack: true}
	}
	return func() outcome { return c.send(ctx, m, e, d, id, tell, log) }, outcome{}
}

// send mails the notice of e, claimed as id, and records how that went.
func (c *Consumer) send(ctx context.Context, m jetstream.Msg, e eventstore.Event, d domain.Event, id uuid.UUID, tell detail, log *slog.Logger) outcome {
	var acc account
	var err error
	if _, gone := d.(*domain.AccountDeleted); gone {
		acc, err = c.farewell(ctx, e.UserID)
	} else {
		acc, err = c.loadAccount(ctx, e.UserID)
	}
	if err != nil {
		log.Warn("notices: cannot read the account; trying again later", "err", err)
		return c.release(ctx, m, e, id, log)
	}
	if !acc.exists {
		if err := settle(ctx, c, e, id, stateSkipped); err != nil {
			log.Warn("notices: no account to tell, and the notice is not marked", "err", err)
		}
		return outcome{ack: true}
	}
	n := mail.Notice{When: e.OccurredAt, Device: e.Metadata.UserAgent, IP: e.Metadata.IP}
	if s, ok := d.(*domain.SessionStarted); ok {
		n.Device, n.IP = s.Device, s.IP
	}
	if acc.farewell != nil { // AccountDeleted keeps no metadata in the log
		n.Device, n.IP = acc.farewell.Device, acc.farewell.IP
	}
	tell(d, acc, &n)
	to := acc.email
	if n.Email != "" {
		to = n.Email // an email change's notice: the old address (kinds)
	}
	msg, err := c.d.Compose.Notice(to, acc.locale, e.Type, n)
	if err != nil {
		c.failed.WithLabelValues(e.Type).Inc()
		log.Error("notices: cannot write the mail; trying again later", "err", err)
		return c.release(ctx, m, e, id, log)
	}
	sendCtx, cancel := context.WithTimeout(ctx, c.cfg.SendTimeout)
	err = c.d.Mail.Send(sendCtx, msg)
	cancel()
	switch {
	case err == nil:
		c.sent.WithLabelValues(e.Type).Inc()
		if err := settle(ctx, c, e, id, stateSent); err != nil {
			// The mail is out and nobody sends it again: a delivery
			// after the lease finds the claim and calls it in doubt.
			log.Error("notices: sent, but not marked sent", "err", err)
		}
		return outcome{ack: true}
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		// Cut off mid-conversation: the server may have the mail.
		c.failed.WithLabelValues(e.Type).Inc()
		c.inDoubt.Inc()
		log.Error("notices: send timed out; not sending again, it may or may not have gone out", "err", err)
		if err := settle(ctx, c, e, id, stateInDoubt); err != nil {
			log.Warn("notices: the notice in doubt is not marked; its lease marks it", "err", err)
		}
		return outcome{ack: true}
	default:
		c.failed.WithLabelValues(e.Type).Inc()
		log.Warn("notices: send failed; trying again later", "err", err)
		return c.release(ctx, m, e, id, log)
	}
}

// release gives a claimed notice back for another try, which the message's
// next delivery makes.
func (c *Consumer) release(ctx context.Context, m jetstream.Msg, e eventstore.Event, id uuid.UUID, log *slog.Logger) outcome {
	if err := settle(ctx, c, e, id, statePending); err != nil {
		log.Warn("notices: cannot give the notice back; its lease will mark it in doubt", "err", err)
	}
	return outcome{retry: c.retryAfter(m)}
}

// retryAfter is how long a message waits before its next delivery after a
// failure: doubling with each delivery, to a minute.
func (c *Consumer) retryAfter(m jetstream.Msg) time.Duration {
	d := c.cfg.Backoff
	if meta, err := m.Metadata(); err == nil {
		for i := uint64(1); i < meta.NumDelivered && d < time.Minute; i++ {
			d *= 2
		}
	}
	return min(d, time.Minute)
}

// measure keeps the lag and backlog gauges: the age of the oldest event not
// yet settled, measured from JetStream's view of the consumer, so it grows
// whatever the instances are doing (also when all are stuck).
func (c *Consumer) measure(ctx context.Context, stream jetstream.Stream, cons jetstream.Consumer) {
	t := time.NewTicker(c.cfg.LagPoll)
	defer t.Stop()
	for {
		if err := c.measureOnce(ctx, stream, cons); err != nil && ctx.Err() == nil {
			c.log.Debug("notices: cannot measure the lag", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (c *Consumer) measureOnce(ctx context.Context, stream jetstream.Stream, cons jetstream.Consumer) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.LagPoll)
	defer cancel()
	info, err := cons.Info(ctx)
	if err != nil {
		return err
	}
	backlog := info.NumPending + uint64(info.NumAckPending)
	c.backlog.Set(float64(backlog))
	if backlog == 0 {
		c.lag.Set(0)
		return nil
	}
	// The first message past the ack floor is the oldest not settled (or
	// older: one acked out of order), whichever instance holds it.
	oldest, err := stream.GetMsg(ctx, info.AckFloor.Stream+1, jetstream.WithGetMsgSubject(c.d.Bus.SubjectFilter()))
	if err != nil {
		return err
	}
	c.lag.Set(max(0, c.d.Now().Sub(oldest.Time).Seconds()))
	return nil
}

// keepSettled is how long a settled notice's row is kept: while its event
// may come again and be mailed. Past MaxAge no event is mailed anyway, so
// a row older than both is only history.
func (c *Consumer) keepSettled() time.Duration { return max(7*24*time.Hour, 2*c.cfg.MaxAge) }

// sweepEvery forgets settled notices older than keepSettled, every interval;
// with several instances each does, which costs only empty deletes.
func (c *Consumer) sweepEvery(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n, err := c.Sweep(ctx); err != nil {
			c.log.Warn("notices: sweeping settled notices", "err", err)
		} else if n > 0 {
			c.log.Info("notices: forgot settled notices", "rows", n)
		}
	}
}

// Sweep deletes the rows of notices settled longer than keepSettled ago, a
// bounded number per statement so that no delete holds locks for long. A
// pending or sending one stays: its event is still being tried.
func (c *Consumer) Sweep(ctx context.Context) (int64, error) {
	var total int64
	for {
		sweep, cancel := context.WithTimeout(ctx, 30*time.Second)
		tag, err := c.d.Pool.Exec(sweep, `DELETE FROM notices_sent WHERE event_id IN (
			SELECT event_id FROM notices_sent WHERE state IN ('sent', 'skipped', 'in_doubt')
			AND updated_at < now() - make_interval(secs => $1) LIMIT 10000)`, c.keepSettled().Seconds())
		cancel()
		if err != nil {
			return total, fmt.Errorf("notices: sweep: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < 10000 {
			return total, nil
		}
	}
}
