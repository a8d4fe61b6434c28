package projections

import (
	"encoding/json"
	"fmt"
	"slices"

	"github.com/google/uuid"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
)

// Activity is the read model behind GET /me/activity: one row per event a
// user would call "what happened to my account", with where it came from.
type Activity struct{}

func (Activity) Name() string     { return "activity" }
func (Activity) Tables() []string { return []string{"activity"} }

// Uses lists the event types Apply acts on (Selective).
func (a Activity) Uses(eventType string) bool {
	return slices.Contains(a.types(), eventType) || ends(eventType)
}

// types are the events listed; listing another is one line here. Left out:
// SessionRefreshed, since a client refreshes every few minutes and would
// drown the rest; the steps of a sign-in (LoginSucceeded, TotpCodeAccepted,
// BackupCodeUsed, PasskeyUsed), whose SessionStarted is the sign-in; and
// bookkeeping no user did (PasswordRehashed, snapshots, signup attempts).
func (Activity) types() []string {
	return []string{domain.TypeSessionStarted, domain.TypeLoginFailed, domain.TypePasswordReset,
		domain.TypeSessionRevoked, domain.TypeRefreshTokenReused, domain.TypeTotpEnabled, domain.TypeTotpDisabled,
		domain.TypeBackupCodesRegenerated, domain.TypePasskeyAdded, domain.TypePasskeyRemoved,
		domain.TypeGoogleLinked, domain.TypeEmailVerified, domain.TypeCodeGuessingDetected, domain.TypeReauthenticated,
		domain.TypePasswordChanged, domain.TypeEmailChangeRequested, domain.TypeEmailChanged, domain.TypeProfileUpdated}
}

// activityRow is one event as the read model holds it. The user is the
// event's owner in the log, which commands always name, so a listed type
// needs no code of its own; an event appended without one (by a tool or a
// test) names the user in its data. IP and user agent are its metadata: who
// caused it, as the request said.
func activityRow(e eventstore.Event, d domain.Event) (ActivityView, uuid.UUID, error) {
	user := e.UserID
	if user == uuid.Nil {
		var owner struct {
			UserID uuid.UUID `json:"user_id"`
		}
		if err := json.Unmarshal(e.Data, &owner); err != nil || owner.UserID == uuid.Nil {
			return ActivityView{}, uuid.Nil, fmt.Errorf("activity: %s %s belongs to no user", e.Type, e.ID)
		}
		user = owner.UserID
	}
	v := ActivityView{ID: e.ID, Type: e.Type, OccurredAt: e.OccurredAt.UTC(), IP: e.Metadata.IP,
		UserAgent: e.Metadata.UserAgent, cursor: e.Commit}
	switch d := d.(type) {
	case *domain.SessionStarted:
		v.SessionID, v.Device, v.Method = &d.SessionID, d.Device, d.AMR
	case *domain.Reauthenticated:
		// A proof of who the user is, as a sign-in is: with its method.
		v.SessionID, v.Device, v.Method = &d.SessionID, d.Device, d.AMR
	case *domain.SessionRevoked:
		v.SessionID = &d.SessionID
	case *domain.RefreshTokenReused:
		v.SessionID = &d.SessionID
	}
	return v, user, nil
}

// Apply queues one insert per event: a row never changes afterwards, and
// all of a user's go when the account ends. The
// device of a session's later rows is looked up when read (UserActivity),
// not here, where a rebuild has no index to find it by.
func (a Activity) Apply(b *Batch, events []eventstore.Event) error {
	return eachUsed(a, events, func(e eventstore.Event, d domain.Event) error {
		if ends(e.Type) {
			forget(b, e, d, "activity")
			return nil
		}
		v, user, err := activityRow(e, d)
		if err != nil {
			return err
		}
		b.Row(e, `INSERT INTO activity (id, user_id, tx_id, position, type, occurred_at, ip, user_agent, device, session_id, method)
			VALUES ($1, $2, $3::text::xid8, $4, $5, $6, $7, $8, $9, $10, $11)`,
			v.ID, user, fmt.Sprint(v.cursor.Tx), v.cursor.Position, v.Type, v.OccurredAt, v.IP, v.UserAgent, v.Device, v.SessionID, v.Method)
		return nil
	})
}
