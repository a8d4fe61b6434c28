package domain

import (
	"errors"
	"time"

	"github.com/google/uuid"
)

// Event types of the user stream (see Kinds).
const (
	TypeUserRegistered      = "UserRegistered"
	TypeRegistrationRenewed = "RegistrationRenewed"
	TypeEmailVerified       = "EmailVerified"
	TypePasswordReset       = "PasswordReset"
	TypePasswordRehashed    = "PasswordRehashed"
	TypeSignupExpired       = "SignupExpired"
	TypeSignupAttempted     = "SignupAttempted"
	// Self-service (PATCH /me, POST /me/password, POST /me/email[/verify]).
	TypeProfileUpdated       = "ProfileUpdated"
	TypePasswordChanged      = "PasswordChanged"
	TypeEmailChangeRequested = "EmailChangeRequested"
	TypeEmailChanged         = "EmailChanged"
	// Erasure (DELETE /me).
	TypeAccountDeleted = "AccountDeleted"
)

// UserStream names a user's stream.
func UserStream(id uuid.UUID) string { return "user-" + id.String() }

// UserRegistered starts a user's stream when someone signs up. The account
// cannot sign in until its email is verified; its tenant is created then.
type UserRegistered struct {
	UserID     uuid.UUID `json:"user_id"`
	TenantID   uuid.UUID `json:"tenant_id"`
	TenantName string    `json:"tenant_name" personal:"true"`
	Email      string    `json:"email" personal:"true"`
	Name       string    `json:"name" personal:"true"`

	Secret PasswordSecret `json:"-"`
}

// PasswordSecret is the sealed part of an event that sets a password.
type PasswordSecret struct {
	PasswordHash string `json:"password_hash,omitempty"`
}

func (e *UserRegistered) Secrets() any { return &e.Secret }

// RegistrationRenewed replaces the password and names of an account nobody
// has verified yet: signing up again with the same email before verifying.
type RegistrationRenewed struct {
	UserID     uuid.UUID `json:"user_id"`
	Name       string    `json:"name" personal:"true"`
	TenantName string    `json:"tenant_name" personal:"true"`

	Secret PasswordSecret `json:"-"`
}

func (e *RegistrationRenewed) Secrets() any { return &e.Secret }

// EmailVerified records that the user proved they own their email address.
type EmailVerified struct {
	UserID uuid.UUID `json:"user_id"`
}

// PasswordReset sets a new password through an emailed code. Every session
// that started before it is revoked.
type PasswordReset struct {
	UserID uuid.UUID `json:"user_id"`
	At     time.Time `json:"at"`

	Secret PasswordSecret `json:"-"`
}

func (e *PasswordReset) Secrets() any { return &e.Secret }

// PasswordRehashed stores the same password hashed with current parameters.
type PasswordRehashed struct {
	UserID uuid.UUID `json:"user_id"`

	Secret PasswordSecret `json:"-"`
}

func (e *PasswordRehashed) Secrets() any { return &e.Secret }

// SignupExpired ends a signup that nobody verified in time: the account is
// gone and its email free for a new signup. It holds ids only (the envelope
// has the time), so it says nothing about the person.
type SignupExpired struct {
	UserID uuid.UUID `json:"user_id"`
}

// AccountDeleted ends an account at its owner's request: every read model
// forgets the user, and audit consumers are told to forget their copies. It
// holds ids only (the envelope has the time), like SignupExpired.
type AccountDeleted struct {
	UserID   uuid.UUID `json:"user_id"`
	TenantID uuid.UUID `json:"tenant_id"`
}

// SignupAttemptStream names the stream of the signups tried with a verified
// account's address, kept apart from the user's own stream so that they
// cannot make the account slow to load.
func SignupAttemptStream(userID uuid.UUID) string { return "signup-attempts-" + userID.String() }

// SignupAttempted records a signup with the address of a verified account:
// nothing about the account changes, and its owner is mailed a sign-in code.
type SignupAttempted struct {
	UserID uuid.UUID `json:"user_id"`
}

// ProfileUpdated changes what the user says of themselves: only the fields
// that changed are set.
type ProfileUpdated struct {
	UserID uuid.UUID `json:"user_id"`
	Name   *string   `json:"name,omitempty" personal:"true"`
	// Locale is canonical BCP 47 ("de", "pt-BR"): the language of the
	// user's mails.
	Locale *string `json:"locale,omitempty"`
}

// PasswordChanged sets the password of a signed-in user who proved who they
// are lately. Unlike PasswordReset it cuts no session by time: the one that
// changed it lives on, and the others are revoked with it, each by its own
// SessionRevoked in the same commit.
type PasswordChanged struct {
	UserID uuid.UUID `json:"user_id"`

	Secret PasswordSecret `json:"-"`
}

func (e *PasswordChanged) Secrets() any { return &e.Secret }

// EmailChangeRequested records that the user asked to move their account to
// NewEmail; a code mailed there confirms it. Email is the address the
// account had then, which its notice goes to: by the time the notice is
// sent, the change may have completed.
type EmailChangeRequested struct {
	UserID   uuid.UUID `json:"user_id"`
	Email    string    `json:"email" personal:"true"`
	NewEmail string    `json:"new_email" personal:"true"`
}

// EmailChanged moves the account to a new, proven address; OldEmail is told.
type EmailChanged struct {
	UserID   uuid.UUID `json:"user_id"`
	OldEmail string    `json:"old_email" personal:"true"`
	NewEmail string    `json:"new_email" personal:"true"`
}

// User is the write-side account, rebuilt from its stream.
type User struct {
	ID            uuid.UUID
	TenantID      uuid.UUID
	TenantName    string
	Email         string
	Name          string
	Locale        string // canonical BCP 47; empty: English
	PasswordHash  string
	EmailVerified bool
	CreatedAt     time.Time
	// SessionsValidAfter: sessions started before it were revoked by a reset.
	SessionsValidAfter time.Time
	// PendingSince is when the signup was last made or renewed: an
	// unverified account expires a while after it.
	PendingSince time.Time
	// PendingEmail is the address the last email change asked for, until
	// it completes.
	PendingEmail string
	// Expired: the signup was never verified and has ended.
	Expired bool
	// Deleted: the owner erased the account (AccountDeleted).
	Deleted bool
	Version int64
}

// Exists reports whether the account exists: its stream has started, its
// signup has not expired and it has not been deleted. The email of an
// account that ended is free, and whoever loaded it through that email found
// it a moment too late.
func (u *User) Exists() bool { return u.Version > 0 && !u.Expired && !u.Deleted }

// Apply folds one event into the user; at is when it happened.
func (u *User) Apply(e Event, at time.Time) {
	switch e := e.(type) {
	case *UserRegistered:
		u.ID, u.TenantID, u.TenantName, u.Email, u.Name = e.UserID, e.TenantID, e.TenantName, e.Email, e.Name
		u.PasswordHash, u.CreatedAt, u.PendingSince = e.Secret.PasswordHash, at, at
	case *RegistrationRenewed:
		u.Name, u.TenantName, u.PasswordHash, u.PendingSince = e.Name, e.TenantName, e.Secret.PasswordHash, at
	case *EmailVerified:
		u.EmailVerified = true
	case *PasswordReset:
		u.PasswordHash, u.SessionsValidAfter = e.Secret.PasswordHash, e.At
	case *PasswordRehashed:
		u.PasswordHash = e.Secret.PasswordHash
	case *SignupExpired:
		u.Expired = true
	case *AccountDeleted:
		u.Deleted = true
	case *ProfileUpdated:
		if e.Name != nil {
			u.Name = *e.Name
		}
		if e.Locale != nil {
			u.Locale = *e.Locale
		}
	case *PasswordChanged:
		u.PasswordHash = e.Secret.PasswordHash
	case *EmailChangeRequested:
		u.PendingEmail = e.NewEmail
	case *EmailChanged:
		u.Email, u.EmailVerified, u.PendingEmail = e.NewEmail, true, ""
	}
	u.Version++
}

// Verify decides the proof that the user owns their email address: the
// events for the user's stream (EmailVerified), and the TenantCreated that
// starts the stream of the tenant the signup named (or, unnamed, one named
// after the user). Nothing when the email is verified already: the tenant
// was created then.
func (u *User) Verify() (user []Event, tenant *TenantCreated) {
	if u.EmailVerified {
		return nil, nil
	}
	name := u.TenantName
	if name == "" {
		name = DefaultTenantName(u.Name, u.Email)
	}
	return []Event{&EmailVerified{UserID: u.ID}}, &TenantCreated{TenantID: u.TenantID, Name: name, OwnerID: u.ID}
}

// ExpireSignup returns the event that ends a signup left unverified for ttl
// since it was last made or renewed, or none: a verified account, one that
// has ended already, or one still within its time is left alone.
func (u *User) ExpireSignup(now time.Time, ttl time.Duration) []Event {
	if !u.Exists() || u.EmailVerified || now.Sub(u.PendingSince) < ttl {
		return nil
	}
	return []Event{&SignupExpired{UserID: u.ID}}
}

// ErrAccountGone refuses to delete an account that does not exist (never
// made, expired or deleted already).
var ErrAccountGone = errors.New("the account does not exist")

// Delete decides the erasure of the account at its owner's request: the
// AccountDeleted that every read model and audit consumer forgets the user
// at. The sessions it ends and the keys it releases are the command's.
func (u *User) Delete() ([]Event, error) {
	if !u.Exists() {
		return nil, ErrAccountGone
	}
	return []Event{&AccountDeleted{UserID: u.ID, TenantID: u.TenantID}}, nil
}

// UpdateProfile decides a profile change: a ProfileUpdated with the fields
// that differ from what the user has (nil: not asked to change), or nothing
// when none does.
func (u *User) UpdateProfile(name, locale *string) []Event {
	e := &ProfileUpdated{UserID: u.ID}
	if name != nil && *name != u.Name {
		e.Name = name
	}
	if locale != nil && *locale != u.Locale {
		e.Locale = locale
	}
	if e.Name == nil && e.Locale == nil {
		return nil
	}
	return []Event{e}
}

// ChangePassword decides a new password (its hash): with or without one
// before, a Google-only or passwordless user included.
func (u *User) ChangePassword(hash string) []Event {
	e := &PasswordChanged{UserID: u.ID}
	e.Secret.PasswordHash = hash
	return []Event{e}
}

// RequestEmailChange decides a request to move the account to newEmail.
func (u *User) RequestEmailChange(newEmail string) []Event {
	return []Event{&EmailChangeRequested{UserID: u.ID, Email: u.Email, NewEmail: newEmail}}
}

// ErrNoEmailChange refuses to complete an email change nobody asked for, or
// one to the address the account has.
var ErrNoEmailChange = errors.New("no email change is pending")

// ChangeEmail decides the completion of the pending email change to
// newEmail, the address a code was proven for.
func (u *User) ChangeEmail(newEmail string) ([]Event, error) {
	if u.PendingEmail == "" || u.PendingEmail != newEmail || newEmail == u.Email {
		return nil, ErrNoEmailChange
	}
	return []Event{&EmailChanged{UserID: u.ID, OldEmail: u.Email, NewEmail: newEmail}}, nil
}
