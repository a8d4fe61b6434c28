package domain

import (
	"errors"
	"time"

	"github.com/google/uuid"
)

// TypeGoogleLinked is the user-stream event of a Google account linked (see
// Kinds).
const TypeGoogleLinked = "GoogleLinked"

// GoogleLinked links a user to a Google account, found from then on by its
// subject (the sub claim of its ID tokens). The subject is an identifier,
// not a secret, so it is not sealed with the secrets; but it names a person
// at Google, so it is personal data, erased with the account.
type GoogleLinked struct {
	UserID  uuid.UUID `json:"user_id"`
	Subject string    `json:"subject" personal:"true"`
}

// ErrLinkedToOtherGoogle refuses to link an account to a Google account when
// it is linked to another already: an address can pass from one Google
// account to another (a recycled workspace address, say), and relinking
// silently would hand the account over with it.
var ErrLinkedToOtherGoogle = errors.New("the account is linked to another Google account")

// GoogleUser is a user as Google sign-in sees it: the account, and the
// Google account it is linked to, if any.
type GoogleUser struct {
	User
	// GoogleSubject is the linked Google account's subject, or empty.
	GoogleSubject string
}

// Apply folds one event of the user's stream.
func (g *GoogleUser) Apply(e Event, at time.Time) {
	if l, ok := e.(*GoogleLinked); ok {
		g.GoogleSubject = l.Subject
	}
	g.User.Apply(e, at)
}

// NewGoogleUser starts the stream of a user who signs up with Google: no
// password (the user can set one later with a password reset), and the
// tenant left to be named by default when the email is verified.
func NewGoogleUser(id, tenant uuid.UUID, email, name string) *UserRegistered {
	return &UserRegistered{UserID: id, TenantID: tenant, Email: email, Name: name}
}

// TakeOver returns, for an account whose email nobody has verified yet, the
// event that hands it to the Google account that has just proven it owns
// the address: the password and names chosen by whoever signed up are
// dropped, since they may be anybody's (signing up in someone else's name
// before they sign in with Google must not leave a way in). It returns none
// for a verified account, which keeps its password.
func (g *GoogleUser) TakeOver(name string) []Event {
	if g.EmailVerified {
		return nil
	}
	return []Event{&RegistrationRenewed{UserID: g.ID, Name: name}}
}

// LinkGoogle decides linking the account to the Google account subject,
// whose verified email is the account's: no event when it is linked to it
// already, ErrLinkedToOtherGoogle when it is linked to another.
func (g *GoogleUser) LinkGoogle(subject string) (*GoogleLinked, error) {
	switch g.GoogleSubject {
	case subject:
		return nil, nil
	case "":
		return &GoogleLinked{UserID: g.ID, Subject: subject}, nil
	}
	return nil, ErrLinkedToOtherGoogle
}
