package domain

import (
	"strconv"
	"time"

	"github.com/google/uuid"
)

// TypeCodeGuessingDetected is the type of CodeGuessingDetected (see Kinds).
const TypeCodeGuessingDetected = "CodeGuessingDetected"

// CodeGuessingThreshold is how many wrong second-factor or emailed codes in
// a day make CodeGuessingDetected (API.md: "Security notices").
const CodeGuessingThreshold = 10

// Kinds of guessed code in CodeGuessingDetected.
const (
	GuessedTOTP      = "totp"
	GuessedBackup    = "backup_code"
	GuessedEmailCode = "email_code"
)

// CodeGuessingDetected says an account's second-factor or emailed codes
// were guessed wrong CodeGuessingThreshold times within a day that began at
// WindowStart; Kind is the code of the guess that reached the threshold. The
// owner is told by mail. It carries no code.
type CodeGuessingDetected struct {
	UserID      uuid.UUID `json:"user_id"`
	Kind        string    `json:"kind"`
	Failures    int       `json:"failures"`
	WindowStart time.Time `json:"window_start"`
}

// CodeGuessingStream names the stream of one user's day of guessing: it
// holds that day's single CodeGuessingDetected, so that appending it at
// version 0 lets only one of several instances tell the owner.
func CodeGuessingStream(user uuid.UUID, windowStart time.Time) string {
	return "code-guessing-" + user.String() + "-" + strconv.FormatInt(windowStart.UnixMicro(), 10)
}
