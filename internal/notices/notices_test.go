package notices

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/mail"
	"github.com/authd/authd/internal/natsbus"
	"github.com/authd/authd/internal/testenv"
)

// fixture is one account's log, relayed to a stream of the test's own, and a
// Mailpit to receive its notices.
type fixture struct {
	pool  *pgxpool.Pool
	store *eventstore.Store
	nats  natsbus.Config
	bus   *natsbus.Bus
	mp    *testenv.MailpitServer
	user  uuid.UUID
	email string
	n     int // events appended
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	pool, _ := testenv.Database(t)
	cfg := testenv.NATSConfig(t, testenv.MachineNATS)
	f := &fixture{
		pool: pool, store: eventstore.NewStore(pool, testenv.Sealer(t), nil), nats: cfg, bus: testenv.OpenNATS(t, cfg),
		mp: testenv.Mailpit(t), user: uuid.New(), email: "owner-" + testenv.Suffix() + "@example.com",
	}
	relay := eventstore.NewRelay(f.store, f.bus, eventstore.RelayConfig{}, slog.New(slog.DiscardHandler), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { relay.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	tenant := uuid.New()
	f.add(t, domain.UserStream(f.user), laptop, time.Now(),
		&domain.UserRegistered{UserID: f.user, TenantID: tenant, TenantName: "Acme", Email: f.email, Name: "Owner"},
		&domain.EmailVerified{UserID: f.user})
	return f
}

// Where the owner signs in from, and somewhere else.
var (
	laptop   = eventstore.Metadata{IP: "203.0.113.7", UserAgent: "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"}
	stranger = eventstore.Metadata{IP: "198.51.100.23", UserAgent: "curl/8.5.0"}
)

// add appends events of the account to stream, as from meta at at.
func (f *fixture) add(t testing.TB, stream string, meta eventstore.Metadata, at time.Time, events ...domain.Event) []uuid.UUID {
	t.Helper()
	out := make([]eventstore.Event, len(events))
	for i, e := range events {
		enc, err := eventstore.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		enc.ID, enc.UserID, enc.Metadata, enc.OccurredAt = uuid.New(), f.user, meta, at
		out[i] = enc
	}
	if _, err := f.store.Append(context.Background(), stream, eventstore.AnyVersion, out...); err != nil {
		t.Fatal(err)
	}
	f.n += len(events)
	ids := make([]uuid.UUID, len(out))
	for i, e := range out {
		ids[i] = e.ID
	}
	return ids
}

// signIn appends the SessionStarted of a sign-in from meta, the device named
// as the HTTP edge names it.
func (f *fixture) signIn(t testing.TB, meta eventstore.Metadata, device string, at time.Time) uuid.UUID {
	t.Helper()
	s := uuid.New()
	return f.add(t, domain.SessionStream(s), meta, at, &domain.SessionStarted{
		SessionID: s, UserID: f.user, AMR: []string{"pwd"}, Client: domain.Client{IP: meta.IP, UserAgent: meta.UserAgent, Device: device},
	})[0]
}

// everyNotice appends one event of each type that has a notice, from the
// stranger, and returns their types.
func (f *fixture) everyNotice(t testing.TB) []string {
	t.Helper()
	now, key := time.Now(), uuid.New()
	u, tf := domain.UserStream(f.user), domain.TwoFactorStream(f.user)
	f.add(t, u, stranger, now, &domain.PasswordReset{UserID: f.user, At: now})
	f.add(t, tf, stranger, now, &domain.TotpEnabled{UserID: f.user, Step: 1, BackupCodes: 10})
	f.add(t, tf, stranger, now, &domain.BackupCodesRegenerated{UserID: f.user, BackupCodes: 10})
	f.add(t, tf, stranger, now, &domain.TotpDisabled{UserID: f.user, Method: "totp"})
	f.add(t, u, stranger, now, &domain.PasskeyAdded{PasskeyID: key, UserID: f.user, Name: "Evil key", CreatedAt: now})
	f.add(t, u, stranger, now, &domain.PasskeyRenamed{PasskeyID: key, UserID: f.user, Name: "Renamed key"})
	f.add(t, u, stranger, now, &domain.PasskeyRemoved{PasskeyID: key, UserID: f.user})
	f.add(t, domain.SessionStream(uuid.New()), stranger, now, &domain.RefreshTokenReused{SessionID: uuid.New(), Generation: 1, Current: 2})
	f.add(t, domain.CodeGuessingStream(f.user, now), stranger, now,
		&domain.CodeGuessingDetected{UserID: f.user, Kind: domain.GuessedTOTP, Failures: domain.CodeGuessingThreshold, WindowStart: now})
	f.signIn(t, stranger, "curl", now)
	return []string{
		domain.TypePasswordReset, domain.TypeTotpEnabled, domain.TypeBackupCodesRegenerated, domain.TypeTotpDisabled,
		domain.TypePasskeyAdded, domain.TypePasskeyRemoved, domain.TypeRefreshTokenReused, domain.TypeCodeGuessingDetected,
		domain.TypeSessionStarted,
	}
}

// consumer returns a consumer of the fixture's stream over a NATS connection
// of its own, as another instance would have.
func (f *fixture) consumer(t testing.TB, cfg Config, reg prometheus.Registerer) *Consumer {
	t.Helper()
	return f.consumerVia(t, f.mp.SMTPURL(), cfg, reg)
}

// consumerVia is a consumer that sends through the SMTP server at smtpURL.
func (f *fixture) consumerVia(t testing.TB, smtpURL string, cfg Config, reg prometheus.Registerer) *Consumer {
	t.Helper()
	templates, err := mail.Builtin("Acme")
	if err != nil {
		t.Fatal(err)
	}
	sender, err := mail.NewSMTP(smtpURL, "Acme <no-reply@acme.example>")
	if err != nil {
		t.Fatal(err)
	}
	bus := testenv.OpenNATS(t, f.nats)
	return New(Deps{
		Pool: f.pool, Bus: bus, Store: f.store, Compose: templates, Mail: sender, Log: testenv.Logger(t), Registry: reg,
	}, cfg)
}

// run runs c until the test ends or the returned stop is called.
func run(t testing.TB, c *Consumer) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	stop = sync.OnceFunc(func() { cancel(); <-done })
	t.Cleanup(stop)
	return stop
}

// settled waits until every event of the fixture is in the stream and the
// consumer durable has acked them all: whatever mail they cause is out.
func (f *fixture) settled(t testing.TB, durable string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		stream, err := f.bus.EnsureStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var info *jetstream.ConsumerInfo
		cons, err := stream.Consumer(ctx, durable)
		if err == nil {
			info, err = cons.Info(ctx)
		}
		if err == nil && info.AckFloor.Stream >= uint64(f.n) && info.NumAckPending == 0 && info.NumPending == 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the notices consumer did not ack the %d events: %+v, %v", f.n, info, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// notices returns the types of the notices in Mailpit, each as often as it
// arrived, checking that each went to the owner with the device and IP of
// its event.
func (f *fixture) notices(t testing.TB) []string {
	t.Helper()
	var types []string
	for _, m := range f.mp.Messages(t) {
		h := f.mp.Headers(t, m.ID)[mail.NoticeHeader]
		if len(h) != 1 {
			t.Fatalf("mail %q has %s %v", m.Subject, mail.NoticeHeader, h)
		}
		if !slices.Equal(m.To, []string{f.email}) {
			t.Errorf("%s notice went to %v, want %s", h[0], m.To, f.email)
		}
		if !strings.Contains(m.Text, stranger.IP) || !strings.Contains(m.HTML, stranger.IP) {
			t.Errorf("%s notice does not name the IP %s:\n%s", h[0], stranger.IP, m.Text)
		}
		device := stranger.UserAgent
		if h[0] == domain.TypeSessionStarted {
			device = "curl"
		}
		if !strings.Contains(m.Text, device) {
			t.Errorf("%s notice does not name the device %q:\n%s", h[0], device, m.Text)
		}
		if h[0] == domain.TypePasskeyRemoved && !strings.Contains(m.Text, "Renamed key") {
			t.Errorf("PasskeyRemoved notice does not name the passkey by its last name:\n%s", m.Text)
		}
		types = append(types, h[0])
	}
	slices.Sort(types)
	return types
}

func sorted(s []string) []string { return slices.Sorted(slices.Values(s)) }

func TestEachNoticeArrivesOnceWithDeviceAndIP(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	now := time.Now()
	f.signIn(t, laptop, "Firefox on Linux", now) // right after signing up: none
	want := f.everyNotice(t)
	// Known device and network (another address in the same /24): none.
	f.signIn(t, eventstore.Metadata{IP: "203.0.113.99", UserAgent: laptop.UserAgent}, "Firefox on Linux", now)
	reg := prometheus.NewRegistry()
	c := f.consumer(t, Config{}, reg)
	run(t, c)
	f.settled(t, "authd_notices")
	if got := f.notices(t); !slices.Equal(got, sorted(want)) {
		t.Fatalf("notices %v, want one each of %v", got, sorted(want))
	}
	for _, typ := range want {
		if n := value(t, c.sent.WithLabelValues(typ)); n != 1 {
			t.Errorf("authd_notices_sent_total{type=%s} = %v, want 1", typ, n)
		}
	}
}

func TestNewDeviceAfterNinetyDays(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	long := time.Now().Add(-100 * 24 * time.Hour)
	f.signIn(t, laptop, "Firefox on Linux", long)
	f.signIn(t, laptop, "Firefox on Linux", long.Add(time.Hour))
	f.signIn(t, laptop, "Firefox on Linux", time.Now()) // 100 days on: new again
	c := f.consumer(t, Config{MaxAge: 365 * 24 * time.Hour}, nil)
	run(t, c)
	f.settled(t, "authd_notices")
	var got []string
	for _, m := range f.mp.Messages(t) {
		got = append(got, f.mp.Headers(t, m.ID)[mail.NoticeHeader]...)
	}
	if !slices.Equal(got, []string{domain.TypeSessionStarted}) {
		t.Fatalf("notices %v, want one SessionStarted (the sign-in after 100 days)", got)
	}
}

func TestStaleEventsSendNothing(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	old := time.Now().Add(-48 * time.Hour)
	f.add(t, domain.UserStream(f.user), stranger, old, &domain.PasswordReset{UserID: f.user, At: old})
	run(t, f.consumer(t, Config{}, nil))
	f.settled(t, "authd_notices")
	if n := len(f.mp.Messages(t)); n != 0 {
		t.Fatalf("%d mails about a 2-day-old event", n)
	}
}

// A consumer killed after it took a batch (some notices sent and marked but
// not acked, the rest not even looked at) and started again sends each
// notice once.
func TestKilledMidBatchAndRestarted(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.signIn(t, laptop, "Firefox on Linux", time.Now())
	want := f.everyNotice(t)
	f.relayed(t)

	cfg := Config{AckWait: time.Second, Batch: 100}
	dead := f.consumer(t, cfg, nil)
	ctx := context.Background()
	_, cons, err := dead.consumer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	batch := f.fetchAll(t, cons)
	for _, m := range batch[:len(batch)/2] {
		if o := dead.process(ctx, m); !o.ack {
			t.Fatalf("processing %s: %+v", m.Subject(), o)
		}
	}
	// Killed: its connection gone, nothing acked, the rest never looked at.
	dead.d.Bus.(*natsbus.Bus).Close()
	var sentBefore int
	if err := f.pool.QueryRow(ctx, `SELECT count(*) FROM notices_sent WHERE state = 'sent'`).Scan(&sentBefore); err != nil {
		t.Fatal(err)
	}
	if sentBefore == 0 || sentBefore == len(want) {
		t.Fatalf("%d of %d notices sent before the kill: the batch was not cut in the middle", sentBefore, len(want))
	}

	run(t, f.consumer(t, cfg, nil))
	f.settled(t, "authd_notices")
	if got := f.notices(t); !slices.Equal(got, sorted(want)) {
		t.Fatalf("notices %v, want one each of %v", got, sorted(want))
	}
}

// relayed waits until the stream holds every event of the fixture.
func (f *fixture) relayed(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		stream, err := f.bus.EnsureStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		info, err := stream.Info(ctx)
		if err == nil && info.State.Msgs >= uint64(f.n) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the relay did not publish the %d events: %v %v", f.n, info, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func TestTwoInstancesSendEachNoticeOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.signIn(t, laptop, "Firefox on Linux", time.Now())
	var want []string
	for i := range 3 {
		for _, typ := range f.everyNotice(t) {
			// The stranger's device and network are new to the account
			// only the first time.
			if typ != domain.TypeSessionStarted || i == 0 {
				want = append(want, typ)
			}
		}
	}
	f.relayed(t)
	// Small batches, so that both instances get some of the events.
	cfg := Config{Batch: 2}
	run(t, f.consumer(t, cfg, nil))
	run(t, f.consumer(t, cfg, nil))
	f.settled(t, "authd_notices")
	if got := f.notices(t); !slices.Equal(got, sorted(want)) {
		t.Fatalf("notices %v, want %v", got, sorted(want))
	}
}

// Every event delivered again (a consumer that starts from the beginning of
// the stream) sends no second mail.
func TestRedeliveredEventsSendNoSecondMail(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.signIn(t, laptop, "Firefox on Linux", time.Now())
	want := f.everyNotice(t)
	stop := run(t, f.consumer(t, Config{}, nil))
	f.settled(t, "authd_notices")
	stop()

	reg := prometheus.NewRegistry()
	again := f.consumer(t, Config{Durable: "authd_notices_again"}, reg)
	run(t, again)
	f.settled(t, "authd_notices_again")
	if got := f.notices(t); !slices.Equal(got, sorted(want)) {
		t.Fatalf("notices %v, want one each of %v", got, sorted(want))
	}
	if n := value(t, again.deduplicated.WithLabelValues(domain.TypePasswordReset)); n != 1 {
		t.Errorf("deduplicated PasswordReset = %v, want 1", n)
	}
}

// A claim whose sender vanished is never sent again once its lease is over
// (the mail may be out: in doubt), and is left alone while it lasts.
func TestClaimsOfOtherSenders(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.signIn(t, laptop, "Firefox on Linux", time.Now())
	now := time.Now()
	lost := f.add(t, domain.UserStream(f.user), stranger, now, &domain.PasswordReset{UserID: f.user, At: now})[0]
	busy := f.add(t, domain.TwoFactorStream(f.user), stranger, now, &domain.TotpEnabled{UserID: f.user, Step: 1})[0]
	ctx := context.Background()
	for id, lease := range map[uuid.UUID]string{lost: "-1 second", busy: "1 hour"} {
		if _, err := f.pool.Exec(ctx, `INSERT INTO notices_sent (event_id, event_type, user_id, state, claim, lease_until)
			VALUES ($1, 'x', $2, 'sending', $3, now() + $4::interval)`, id, f.user, uuid.New(), lease); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	c := f.consumer(t, Config{Backoff: 10 * time.Millisecond}, reg)
	run(t, c)
	f.waitState(t, lost, stateInDoubt)
	// The busy sender finishes: the consumer, back when it is told to
	// retry, finds it sent.
	if _, err := f.pool.Exec(ctx, `UPDATE notices_sent SET state = 'sent', lease_until = NULL WHERE event_id = $1`, busy); err != nil {
		t.Fatal(err)
	}
	f.settled(t, "authd_notices")
	if n := len(f.mp.Messages(t)); n != 0 {
		t.Fatalf("%d mails for notices other senders claimed", n)
	}
	if n := value(t, c.inDoubt); n != 1 {
		t.Errorf("in doubt = %v, want 1", n)
	}
}

func (f *fixture) waitState(t testing.TB, event uuid.UUID, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var state string
		if err := f.pool.QueryRow(context.Background(), `SELECT state FROM notices_sent WHERE event_id = $1`, event).Scan(&state); err != nil {
			t.Fatal(err)
		}
		if state == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("notice of %s is %s, want %s", event, state, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func value(t testing.TB, c prometheus.Counter) float64 { return metric(t, c).GetCounter().GetValue() }

func gauge(t testing.TB, g prometheus.Gauge) float64 { return metric(t, g).GetGauge().GetValue() }

func metric(t testing.TB, m prometheus.Metric) *dto.Metric {
	t.Helper()
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		t.Fatal(err)
	}
	return &out
}

// The lag is the age of the oldest event the consumer has not settled, seen
// from JetStream, so it shows while no instance takes anything.
func TestLagAndBacklogOfUnsettledEvents(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.everyNotice(t)
	f.relayed(t)
	c := f.consumer(t, Config{}, nil)
	ctx := context.Background()
	stream, cons, err := c.consumer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.measureOnce(ctx, stream, cons); err != nil {
		t.Fatal(err)
	}
	if lag, backlog := gauge(t, c.lag), gauge(t, c.backlog); lag <= 0 || backlog != float64(f.n) {
		t.Fatalf("nothing taken yet: lag %v s, backlog %v; want above 0 and %d", lag, backlog, f.n)
	}
	run(t, c)
	f.settled(t, "authd_notices")
	if err := c.measureOnce(ctx, stream, cons); err != nil {
		t.Fatal(err)
	}
	if lag, backlog := gauge(t, c.lag), gauge(t, c.backlog); lag != 0 || backlog != 0 {
		t.Fatalf("all settled: lag %v s, backlog %v; want 0 and 0", lag, backlog)
	}
}

// A send that fails for sure (no SMTP server there) gives the notice back,
// and it goes once a server takes it.
func TestFailedSendIsTriedAgain(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.signIn(t, laptop, "Firefox on Linux", time.Now())
	want := f.everyNotice(t)
	f.relayed(t)
	down := f.consumerVia(t, fmt.Sprintf("smtp://127.0.0.1:%d", testenv.FreePort(t)), Config{}, nil)
	ctx := context.Background()
	_, cons, err := down.consumer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range f.fetchAll(t, cons) {
		o := down.process(ctx, m)
		if err := m.Nak(); err != nil { // at once: the test need not wait out the backoff
			t.Fatal(err)
		}
		if !o.ack && o.retry <= 0 {
			t.Fatalf("%s: %+v", m.Subject(), o)
		}
	}
	var pending int
	if err := f.pool.QueryRow(ctx, `SELECT count(*) FROM notices_sent WHERE state = 'pending'`).Scan(&pending); err != nil {
		t.Fatal(err)
	}
	if pending != len(want) {
		t.Fatalf("%d of %d notices given back after failed sends", pending, len(want))
	}
	if n := value(t, down.failed.WithLabelValues(domain.TypePasswordReset)); n != 1 {
		t.Errorf("failed PasswordReset sends = %v, want 1", n)
	}

	run(t, f.consumer(t, Config{}, nil))
	f.settled(t, "authd_notices")
	if got := f.notices(t); !slices.Equal(got, sorted(want)) {
		t.Fatalf("notices %v, want one each of %v", got, sorted(want))
	}
}

// fetchAll takes every event of the fixture from cons, as an instance that
// pulled them would hold them.
func (f *fixture) fetchAll(t testing.TB, cons jetstream.Consumer) []jetstream.Msg {
	t.Helper()
	fetched, err := cons.Fetch(f.n, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var batch []jetstream.Msg
	for m := range fetched.Messages() {
		batch = append(batch, m)
	}
	if len(batch) != f.n {
		t.Fatalf("took %d messages, want the %d events: %v", len(batch), f.n, fetched.Error())
	}
	return batch
}

// Sweep forgets settled notices older than their events can be mailed, and
// keeps the rest.
func TestSweepForgetsOldSettledNotices(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c := f.consumer(t, Config{}, nil)
	ctx := context.Background()
	kept := map[uuid.UUID]bool{}
	for _, row := range []struct {
		state string
		age   string
		kept  bool
	}{
		{stateSent, "8 days", false}, {stateSkipped, "8 days", false}, {stateInDoubt, "8 days", false},
		{stateSent, "6 days", true}, {statePending, "8 days", true}, {stateSending, "8 days", true},
	} {
		id := uuid.New()
		if _, err := f.pool.Exec(ctx, `INSERT INTO notices_sent (event_id, event_type, user_id, state, updated_at)
			VALUES ($1, 'PasswordReset', $2, $3, now() - $4::interval)`, id, f.user, row.state, row.age); err != nil {
			t.Fatal(err)
		}
		kept[id] = row.kept
	}
	if n, err := c.Sweep(ctx); err != nil || n != 3 {
		t.Fatalf("Sweep = %d, %v; want 3 rows", n, err)
	}
	for id, want := range kept {
		var there bool
		if err := f.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM notices_sent WHERE event_id = $1)`, id).Scan(&there); err != nil {
			t.Fatal(err)
		}
		if there != want {
			t.Errorf("row %s kept = %v, want %v", id, there, want)
		}
	}
}

// Of several senders claiming one event at once, one holds the claim; the
// others are told to come back when its lease may be over.
func TestConcurrentClaimsOneWins(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c := f.consumer(t, Config{}, nil)
	e := eventstore.Event{ID: uuid.New(), Type: domain.TypePasswordReset, UserID: f.user}
	results := make([]claimed, 8)
	errs := make([]error, len(results))
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() {
			results[i], errs[i] = claim(context.Background(), c, e, uuid.New(), func(pgx.Tx) (bool, error) { return true, nil })
		})
	}
	wg.Wait()
	mine := 0
	for i, r := range results {
		switch {
		case errs[i] != nil:
			t.Fatal(errs[i])
		case r.mine:
			mine++
		case r.state != stateSending || r.wait <= 0:
			t.Errorf("a claim that lost: %+v; want told to wait for the sending one", r)
		}
	}
	if mine != 1 {
		t.Fatalf("%d senders hold the claim, want 1", mine)
	}
}

// A send cut off by its deadline may have reached the server: it is in
// doubt and never sent again, by this instance or another.
func TestTimedOutSendIsNeverSentAgain(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	now := time.Now()
	reset := f.add(t, domain.UserStream(f.user), stranger, now, &domain.PasswordReset{UserID: f.user, At: now})[0]
	f.relayed(t)
	// A server that takes the connection and never says a word.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { conn.Close() })
		}
	}()
	stalled := f.consumerVia(t, "smtp://"+ln.Addr().String(), Config{SendTimeout: 200 * time.Millisecond}, nil)
	ctx := context.Background()
	_, cons, err := stalled.consumer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range f.fetchAll(t, cons) {
		if o := stalled.process(ctx, m); !o.ack {
			t.Fatalf("%s: %+v; want acked", m.Subject(), o)
		}
		if err := m.Nak(); err != nil { // delivered again at once, as after a lost ack
			t.Fatal(err)
		}
	}
	f.waitState(t, reset, stateInDoubt)
	if n := value(t, stalled.inDoubt); n != 1 {
		t.Errorf("in doubt = %v, want 1", n)
	}

	run(t, f.consumer(t, Config{}, nil))
	f.settled(t, "authd_notices")
	if n := len(f.mp.Messages(t)); n != 0 {
		t.Fatalf("%d mails for a notice in doubt", n)
	}
}

// An erasure deletes messages from the stream that the consumer may not have
// read yet: it goes on past them, and mails about the rest.
func TestTheConsumerGoesOnPastDeletedMessages(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.signIn(t, laptop, "Firefox on Linux", time.Now()) // right after signing up: none
	want := f.everyNotice(t)
	f.relayed(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := f.bus.EnsureStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The PasswordReset and TotpEnabled the consumer would read first, after
	// the signup's two messages and the sign-in, and the RefreshTokenReused
	// further on.
	for _, seq := range []uint64{4, 5, 11} {
		if err := stream.SecureDeleteMsg(ctx, seq); err != nil {
			t.Fatal(err)
		}
	}
	want = slices.DeleteFunc(want, func(typ string) bool {
		return typ == domain.TypePasswordReset || typ == domain.TypeTotpEnabled || typ == domain.TypeRefreshTokenReused
	})
	run(t, f.consumer(t, Config{}, nil))
	f.settled(t, "authd_notices")
	if got := f.notices(t); !slices.Equal(got, sorted(want)) {
		t.Fatalf("notices %v, want one each of %v", got, sorted(want))
	}
}
