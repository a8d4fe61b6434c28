package domain

import (
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
)

// UserStream names a user's stream.
func UserStream(id uuid.UUID) string { return "user-" + id.String() }

// UserRegistered starts a user's stream when someone signs up. The account
// cannot sign in until its email is verified; its tenant is created then.
type UserRegistered struct {
	UserID     uuid.UUID `json:"user_id"`
	TenantID   uuid.UUID `json:"tenant_id"`
	TenantName string    `json:"tenant_name"`
	Email      string    `json:"email"`
	Name       string    `json:"name"`

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
	Name       string    `json:"name"`
	TenantName string    `json:"tenant_name"`

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

// SignupAttemptStream names the stream of the signups tried with a verified
// account's address, kept apart from the user's own stream so that they
// cannot make the account slow to load.
func SignupAttemptStream(userID uuid.UUID) string { return "signup-attempts-" + userID.String() }

// SignupAttempted records a signup with the address of a verified account:
// nothing about the account changes, and its owner is mailed a sign-in code.
type SignupAttempted struct {
	UserID uuid.UUID `json:"user_id"`
}

// User is the write-side account, rebuilt from its stream.
type User struct {
	ID            uuid.UUID
	TenantID      uuid.UUID
	TenantName    string
	Email         string
	Name          string
	PasswordHash  string
	EmailVerified bool
	CreatedAt     time.Time
	// SessionsValidAfter: sessions started before it were revoked by a reset.
	SessionsValidAfter time.Time
	// PendingSince is when the signup was last made or renewed: an
	// unverified account expires a while after it.
	PendingSince time.Time
	// Expired: the signup was never verified and has ended.
	Expired bool
	Version int64
}

// Exists reports whether the account exists: its stream has started, and
// its signup has not expired. An expired signup's email is free, and
// whoever loaded it through that email found it a moment too late.
func (u *User) Exists() bool { return u.Version > 0 && !u.Expired }

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
