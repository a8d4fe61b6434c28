package eventstore

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/internal/seal"
	"github.com/authd/authd/internal/testenv"
)

// The personal data of the tests below, each distinct enough to be found
// in a raw row.
const (
	sealEmail = "ada.lovelace@example.com"
	sealName  = "Ada Lovelace"
	sealIP    = "198.51.100.73"
	sealAgent = "Mozilla/5.0 (sealing test agent)"
)

// sealStores are two stores over one log and master key: each has its own
// cache of data keys, so that a read by the other opens keys from the row.
func sealStores(t *testing.T) (a, b *Store, pool *pgxpool.Pool, sealer *seal.Sealer) {
	t.Helper()
	pool, _ = testenv.Database(t)
	sealer = testenv.Sealer(t)
	return NewStore(pool, sealer, nil), NewStore(pool, sealer, nil), pool, sealer
}

// owned encodes e as user's event, with personal metadata.
func owned(t *testing.T, e domain.Event, user uuid.UUID) Event {
	t.Helper()
	enc, err := Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	enc.UserID = user
	enc.Metadata = Metadata{IP: sealIP, UserAgent: sealAgent, RequestID: "req-seal"}
	return enc
}

func registered(user uuid.UUID) *domain.UserRegistered {
	return &domain.UserRegistered{UserID: user, TenantID: uuid.New(), Email: sealEmail, Name: sealName, TenantName: sealName + "'s org"}
}

// readPaths reads stream through every read of the store, each giving the
// stream's events (ReadLog's and ReadLogIn's: those of the stream).
func readPaths(t *testing.T, s *Store, pool *pgxpool.Pool, stream string, want int) map[string][]Event {
	t.Helper()
	ctx := context.Background()
	out := map[string][]Event{}
	var err error
	if out["Load"], err = s.Load(ctx, stream); err != nil {
		t.Fatal(err)
	}
	several, err := s.LoadStreams(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	out["LoadStreams"] = several[0]
	if several, err = s.LoadStreamsAfter(ctx, []Statement{{SQL: `SELECT 1`}}, stream); err != nil {
		t.Fatal(err)
	}
	out["LoadStreamsAfter"] = several[0]
	if out["LoadEnds"], err = s.LoadEnds(ctx, stream, 10); err != nil {
		t.Fatal(err)
	}
	if out["ReadStream"], err = s.ReadStream(ctx, stream); err != nil {
		t.Fatal(err)
	}
	ofStream := func(all []Event) []Event {
		var mine []Event
		for _, e := range all {
			if e.StreamID == stream {
				mine = append(mine, e)
			}
		}
		return mine
	}
	out["ReadLog"] = ofStream(readAtLeast(t, s, Cursor{}, 1000, want))
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	in, err := s.ReadLogIn(ctx, tx, Cursor{}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	out["ReadLogIn"] = ofStream(in)
	for path, events := range out {
		if len(events) != want {
			t.Fatalf("%s read %d events of %s, want %d", path, len(events), stream, want)
		}
	}
	return out
}

// Personal fields and the metadata's ip and user agent are nowhere in the
// clear in the event's row, nor is the data key in user_keys; the request
// id and the public fields are.
func TestPersonalFieldsAreNotInTheClearInTheRow(t *testing.T) {
	t.Parallel()
	s, _, pool, _ := sealStores(t)
	ctx := context.Background()
	user := uuid.New()
	if _, err := s.Append(ctx, domain.UserStream(user), 0, owned(t, registered(user), user)); err != nil {
		t.Fatal(err)
	}
	var row, data, meta string
	var personal []byte
	if err := pool.QueryRow(ctx, `SELECT e::text, data::text, metadata::text, personal FROM events e`).Scan(&row, &data, &meta, &personal); err != nil {
		t.Fatal(err)
	}
	for _, clear := range []string{sealEmail, sealName, sealIP, sealAgent, "Lovelace", "198.51.100"} {
		if strings.Contains(row, clear) || strings.Contains(row, hex.EncodeToString([]byte(clear))) {
			t.Errorf("the events row holds %q in the clear: %s", clear, row)
		}
	}
	if !strings.Contains(data, user.String()) || strings.Contains(data, `"email"`) || strings.Contains(data, `"name"`) {
		t.Errorf("data %s: want the public fields only", data)
	}
	if meta != `{"request_id": "req-seal"}` {
		t.Errorf("metadata %s: want the request id only", meta)
	}
	if len(personal) == 0 {
		t.Fatal("no personal part stored")
	}
	var keys int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM user_keys WHERE user_id = $1 AND sealed_key IS NOT NULL AND kid IS NOT NULL`, user).Scan(&keys); err != nil || keys != 1 {
		t.Fatalf("%d data keys for the user (%v), want 1", keys, err)
	}
}

// Every read gives events back as they were appended: personal fields in
// the data, ip and user agent in the metadata, whether the key is cached
// (the store that appended) or opened from its row (another).
func TestEveryReadGivesPersonalFieldsBack(t *testing.T) {
	t.Parallel()
	s, other, pool, _ := sealStores(t)
	ctx := context.Background()
	user := uuid.New()
	name := "Countess of Lovelace"
	started := &domain.SessionStarted{SessionID: uuid.New(), UserID: user, AMR: []string{"pwd"},
		Client: domain.Client{IP: sealIP, UserAgent: sealAgent, Device: "Firefox on Linux"}}
	in := []domain.Event{registered(user), &domain.EmailVerified{UserID: user}, &domain.ProfileUpdated{UserID: user, Name: &name}, started}
	appended := make([]Event, len(in))
	for i, e := range in {
		appended[i] = owned(t, e, user)
	}
	if _, err := s.Append(ctx, domain.UserStream(user), 0, appended...); err != nil {
		t.Fatal(err)
	}
	for _, reader := range []*Store{s, other} {
		for path, events := range readPaths(t, reader, pool, domain.UserStream(user), len(in)) {
			for i, e := range events {
				got, err := Decode(e)
				if err != nil {
					t.Fatal(err)
				}
				if want, _ := json.Marshal(in[i]); mustMarshal(t, got) != string(want) {
					t.Errorf("%s: event %d is %s, want %s", path, i, mustMarshal(t, got), want)
				}
				if e.Metadata != (Metadata{IP: sealIP, UserAgent: sealAgent, RequestID: "req-seal"}) || e.Erased || e.UserID != user {
					t.Errorf("%s: event %d has metadata %+v, erased %v, user %s", path, i, e.Metadata, e.Erased, e.UserID)
				}
			}
		}
	}
}

func mustMarshal(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// After Shred commits (in a Change's Also, as an erasure does), every read
// returns the user's events Erased, with their personal fields and the
// metadata's ip and user agent empty, and everything else as it was; the
// published envelope says erased. Both a store that had the key cached and
// one that never saw it read so.
func TestAfterShredEveryReadReturnsTheEventsErased(t *testing.T) {
	t.Parallel()
	s, other, pool, _ := sealStores(t)
	ctx := context.Background()
	user, tenant := uuid.New(), uuid.New()
	reg := registered(user)
	reg.TenantID = tenant
	first := owned(t, reg, user)
	first.TenantID = tenant
	if _, err := s.Append(ctx, domain.UserStream(user), 0, first); err != nil {
		t.Fatal(err)
	}
	// A reader that had the key cached before the erasure.
	if _, err := other.Load(ctx, domain.UserStream(user)); err != nil {
		t.Fatal(err)
	}
	deleted := owned(t, &domain.AccountDeleted{UserID: user, TenantID: tenant}, user)
	deleted.TenantID = tenant
	if _, err := s.Write(ctx, Change{
		Appends: []StreamAppend{{Stream: domain.UserStream(user), Expected: 1, Events: []Event{deleted}}},
		Also:    []Statement{Shred(user)},
	}); err != nil {
		t.Fatal(err)
	}
	fresh := NewStore(pool, s.sealer, nil)
	for _, reader := range []*Store{s, other, fresh} {
		for path, events := range readPaths(t, reader, pool, domain.UserStream(user), 2) {
			for _, e := range events {
				if !e.Erased || e.Metadata != (Metadata{RequestID: "req-seal"}) || e.UserID != user || e.TenantID != tenant {
					t.Errorf("%s: %s read erased %v, metadata %+v, user %s, tenant %s: want erased with ids and request id only",
						path, e.Type, e.Erased, e.Metadata, e.UserID, e.TenantID)
				}
			}
			got, err := Decode(events[0])
			if err != nil {
				t.Fatal(err)
			}
			if r := got.(*domain.UserRegistered); r.Email != "" || r.Name != "" || r.TenantName != "" || r.UserID != user || r.TenantID != tenant {
				t.Errorf("%s: erased registration decodes to %+v", path, r)
			}
		}
	}
	erased := readAtLeast(t, fresh, Cursor{}, 10, 2)[0]
	body, err := erased.MarshalEnvelope()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(body), `"erased":true`) || strings.Contains(string(body), sealEmail) {
		t.Errorf("envelope of an erased event: %s", body)
	}
	wire, err := FromMessage(nats.Header{HeaderTx: {erased.Commit.txText()}}, body)
	if err != nil || !wire.Erased {
		t.Errorf("from NATS: erased %v (%v)", wire.Erased, err)
	}
	live, err := (Event{ID: uuid.New(), Type: "X", Data: []byte(`{}`)}).MarshalEnvelope()
	if err != nil || strings.Contains(string(live), "erased") {
		t.Errorf("envelope of a live event says erased: %s (%v)", live, err)
	}
}

// An erased user's tombstone is never replaced: an append for them, from a
// store that knew nothing of them, stores no personal part and makes no key.
// A store that saw the erasure drops the personal part at once.
func TestATombstonedUserGetsNoNewKey(t *testing.T) {
	t.Parallel()
	s, other, pool, _ := sealStores(t)
	ctx := context.Background()
	user := uuid.New()
	if _, err := s.Write(ctx, Change{Also: []Statement{Shred(user)}}); err != nil {
		t.Fatal(err)
	}
	for i, st := range []*Store{other, other, s} {
		if _, err := st.Append(ctx, domain.UserStream(user), AnyVersion, owned(t, registered(user), user)); err != nil {
			t.Fatalf("append %d for an erased user: %v", i+1, err)
		}
	}
	var rows int
	var clear bool
	if err := pool.QueryRow(ctx, `SELECT count(*), bool_and(sealed_key IS NULL AND kid IS NULL AND erased_at IS NOT NULL) FROM user_keys`).Scan(&rows, &clear); err != nil {
		t.Fatal(err)
	}
	if rows != 1 || !clear {
		t.Fatalf("user_keys has %d rows, tombstone kept %v: want the tombstone alone", rows, clear)
	}
	var sealed int
	var dump string
	if err := pool.QueryRow(ctx, `SELECT count(personal), string_agg(e::text, ' ') FROM events e`).Scan(&sealed, &dump); err != nil {
		t.Fatal(err)
	}
	if sealed != 0 || strings.Contains(dump, sealEmail) || strings.Contains(dump, sealIP) {
		t.Fatalf("%d personal parts stored for an erased user; rows: %s", sealed, dump)
	}
	events, err := s.Load(ctx, domain.UserStream(user))
	if err != nil || len(events) != 3 || events[0].Metadata.IP != "" {
		t.Fatalf("load: %+v (%v)", events, err)
	}
}

// However many stores append a new user's first events at once, the user
// gets one key, and every event opens with it: a second key cannot be
// made, and a store that lost the race seals again with the winner's.
func TestAUserNeverGetsASecondKey(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Database(t)
	sealer := testenv.Sealer(t)
	ctx := context.Background()
	user := uuid.New()
	stores := make([]*Store, 6)
	for i := range stores {
		stores[i] = NewStore(pool, sealer, nil)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*len(stores))
	for _, st := range stores {
		for range 2 { // two changes of one store in one group commit too
			wg.Go(func() {
				_, err := st.Append(ctx, domain.LoginStream(user), AnyVersion, owned(t, &domain.LoginFailed{UserID: user, Reason: "wrong_password"}, user))
				errs <- err
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	var keys int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM user_keys WHERE user_id = $1`, user).Scan(&keys); err != nil || keys != 1 {
		t.Fatalf("%d keys (%v), want 1", keys, err)
	}
	events, err := NewStore(pool, sealer, nil).Load(ctx, domain.LoginStream(user))
	if err != nil || len(events) != 2*len(stores) {
		t.Fatalf("loaded %d events (%v)", len(events), err)
	}
	for _, e := range events {
		if e.Metadata.IP != sealIP {
			t.Fatalf("event %s read back with ip %q", e.ID, e.Metadata.IP)
		}
	}
	// And by hand: the key is never replaced.
	if _, err := pool.Exec(ctx, `INSERT INTO user_keys (user_id, kid, sealed_key) VALUES ($1, 'k', '\x00')`, user); err == nil {
		t.Fatal("a second key was inserted")
	}
}

// An event with personal data must name its owner: whose key would seal it
// otherwise, and whose erasure would erase it?
func TestPersonalDataWithoutAnOwnerIsRefused(t *testing.T) {
	t.Parallel()
	s, _, _, _ := sealStores(t)
	ctx := context.Background()
	e := owned(t, &domain.TenantCreated{TenantID: uuid.New(), Name: "Analytical Engines", OwnerID: uuid.New()}, uuid.Nil)
	if _, err := s.Append(ctx, "tenant-x", 0, e); err == nil || !strings.Contains(err.Error(), "names no user") {
		t.Fatalf("append without an owner: %v", err)
	}
	noMeta := Event{Type: "SomethingPublic", Data: []byte(`{"n":1}`), Metadata: Metadata{RequestID: "r"}}
	if _, err := s.Append(ctx, "public-x", 0, noMeta); err != nil {
		t.Fatalf("an event with nothing personal and no owner: %v", err)
	}
}

// A store without the master key (authctl's status) reads events without
// their personal fields, and appends none.
func TestAStoreWithoutTheMasterKeyLeavesPersonalFieldsOut(t *testing.T) {
	t.Parallel()
	s, _, pool, _ := sealStores(t)
	ctx := context.Background()
	user := uuid.New()
	if _, err := s.Append(ctx, domain.UserStream(user), 0, owned(t, registered(user), user)); err != nil {
		t.Fatal(err)
	}
	blind := NewStore(pool, nil, nil)
	events, err := blind.ReadStream(ctx, domain.UserStream(user))
	if err != nil || len(events) != 1 {
		t.Fatalf("read %d (%v)", len(events), err)
	}
	if e := events[0]; e.Metadata.IP != "" || strings.Contains(string(e.Data), sealEmail) || e.Erased {
		t.Fatalf("read without the master key: %+v", e)
	}
	if _, err := blind.Append(ctx, domain.UserStream(user), 1, owned(t, &domain.EmailVerified{UserID: user}, user)); err == nil {
		t.Fatal("a store without the master key appended personal data")
	}
}

// A personal part cannot be moved to another event: the event id is its
// associated data.
func TestAPersonalPartOpensOnlyInItsOwnEvent(t *testing.T) {
	t.Parallel()
	s, other, pool, _ := sealStores(t)
	ctx := context.Background()
	user := uuid.New()
	c, err := s.Append(ctx, domain.UserStream(user), 0, owned(t, registered(user), user), owned(t, &domain.EmailVerified{UserID: user}, user))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE events SET personal = (SELECT personal FROM events WHERE id = $1) WHERE id = $2`, c.Events[0].ID, c.Events[1].ID); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Load(ctx, domain.UserStream(user)); err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("a moved personal part opened: %v", err)
	}
}

// The store that commits an erasure forgets the user's data key it held
// opened: what it appends for the user afterwards (a racing failed login,
// say) is not sealed under the destroyed key, its personal fields dropped.
func TestTheErasingStoreForgetsTheKey(t *testing.T) {
	t.Parallel()
	s, _, pool, _ := sealStores(t)
	ctx := context.Background()
	user := uuid.New()
	appendFor(t, s, user, owned(t, registered(user), user)) // the key is now cached
	if _, err := s.Write(ctx, Change{Also: []Statement{Shred(user)}}); err != nil {
		t.Fatal(err)
	}
	// Appended without loading the user first, which would read the
	// tombstone: the store decides on its own cache.
	name := sealName
	if _, err := s.Write(ctx, Change{Appends: []StreamAppend{{Stream: "user-" + user.String(), Expected: 1,
		Events: []Event{owned(t, &domain.ProfileUpdated{UserID: user, Name: &name}, user)}}}}); err != nil {
		t.Fatal(err)
	}
	if k, ok := s.keys.Get(user); !ok || k.aead != nil {
		t.Error("the store still holds the erased user's data key opened")
	}
	var sealed int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE user_id = $1 AND version = 2 AND personal IS NOT NULL`, user).Scan(&sealed); err != nil {
		t.Fatal(err)
	}
	if sealed != 0 {
		t.Error("an event appended after the erasure was sealed under the destroyed key")
	}
}
