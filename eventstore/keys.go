package eventstore

import (
	"context"
	"crypto/cipher"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"
)

// userKey is a user's data key as this Store knows it: opened, or nil once
// the user is erased (which is for good, so it can be remembered).
type userKey struct {
	aead cipher.AEAD
}

// errKeyExists fails a change that made a data key for a user who has one
// already, or a tombstone: the plain INSERT of user_keys conflicts, so a key
// is never replaced and an erased user never gets a new one.
var errKeyExists = errors.New("the user has a data key already")

// newKey is a data key made for a user, sealed under the master key, that
// an append statement inserts into user_keys.
type newKey struct {
	user uuid.UUID
	kid  string
	box  []byte
}

// sealPersonal returns e's personal part sealed under its user's data key
// for the events.personal column: nil when e has nothing personal, or when
// its user is erased, in which case what it had is dropped. A user this
// Store has no key for gets a new one, inserted with the change (p).
func (s *Store) sealPersonal(e *Event, p *pending) ([]byte, error) {
	if !e.hasPersonal() {
		return nil, nil
	}
	if e.UserID == uuid.Nil {
		return nil, fmt.Errorf("event %s (%s) carries personal data but names no user to own it", e.ID, e.Type)
	}
	if s.sealer == nil {
		return nil, fmt.Errorf("event %s (%s) carries personal data and this store has no master key", e.ID, e.Type)
	}
	aead, err := s.keyToSeal(e.UserID, p)
	if err != nil || aead == nil {
		return nil, err
	}
	return sealPersonal(aead, marshalPersonal(e), e.ID[:])
}

// keyToSeal is user's data key for p's events: the cached one, the one p
// made already, or a new one (to insert, p.unsaved); nil for an erased user.
func (s *Store) keyToSeal(user uuid.UUID, p *pending) (cipher.AEAD, error) {
	if k, ok := s.keys.Get(user); ok {
		return k.aead, nil
	}
	if aead, ok := p.newKeys[user]; ok {
		return aead, nil
	}
	key, err := newDataKey()
	if err != nil {
		return nil, err
	}
	aead, err := dataCipher(key)
	if err != nil {
		return nil, err
	}
	kid, box, err := s.sealer.Seal(key, user[:])
	if err != nil {
		return nil, fmt.Errorf("seal the data key of %s: %w", user, err)
	}
	if p.newKeys == nil {
		p.newKeys = map[uuid.UUID]cipher.AEAD{}
	}
	p.newKeys[user] = aead
	p.unsaved = append(p.unsaved, newKey{user, kid, box})
	return aead, nil
}

func (p *pending) newKeyUsers() []uuid.UUID {
	users := make([]uuid.UUID, 0, len(p.newKeys))
	for u := range p.newKeys {
		users = append(users, u)
	}
	return users
}

// loadKeys caches the keys, or erasures, of users in one query.
func (s *Store) loadKeys(ctx context.Context, users []uuid.UUID) error {
	rows, err := s.pool.Query(ctx, `SELECT user_id, kid, sealed_key FROM user_keys WHERE user_id = ANY($1)`, users)
	if err != nil {
		return fmt.Errorf("load data keys: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var user uuid.UUID
		var kid pgtype.Text
		var box []byte
		if err := rows.Scan(&user, &kid, &box); err != nil {
			return fmt.Errorf("load data keys: %w", err)
		}
		if _, err := s.keyFromRow(user, kid, box); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load data keys: %w", err)
	}
	return nil
}

// keyFromRow is the user's key as the user_keys row (kid, box) holds it,
// nil when it is a tombstone, opened unless cached, and caches it.
func (s *Store) keyFromRow(user uuid.UUID, kid pgtype.Text, box []byte) (cipher.AEAD, error) {
	if box == nil {
		s.keys.Add(user, userKey{})
		return nil, nil
	}
	if k, ok := s.keys.Get(user); ok && k.aead != nil {
		return k.aead, nil
	}
	key, err := s.sealer.Open(kid.String, box, user[:])
	if err != nil {
		return nil, fmt.Errorf("open the data key of %s: %w", user, err)
	}
	aead, err := dataCipher(key)
	if err != nil {
		return nil, err
	}
	s.keys.Add(user, userKey{aead: aead})
	return aead, nil
}

// openPersonal fills e with its personal part, read with its user's key
// row: ip and user agent, and its personal fields merged into its data; or,
// when that key is destroyed, marks e Erased. Without a master key it leaves
// them out.
func (s *Store) openPersonal(e *Event, r *SealedPart) error {
	if r.erased {
		// Remembered, so that this Store's appends for the user drop their
		// personal parts without trying to make a key.
		s.keys.Add(e.UserID, userKey{})
		e.Erased = r.personal != nil
		return nil
	}
	if r.personal == nil || s.sealer == nil {
		return nil
	}
	if r.key == nil {
		return fmt.Errorf("event %s has a personal part but user %s has no data key", e.ID, e.UserID)
	}
	aead, err := s.keyFromRow(e.UserID, r.kid, r.key)
	if err != nil {
		return fmt.Errorf("event %s: %w", e.ID, err)
	}
	// A user's data key is never replaced (a second one fails its insert,
	// and a re-seal keeps the key itself), so a cached one is the row's.
	plain, err := openPersonal(aead, r.personal, e.ID[:])
	if err != nil {
		return fmt.Errorf("open the personal part of event %s: %w", e.ID, err)
	}
	if err := unmarshalPersonal(e, plain); err != nil {
		return fmt.Errorf("event %s: %w", e.ID, err)
	}
	return nil
}
