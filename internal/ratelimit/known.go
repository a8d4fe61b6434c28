package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/authd/authd/eventstore"
)

// Class is which side of an account's limits an attempt falls on: one from
// a network that signed in to the account lately (Known) spends a slow-down,
// a code quota and guessing budgets of its own, apart from those every other
// network (Unknown) shares. Someone elsewhere who keeps the unknown class's
// limits spent cannot keep the owner out from home or office.
type Class string

// The two classes; their names are part of keys and rows.
const (
	Known   Class = "known"
	Unknown Class = "unknown"
)

// ClassOf is Known when known is set.
func ClassOf(known bool) Class {
	if known {
		return Known
	}
	return Unknown
}

// KnownNetworkMemory is how long after its last sign-in a network stays
// known to an account (API.md's notices use the same 90 days).
const KnownNetworkMemory = 90 * 24 * time.Hour

// Network is the network an address belongs to for the known-network rule
// and per-network keys: its /24 for IPv4, its /64 for IPv6 (one household or
// office, one customer of a provider).
func Network(addr netip.Addr) string {
	addr = addr.Unmap()
	bits := 64
	if addr.Is4() {
		bits = 24
	}
	p, err := addr.Prefix(bits)
	if err != nil { // the zero Addr: no network
		return ""
	}
	return p.String()
}

// NetworkOf is Network of an address in text; "" when ip is not one.
func NetworkOf(ip string) string {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return ""
	}
	return Network(addr)
}

// Upserts the network a sign-in came from, with its time.
const signedInSQL = `
INSERT INTO known_networks (user_id, network, last_sign_in_at) VALUES ($1, $2, $3)
ON CONFLICT (user_id, network) DO UPDATE SET
    last_sign_in_at = greatest(known_networks.last_sign_in_at, excluded.last_sign_in_at)`

// Whether a network signed in to a user since a time.
const knownSQL = `
SELECT EXISTS (SELECT 1 FROM known_networks
               WHERE user_id = $1 AND network = $2 AND last_sign_in_at > $3)`

// SignedInStatement records that user signed in from the network of ip at
// at, to commit with the events of the sign-in (eventstore.Change.Also): the
// network is known exactly when the sign-in is recorded, at no commit of its
// own. An ip with no network records nothing.
func SignedInStatement(user uuid.UUID, ip string, at time.Time) (eventstore.Statement, bool) {
	network := NetworkOf(ip)
	if network == "" {
		return eventstore.Statement{}, false
	}
	return eventstore.Statement{SQL: signedInSQL, Args: []any{user, network, at}}, true
}

// KnownStatement reads whether the network of ip signed in to user within
// KnownNetworkMemory before now, to run with the load of the account
// (eventstore.Store.LoadStreamsAfter); known tells once it has run. It runs
// the same for a user that does not exist (uuid.Nil, or an id no account
// has), and then finds nothing.
func KnownStatement(user uuid.UUID, ip string, now time.Time) (st eventstore.Statement, known func() bool) {
	found := false
	st = eventstore.Statement{
		SQL:  knownSQL,
		Args: []any{user, NetworkOf(ip), now.Add(-KnownNetworkMemory)},
		Scan: func(row pgx.Row) error {
			found = false // what an earlier, rolled-back run found is void
			err := row.Scan(&found)
			if errors.Is(err, pgx.ErrNoRows) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("ratelimit: read known networks: %w", err)
			}
			return nil
		},
	}
	return st, func() bool { return found }
}

// Known reads whether the network of ip signed in to user lately: what
// KnownStatement reads, on its own.
func (l *Limiter) Known(ctx context.Context, user uuid.UUID, ip string) (bool, error) {
	st, known := KnownStatement(user, ip, l.now())
	if err := st.Scan(l.pool.QueryRow(ctx, st.SQL, st.Args...)); err != nil {
		return false, err
	}
	return known(), nil
}
