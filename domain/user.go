package domain

import "github.com/google/uuid"

// Event types of the user stream.
const (
	TypeUserRegistered = "UserRegistered"
	TypeEmailVerified  = "EmailVerified"
)

// UserRegistered starts a user's stream.
type UserRegistered struct {
	UserID   uuid.UUID `json:"user_id"`
	TenantID uuid.UUID `json:"tenant_id"`
	Email    string    `json:"email"`
	Name     string    `json:"name"`

	Secret UserSecret `json:"-"`
}

// UserSecret is the sealed part of a user's registration.
type UserSecret struct {
	PasswordHash string `json:"password_hash,omitempty"`
}

func (UserRegistered) EventType() string { return TypeUserRegistered }

func (e *UserRegistered) Secrets() any { return &e.Secret }

// EmailVerified records that the user proved they own their email address.
type EmailVerified struct {
	UserID uuid.UUID `json:"user_id"`
}

func (EmailVerified) EventType() string { return TypeEmailVerified }
