package domain

import (
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
)

const week = 7 * 24 * time.Hour

func startedSession(t0 time.Time) *Session {
	s := &Session{}
	s.Apply(&SessionStarted{SessionID: uuid.New(), UserID: uuid.New(), AMR: []string{"pwd"}}, t0)
	return s
}

func TestRefreshRotatesTheCurrentToken(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	s := startedSession(t0)
	d, err := s.Refresh(0, t0.Add(time.Minute), RefreshRules{TTL: week, Grace: 10 * time.Second}, Client{})
	if err != nil || !d.Answer || len(d.Events) != 1 {
		t.Fatalf("refresh of the current token = %+v, %v", d, err)
	}
	if r, ok := d.Events[0].(*SessionRefreshed); !ok || r.Generation != 1 {
		t.Fatalf("event %#v, want SessionRefreshed to generation 1", d.Events[0])
	}
}

func TestRefreshGraceAndReuse(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	rules := RefreshRules{TTL: week, Grace: 10 * time.Second}
	grace := rules.Grace
	s := startedSession(t0)
	rotated := t0.Add(time.Hour)
	s.Apply(&SessionRefreshed{Generation: 1}, rotated)

	d, err := s.Refresh(0, rotated.Add(grace), rules, Client{})
	if err != nil || !d.Answer || len(d.Events) != 0 {
		t.Fatalf("previous token within the grace = %+v, %v; want the current pair, no events", d, err)
	}
	d, err = s.Refresh(0, rotated.Add(grace+time.Millisecond), rules, Client{})
	if err != nil || d.Answer || len(d.Events) != 2 {
		t.Fatalf("previous token after the grace = %+v, %v; want reuse detection", d, err)
	}
	if _, ok := d.Events[1].(*SessionRevoked); !ok {
		t.Fatalf("reuse must revoke the session, got %#v", d.Events[1])
	}
	if d, _ := s.Refresh(0, rotated, RefreshRules{TTL: week}, Client{}); d.Answer {
		t.Fatal("with the grace off, a rotated-away token answered")
	}
	s.Apply(&SessionRefreshed{Generation: 2}, rotated.Add(time.Second))
	if d, _ := s.Refresh(0, rotated.Add(time.Second), rules, Client{}); d.Answer {
		t.Fatal("a token two rotations old answered within the grace")
	}
}

func TestRefreshRefusals(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	s := startedSession(t0)
	rules := RefreshRules{TTL: week, Grace: time.Second}
	if _, err := s.Refresh(5, t0, rules, Client{}); !errors.Is(err, ErrRefreshInvalid) {
		t.Fatalf("a generation never issued: %v", err)
	}
	if _, err := s.Refresh(0, t0.Add(week+time.Second), rules, Client{}); !errors.Is(err, ErrRefreshInvalid) {
		t.Fatalf("an expired token: %v", err)
	}
	// The configured lifetime is the one that counts.
	short := RefreshRules{TTL: time.Hour, Grace: time.Second}
	if d, err := s.Refresh(0, t0.Add(time.Hour), short, Client{}); err != nil || !d.Answer {
		t.Fatalf("a token at the end of a 1 h lifetime = %+v, %v; want it rotated", d, err)
	}
	if _, err := s.Refresh(0, t0.Add(time.Hour+time.Second), short, Client{}); !errors.Is(err, ErrRefreshInvalid) {
		t.Fatalf("a token past a 1 h lifetime: %v", err)
	}
	s.Apply(&SessionRevoked{}, t0)
	if _, err := s.Refresh(0, t0, rules, Client{}); !errors.Is(err, ErrRefreshInvalid) {
		t.Fatalf("a revoked session: %v", err)
	}
	if (&Session{}).Revoke("x") != nil || s.Revoke("x") != nil {
		t.Fatal("revoking a missing or revoked session made events")
	}
}

// The ends of a long stream rebuild the same session as the whole stream.
func TestSessionFromTheEndsOfItsStream(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	started := &SessionStarted{SessionID: uuid.New(), UserID: uuid.New(), AMR: []string{"pwd"}}
	stream := []Event{started}
	for g := uint64(1); g <= 50; g++ {
		stream = append(stream, &SessionRefreshed{Generation: g})
	}
	for _, end := range [][]Event{
		nil,
		{&SessionRevoked{}},
		{&RefreshTokenReused{Generation: 3, Current: 50}, &SessionRevoked{}},
	} {
		all := append(append([]Event{}, stream...), end...)
		whole := &Session{}
		for i, e := range all {
			whole.Apply(e, t0.Add(time.Duration(i)*time.Minute))
		}
		ends := &Session{}
		for i, e := range all {
			if i == 0 || i >= len(all)-SessionStateTail {
				ends.Apply(e, t0.Add(time.Duration(i)*time.Minute))
			}
		}
		ends.Version = whole.Version
		if ends.ID != whole.ID || ends.Generation != whole.Generation || !ends.RotatedAt.Equal(whole.RotatedAt) || ends.Revoked != whole.Revoked || !ends.StartedAt.Equal(whole.StartedAt) {
			t.Fatalf("from the ends %+v, from the whole stream %+v", ends, whole)
		}
	}
}

// A refresh token's life has one rule: the session lists as active (Lives,
// and LiveSince for a query) exactly while Refresh still rotates its token,
// the last instant included.
func TestRefreshTokenLifeIsOneRule(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	rules := RefreshRules{TTL: time.Hour}
	for _, now := range []time.Time{t0, t0.Add(time.Hour - time.Microsecond), t0.Add(time.Hour), t0.Add(time.Hour + time.Microsecond)} {
		s := startedSession(t0)
		d, err := s.Refresh(0, now, rules, Client{})
		rotates := err == nil && d.Answer
		since := rules.LiveSince(now)
		listed := !t0.Before(since)
		if lives := rules.Lives(t0, now); lives != rotates || listed != rotates {
			t.Errorf("at issue+%v: Refresh rotates %v, Lives %v, listed from LiveSince %v; want them to agree", now.Sub(t0), rotates, lives, listed)
		}
	}
}

// A re-authentication moves the session's proof and rotates its token; a
// session rebuilt from its first event and its last SessionStateTail ones
// still has the proof after the Reauthenticated event has left the tail.
func TestReauthenticateMovesTheProofThroughRefreshes(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	rules := RefreshRules{TTL: week}
	s := startedSession(t0)
	if !s.AuthTime.Equal(t0) {
		t.Fatalf("a new session's auth time %v, want its start %v", s.AuthTime, t0)
	}
	first := &SessionStarted{SessionID: s.ID, UserID: s.UserID, AMR: s.AMR}
	events, err := s.Reauthenticate([]string{"user"}, Client{})
	if err != nil || len(events) != 1 {
		t.Fatalf("reauthenticate = %v, %v", events, err)
	}
	at := t0.Add(time.Hour)
	s.Apply(events[0], at)
	if !s.AuthTime.Equal(at) || s.Generation != 1 || s.AMR[0] != "user" {
		t.Fatalf("after re-authenticating: %+v", s)
	}
	log := []Event{first, events[0]}
	for i := range SessionStateTail + 1 {
		d, err := s.Refresh(s.Generation, at.Add(time.Duration(i+1)*time.Minute), rules, Client{})
		if err != nil || len(d.Events) != 1 {
			t.Fatalf("refresh %d = %+v, %v", i+1, d, err)
		}
		s.Apply(d.Events[0], at.Add(time.Duration(i+1)*time.Minute))
		log = append(log, d.Events[0])
	}
	ends := append([]Event{log[0]}, log[len(log)-SessionStateTail:]...)
	loaded := &Session{}
	for _, e := range ends {
		loaded.Apply(e, t0)
	}
	if !loaded.AuthTime.Equal(at) || loaded.AMR[0] != "user" || loaded.Generation != s.Generation {
		t.Fatalf("rebuilt from the ends: auth time %v amr %v generation %d; want %v [user] %d", loaded.AuthTime, loaded.AMR, loaded.Generation, at, s.Generation)
	}

	s.Apply(&SessionRevoked{}, at)
	if _, err := s.Reauthenticate([]string{"pwd"}, Client{}); !errors.Is(err, ErrSessionEnded) {
		t.Fatalf("a revoked session re-authenticated: %v", err)
	}
}

// The grace answers a token just rotated away with the current pair, for
// tabs racing a refresh. When the rotation was a re-authentication, that
// pair carries a proof the token's holder never gave: the grace must not
// hand it out. A refresh after it is an ordinary rotation again.
func TestTheGraceDoesNotHandOutAReauthenticatedPair(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	rules := RefreshRules{TTL: week, Grace: 10 * time.Second}
	s := startedSession(t0)
	events, err := s.Reauthenticate([]string{"pwd"}, Client{})
	if err != nil {
		t.Fatal(err)
	}
	at := t0.Add(time.Hour)
	s.Apply(events[0], at)
	d, err := s.Refresh(0, at.Add(time.Second), rules, Client{})
	if !errors.Is(err, ErrRefreshInvalid) || d.Answer || len(d.Events) != 0 {
		t.Fatalf("token rotated away by a re-authentication, within the grace = %+v, %v; want refused, no events", d, err)
	}

	d, err = s.Refresh(1, at.Add(time.Minute), rules, Client{})
	if err != nil || len(d.Events) != 1 {
		t.Fatalf("refresh of the re-authenticated token = %+v, %v", d, err)
	}
	s.Apply(d.Events[0], at.Add(time.Minute))
	if d, err := s.Refresh(1, at.Add(time.Minute+time.Second), rules, Client{}); err != nil || !d.Answer {
		t.Fatalf("token rotated away by a refresh, within the grace = %+v, %v; want the current pair", d, err)
	}
}
