package commands

import (
	"time"

	"github.com/authd/authd/password"
)

// knownFor is how long a network that signed in to an account stays known
// to it.
const knownFor = 90 * 24 * time.Hour

// knownNetworksSize bounds the remembered (account, network) pairs, at about
// a hundred bytes each.
const knownNetworksSize = 100_000

// knownNetwork is an account's email and a client network that signed in to it.
type knownNetwork struct{ email, network string }

// network is the client network r is judged by for admission (a /24 or /64).
func (r Request) network() string { return password.Network(r.IP) }

// admission is how a password check of email's account from r is admitted
// to the hasher: by r's network, ahead of unknown clients when that network
// signed in to the account within knownFor. It does the same work whether or
// not the account exists.
//
// The record is this instance's memory of the sessions it started, so it
// forgets on restart and knows nothing of the other instances' sign-ins;
// a record shared through Postgres can take its place here.
func (a *App) admission(email string, r Request) password.Admission {
	adm := password.Admission{Network: r.network()}
	if at, ok := a.known.Get(knownNetwork{email, adm.Network}); ok {
		adm.Known = a.d.Now().Sub(at) < knownFor
	}
	return adm
}

// rememberNetwork notes that r's network signed in to the account of email.
func (a *App) rememberNetwork(email string, r Request) {
	if n := r.network(); n != "" {
		a.known.Add(knownNetwork{email, n}, a.d.Now())
	}
}
