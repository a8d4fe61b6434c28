package projections

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/testenv"
)

// appendFor appends events to stream as the user's, caused by a request from
// ip with the user agent ua, as commands do.
func (h *harness) appendFor(t *testing.T, user uuid.UUID, ip, ua, stream string, events ...domain.Event) eventstore.Cursor {
	t.Helper()
	out := make([]eventstore.Event, len(events))
	for i, e := range events {
		enc, err := eventstore.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		enc.UserID, enc.Metadata, enc.OccurredAt = user, eventstore.Metadata{IP: ip, UserAgent: ua}, time.Now()
		out[i] = enc
	}
	c, err := h.store.Append(context.Background(), stream, eventstore.AnyVersion, out...)
	if err != nil {
		t.Fatal(err)
	}
	return c.Last
}

// activityPage reads a page and fails the test on an error.
func activityPage(t *testing.T, h *harness, user uuid.UUID, before *eventstore.Cursor, limit int) ActivityPage {
	t.Helper()
	page, err := UserActivity(context.Background(), h.pool, h.store, user, before, limit)
	if err != nil {
		t.Fatal(err)
	}
	return page
}

// Every listed kind of event becomes a row with its own fields, newest
// first, whether the read model has applied it yet or only the log has it,
// and a rebuild of the read model equals the live one.
func TestActivityListsWhatHappenedToTheAccount(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testenv.NATS(t, testenv.EmbeddedNATS))
	user, other, session := uuid.New(), uuid.New(), uuid.New()
	const ip, ua, device = "203.0.113.7", "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0", "Firefox on Linux"
	signIn := &domain.SessionStarted{SessionID: session, UserID: user, AMR: []string{"pwd", "otp"},
		Client: domain.Client{IP: ip, UserAgent: ua, Device: device}}
	h.appendFor(t, user, ip, ua, domain.SessionStream(session), signIn)
	h.appendFor(t, user, ip, ua, domain.SessionStream(session), &domain.SessionRefreshed{SessionID: session, Generation: 1})
	h.appendFor(t, user, ip, ua, domain.SessionStream(session), &domain.Reauthenticated{SessionID: session, UserID: user, AMR: []string{"pwd", "mfa"}, Generation: 2,
		Client: domain.Client{IP: ip, UserAgent: ua, Device: device}})
	h.appendFor(t, other, "198.51.100.1", "curl/8", domain.SessionStream(uuid.New()), &domain.SessionStarted{SessionID: uuid.New(), UserID: other, AMR: []string{"pwd"}})
	h.appendFor(t, user, "192.0.2.9", "curl/8", domain.LoginStream(user), &domain.LoginFailed{UserID: user, Reason: "wrong_password"})
	h.appendFor(t, user, ip, ua, domain.TwoFactorStream(user), &domain.TotpEnabled{UserID: user, BackupCodes: 10},
		&domain.BackupCodesRegenerated{UserID: user, BackupCodes: 10}, &domain.TotpDisabled{UserID: user, Method: "totp"})
	passkey := uuid.New()
	h.appendFor(t, user, ip, ua, domain.UserStream(user), &domain.EmailVerified{UserID: user}, &domain.GoogleLinked{UserID: user, Subject: "g"},
		&domain.PasskeyAdded{PasskeyID: passkey, UserID: user, Name: "key"}, &domain.PasskeyRemoved{PasskeyID: passkey, UserID: user},
		&domain.PasswordReset{UserID: user, At: time.Now()}, &domain.PasswordChanged{UserID: user},
		&domain.EmailChangeRequested{UserID: user, Email: "a@example.com", NewEmail: "b@example.com"},
		&domain.EmailChanged{UserID: user, OldEmail: "a@example.com", NewEmail: "b@example.com"}, &domain.ProfileUpdated{UserID: user})
	h.appendFor(t, user, "192.0.2.9", "curl/8", domain.CodeGuessingStream(user, time.Now()), &domain.CodeGuessingDetected{UserID: user, Kind: "totp", Failures: 20})
	h.appendFor(t, user, "192.0.2.9", "curl/8", domain.SessionStream(session), &domain.RefreshTokenReused{SessionID: session, Generation: 0, Current: 1})
	last := h.appendFor(t, user, "192.0.2.9", "curl/8", domain.SessionStream(session), &domain.SessionRevoked{SessionID: session, UserID: user, Reason: domain.RevokedByReuse})

	// Nothing applied yet: the log answers.
	fromLog := activityPage(t, h, user, nil, MaxActivityLimit)
	var types []string
	for _, v := range slices.Backward(fromLog.Events) {
		types = append(types, v.Type)
	}
	if want := (Activity{}).types(); !slices.Equal(slices.Sorted(slices.Values(types)), slices.Sorted(slices.Values(want))) {
		t.Fatalf("activity lists %q, want each of %q once (SessionRefreshed and the other user's events left out)", types, want)
	}
	if fromLog.Next != nil {
		t.Fatalf("a page holding everything has next %q", *fromLog.Next)
	}
	for _, v := range fromLog.Events {
		want := ActivityView{ID: v.ID, Type: v.Type, OccurredAt: v.OccurredAt, IP: "192.0.2.9", UserAgent: "curl/8", cursor: v.cursor}
		switch v.Type {
		case domain.TypeSessionStarted:
			want.IP, want.UserAgent, want.Device, want.SessionID, want.Method = ip, ua, device, &session, []string{"pwd", "otp"}
		case domain.TypeReauthenticated:
			want.IP, want.UserAgent, want.Device, want.SessionID, want.Method = ip, ua, device, &session, []string{"pwd", "mfa"}
		case domain.TypeSessionRevoked, domain.TypeRefreshTokenReused:
			want.Device, want.SessionID = device, &session // the session's, from its sign-in
		case domain.TypeLoginFailed, domain.TypeCodeGuessingDetected:
		default:
			want.IP, want.UserAgent = ip, ua
		}
		if got, wantJSON := mustJSON(t, v), mustJSON(t, want); got != wantJSON {
			t.Errorf("%s listed as %s, want %s", v.Type, got, wantJSON)
		}
	}

	h.startRelay(t)
	r := h.startRunner(t)
	waitFor(t, r, Activity{}.Name(), last)
	var rows int
	if err := h.pool.QueryRow(context.Background(), `SELECT count(*) FROM activity WHERE user_id = $1`, user).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != len(fromLog.Events) {
		t.Fatalf("the read model holds %d rows of the user, want %d", rows, len(fromLog.Events))
	}
	if got := activityPage(t, h, user, nil, MaxActivityLimit); mustJSON(t, got) != mustJSON(t, fromLog) {
		t.Fatalf("the read model lists\n%s\nthe log listed\n%s", mustJSON(t, got), mustJSON(t, fromLog))
	}

	if _, err := Rebuild(context.Background(), h.pool, h.store, Activity{}, 3, nil); err != nil {
		t.Fatal(err)
	}
	cmp, err := Compare(context.Background(), h.pool, h.store, Activity{}, 0, 3)
	if err != nil {
		t.Fatal(err)
	}
	if !cmp.Consistent() || cmp.Tables[0].LiveRows != int64(len(fromLog.Events)+1) {
		t.Fatalf("the rebuilt read model differs from the log: %+v", cmp)
	}
	if got := activityPage(t, h, user, nil, MaxActivityLimit); mustJSON(t, got) != mustJSON(t, fromLog) {
		t.Fatalf("after a rebuild the read model lists\n%s\nthe log listed\n%s", mustJSON(t, got), mustJSON(t, fromLog))
	}
}

// Pages of two walk the whole history once, newest first, each ending with
// the cursor of the next, also when the newest part of the history is only
// in the log: the read model stopped before it.
func TestActivityPagesWalkTheHistoryOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testenv.NATS(t, testenv.EmbeddedNATS))
	user := uuid.New()
	fail := func() eventstore.Cursor {
		return h.appendFor(t, user, "192.0.2.1", "ua", domain.LoginStream(user), &domain.LoginFailed{UserID: user})
	}
	h.startRelay(t)
	r := NewRunner(h.pool, h.bus, All(), Config{Backoff: 50 * time.Millisecond}, testenv.Logger(t), nil)
	stop := background(t, r.Run)
	fail()
	fail()
	waitFor(t, r, Activity{}.Name(), fail())
	stop()
	fail()
	fail()
	fail()
	all := activityPage(t, h, user, nil, MaxActivityLimit)
	var ids []uuid.UUID
	for _, v := range slices.Backward(all.Events) {
		ids = append(ids, v.ID)
	}
	rows, err := h.pool.Query(context.Background(), `SELECT id FROM events ORDER BY tx_id, position`)
	if err != nil {
		t.Fatal(err)
	}
	logged, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids, logged) {
		t.Fatalf("listed oldest first %v, the log holds %v", ids, logged)
	}
	slices.Reverse(ids)
	var walked []uuid.UUID
	var before *eventstore.Cursor
	for pages := 0; ; pages++ {
		if pages > 3 {
			t.Fatalf("paging did not end after 3 pages; walked %v", walked)
		}
		page := activityPage(t, h, user, before, 2)
		for _, v := range page.Events {
			walked = append(walked, v.ID)
		}
		if page.Next == nil {
			break
		}
		c, err := ParseActivityCursor(*page.Next)
		if err != nil {
			t.Fatal(err)
		}
		before = &c
	}
	if !slices.Equal(walked, ids) {
		t.Fatalf("pages of 2 walked %v, want %v", walked, ids)
	}
}

func TestActivityCursorsOnlyParseWhenWellFormed(t *testing.T) {
	t.Parallel()
	c := eventstore.Cursor{Tx: 1234, Position: 99}
	if got, err := ParseActivityCursor(activityCursor(c)); err != nil || got != c {
		t.Fatalf("a cursor handed out parses to %v, %v; want %v", got, err, c)
	}
	for _, bad := range []string{"", "abc", "!!!!", activityCursor(c) + "A", activityCursor(eventstore.Cursor{Tx: 1})} {
		if _, err := ParseActivityCursor(bad); !errors.Is(err, ErrBadCursor) {
			t.Errorf("cursor %q: err %v, want ErrBadCursor", bad, err)
		}
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
