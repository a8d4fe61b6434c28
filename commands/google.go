package commands

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/authd/authd/domain"
	"github.com/authd/authd/eventstore"
	"github.com/authd/authd/internal/googleauth"
)

// GoogleConfig is what Google sign-in needs beyond Deps. With no client IDs
// (GOOGLE_CLIENT_ID empty) Google sign-in is off.
type GoogleConfig struct {
	// Verifier checks ID tokens against Google's keys and ClientIDs.
	Verifier *googleauth.Verifier
	// ClientIDs are the accepted audiences.
	ClientIDs []string
}

// Google signs in, signs up and links accounts with Google ID tokens.
type Google struct {
	*core
	cfg GoogleConfig
	// twoFactor finishes the sign-in: a challenge, or a session.
	twoFactor *TwoFactor
}

func (g GoogleConfig) enabled() bool { return g.Verifier != nil && len(g.ClientIDs) > 0 }

// Errors of Google sign-in the HTTP edge maps to API codes.
var (
	// ErrInvalidToken refuses an ID token: badly signed, expired, for
	// another audience or issuer, without a verified (plain ASCII) email,
	// or of a Google account other than the one the account is linked to.
	ErrInvalidToken = errors.New("invalid ID token")
	// ErrGoogleUnavailable means Google's keys could not be fetched.
	ErrGoogleUnavailable = errors.New("google's signing keys are unavailable")
)

// googleScope is the write-side index of linked Google accounts: the key is
// the Google subject, the owner the user id.
const googleScope = "google"

var amrGoogle = []string{"fed"}

// GoogleEnabled reports whether Google sign-in is configured.
func (a *App) GoogleEnabled() bool { return a != nil && a.Google.cfg.enabled() }

// GoogleSignIn signs in with a Google ID token (API.md: POST /google). The
// account is found by the Google subject first, then by the verified email,
// which links it; an unknown email signs up a verified user with no
// password. A user with a second factor gets a challenge. Nothing changes
// when the token is refused.
func (a *Google) GoogleSignIn(ctx context.Context, idToken string, r Request) (SignIn, error) {
	g := a.cfg
	if !g.enabled() {
		return SignIn{}, ErrNotFound
	}
	id, err := g.Verifier.Verify(ctx, idToken)
	if ferr := g.Verifier.TakeFetchError(); ferr != nil {
		a.log.Warn("fetching Google's signing keys failed", "err", ferr)
	}
	if errors.Is(err, googleauth.ErrKeysUnavailable) {
		return SignIn{}, fmt.Errorf("%w: %w", ErrGoogleUnavailable, err)
	}
	if err != nil {
		a.log.Info("Google ID token refused", "reason", err.Error(), "request_id", r.RequestID)
		return SignIn{}, ErrInvalidToken
	}
	email, err := NormalizeEmail(id.Email)
	if err != nil {
		a.log.Info("Google ID token refused", "reason", "email: "+err.Error(), "request_id", r.RequestID)
		return SignIn{}, ErrInvalidToken
	}
	name, err := cleanName("name", id.Name)
	if err != nil {
		name = "" // a name we cannot show is no reason to refuse the sign-in
	}
	return retry(ctx, func() (SignIn, error) {
		s, err := a.googleSignIn(ctx, id.Subject, email, name, r)
		if errors.Is(err, eventstore.ErrKeyTaken) {
			// Someone signed up or linked this email or Google account
			// meanwhile: decide again.
			return SignIn{}, eventstore.ErrConflict
		}
		if errors.Is(err, domain.ErrLinkedToOtherGoogle) {
			a.log.Info("Google ID token refused", "reason", "the account with its email is linked to another Google account", "request_id", r.RequestID)
			return SignIn{}, ErrInvalidToken
		}
		return s, err
	})
}

// googleSignIn is one decide-and-append round of GoogleSignIn.
func (a *Google) googleSignIn(ctx context.Context, subject, email, name string, r Request) (SignIn, error) {
	c := a.newChange(r)
	linked, found, err := a.lookupUser(ctx, googleScope, subject)
	if err != nil {
		return SignIn{}, err
	}
	if found {
		u, err := a.loadGoogleUser(ctx, linked)
		if err != nil {
			return SignIn{}, err
		}
		return a.twoFactor.signIn(ctx, c, &u.User, nil, amrGoogle, r)
	}

	owner, found, err := a.emailOwner(ctx, email)
	if err != nil {
		return SignIn{}, err
	}
	u := &domain.GoogleUser{}
	if found {
		if u, err = a.loadGoogleUser(ctx, owner); err != nil {
			return SignIn{}, err
		}
		if err := c.record(u, domain.UserStream(u.ID), u.TenantID, u.ID, u.TakeOver(name)...); err != nil {
			return SignIn{}, err
		}
	} else {
		id, tenant := uuid.New(), uuid.New()
		if err := c.record(u, domain.UserStream(id), tenant, id, domain.NewGoogleUser(id, tenant, email, name)); err != nil {
			return SignIn{}, err
		}
		c.write.Claims = append(c.write.Claims, eventstore.Claim{Scope: emailScope, Key: email, Owner: id.String()})
	}
	link, err := u.LinkGoogle(subject)
	if err != nil {
		return SignIn{}, err
	}
	if link != nil {
		if err := verifyEmail(c, &u.User); err != nil {
			return SignIn{}, err
		}
		if err := c.record(u, domain.UserStream(u.ID), u.TenantID, u.ID, link); err != nil {
			return SignIn{}, err
		}
		c.write.Claims = append(c.write.Claims, eventstore.Claim{Scope: googleScope, Key: subject, Owner: u.ID.String()})
	}
	return a.twoFactor.signIn(ctx, c, &u.User, nil, amrGoogle, r)
}

// lookupUser finds the user who holds a write-side unique key.
func (a *Google) lookupUser(ctx context.Context, scope, key string) (uuid.UUID, bool, error) {
	owner, err := a.store.Lookup(ctx, scope, key)
	if errors.Is(err, eventstore.ErrNotFound) {
		return uuid.Nil, false, nil
	}
	if err != nil {
		return uuid.Nil, false, err
	}
	id, err := uuid.Parse(owner)
	if err != nil {
		return uuid.Nil, false, fmt.Errorf("%s index holds a bad owner %q: %w", scope, owner, err)
	}
	return id, true, nil
}

func (a *Google) loadGoogleUser(ctx context.Context, id uuid.UUID) (*domain.GoogleUser, error) {
	u := &domain.GoogleUser{}
	if err := a.load(ctx, domain.UserStream(id), u); err != nil {
		return nil, err
	}
	if u.Expired || u.Deleted {
		// Its signup expired or it was deleted, releasing its keys, after
		// the lookup that led here: decide again.
		return nil, eventstore.ErrConflict
	}
	if !u.Exists() {
		return nil, fmt.Errorf("user %s is indexed but has no events", id)
	}
	return u, nil
}
