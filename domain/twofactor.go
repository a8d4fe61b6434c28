package domain

import (
	"crypto/subtle"
	"errors"
	"time"

	"github.com/google/uuid"

	"github.com/authd/authd/internal/totp"
)

// Event types of the two-factor stream (see Kinds).
const (
	TypeTotpSetupStarted       = "TotpSetupStarted"
	TypeTotpEnabled            = "TotpEnabled"
	TypeTotpDisabled           = "TotpDisabled"
	TypeTotpCodeAccepted       = "TotpCodeAccepted"
	TypeBackupCodesRegenerated = "BackupCodesRegenerated"
	TypeBackupCodeUsed         = "BackupCodeUsed"
	TypeTwoFactorSnapshotTaken = "TwoFactorSnapshotTaken"
)

// Two-factor parameters.
const (
	// BackupCodeCount is how many backup codes enabling or regenerating gives.
	BackupCodeCount = 10
	// BackupCodeDigits is a backup code's length: "1234-5678" as shown.
	BackupCodeDigits = 8
	// ChallengeTTL is how long a login challenge can be answered.
	ChallengeTTL = 5 * time.Minute
	// ChallengeTries is how many answers a challenge takes, right or wrong.
	ChallengeTries = 5
	// maxCodeInput bounds what is even looked at as a code.
	maxCodeInput = 64
	// SnapshotEvery is how many events may follow the stream's start or its
	// latest snapshot before the next snapshot is due: a load reads from the
	// latest snapshot on, so every second-factor sign-in (one event each)
	// does not make the next one slower.
	SnapshotEvery = 50
)

// Methods of a second factor, as the Challenge of API.md lists them.
const (
	MethodTOTP       = "totp"
	MethodBackupCode = "backup_code"
)

// TwoFactorStream names a user's two-factor stream, kept apart from the user
// stream so that second-factor logins do not make the account slow to load.
func TwoFactorStream(userID uuid.UUID) string { return "twofactor-" + userID.String() }

// Two-factor decisions that refuse.
var (
	ErrTwoFactorEnabled  = errors.New("two-factor authentication is already on")
	ErrTwoFactorDisabled = errors.New("two-factor authentication is off")
	ErrNoSetupPending    = errors.New("no two-factor setup is pending")
	ErrWrongCode         = errors.New("wrong, malformed or already used code")
	ErrChallengeUsed     = errors.New("challenge already answered")
)

// TotpSecret is the sealed part of an event that holds a TOTP secret.
type TotpSecret struct {
	Secret string `json:"secret"`
}

// BackupCodeHashes is the sealed part of an event that sets backup codes:
// their keyed hashes, never the codes.
type BackupCodeHashes struct {
	Hashes []string `json:"hashes"`
}

// TotpSetupStarted records a new, unconfirmed TOTP secret, which replaces any
// earlier unconfirmed one. The secret is only in the sealed part.
type TotpSetupStarted struct {
	UserID uuid.UUID `json:"user_id"`

	Secret TotpSecret `json:"-"`
}

func (e *TotpSetupStarted) Secrets() any { return &e.Secret }

// TotpEnabledSecrets is TotpEnabled's sealed part.
type TotpEnabledSecrets struct {
	Secret      string   `json:"secret"`
	BackupCodes []string `json:"backup_code_hashes"`
}

// TotpEnabled turns two-factor authentication on with the pending secret,
// confirmed by a code of time step Step, and sets the first backup codes.
type TotpEnabled struct {
	UserID      uuid.UUID `json:"user_id"`
	Step        int64     `json:"step"`
	BackupCodes int       `json:"backup_codes"`

	Secret TotpEnabledSecrets `json:"-"`
}

func (e *TotpEnabled) Secrets() any { return &e.Secret }

// TotpDisabled turns two-factor authentication off: the secret and the backup
// codes are gone. Method says which kind of code proved it.
type TotpDisabled struct {
	UserID uuid.UUID `json:"user_id"`
	Method string    `json:"method"`
}

// TotpCodeAccepted records that the TOTP code of Step answered a challenge:
// no code of that step or an earlier one is accepted again.
type TotpCodeAccepted struct {
	UserID      uuid.UUID `json:"user_id"`
	Step        int64     `json:"step"`
	ChallengeID uuid.UUID `json:"challenge_id"`
}

// BackupCodesRegenerated replaces every backup code with new ones.
type BackupCodesRegenerated struct {
	UserID      uuid.UUID `json:"user_id"`
	BackupCodes int       `json:"backup_codes"`

	Secret BackupCodeHashes `json:"-"`
}

func (e *BackupCodesRegenerated) Secrets() any { return &e.Secret }

// UsedBackupCode is BackupCodeUsed's sealed part: which code was used up.
type UsedBackupCode struct {
	Hash string `json:"hash"`
}

// BackupCodeUsed records that a backup code answered a challenge; it never
// works again. Remaining is how many are left.
type BackupCodeUsed struct {
	UserID      uuid.UUID `json:"user_id"`
	ChallengeID uuid.UUID `json:"challenge_id"`
	Remaining   int       `json:"remaining"`

	Secret UsedBackupCode `json:"-"`
}

func (e *BackupCodeUsed) Secrets() any { return &e.Secret }

// TwoFactorSnapshotSecrets is TwoFactorSnapshotTaken's sealed part.
type TwoFactorSnapshotSecrets struct {
	PendingSecret string   `json:"pending_secret,omitempty"`
	Secret        string   `json:"secret,omitempty"`
	BackupCodes   []string `json:"backup_code_hashes"`
}

// TwoFactorSnapshotTaken restates the whole two-factor aggregate and changes
// nothing: the aggregate is loaded from the latest one on (its type ends in
// eventstore.SnapshotSuffix for that). Challenges are the used challenges
// that could still be answered, with when they were used.
type TwoFactorSnapshotTaken struct {
	UserID      uuid.UUID               `json:"user_id"`
	Enabled     bool                    `json:"enabled"`
	EnabledAt   time.Time               `json:"enabled_at"`
	LastStep    int64                   `json:"last_step"`
	BackupCodes int                     `json:"backup_codes"`
	Challenges  map[uuid.UUID]time.Time `json:"used_challenges"`

	Secret TwoFactorSnapshotSecrets `json:"-"`
}

func (e *TwoFactorSnapshotTaken) Secrets() any { return &e.Secret }

// CodeKind says what a second-factor code looks like it is.
type CodeKind int

const (
	TOTPCode CodeKind = iota + 1
	BackupCode
)

// Code is a second-factor code as typed, normalised: digits only.
type Code struct {
	Kind   CodeKind
	Digits string
}

// ParseCode normalises a typed code: spaces and dashes are dropped; what is
// left must be 6 digits (a TOTP code) or 8 (a backup code). Anything else
// cannot be a code and is ErrWrongCode.
func ParseCode(s string) (Code, error) {
	if len(s) > maxCodeInput {
		return Code{}, ErrWrongCode
	}
	b := make([]byte, 0, BackupCodeDigits)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == ' ' || c == '-' || c == '\t':
		case c >= '0' && c <= '9' && len(b) < BackupCodeDigits:
			b = append(b, c)
		default:
			return Code{}, ErrWrongCode
		}
	}
	switch len(b) {
	case totp.Digits:
		return Code{Kind: TOTPCode, Digits: string(b)}, nil
	case BackupCodeDigits:
		return Code{Kind: BackupCode, Digits: string(b)}, nil
	}
	return Code{}, ErrWrongCode
}

// TwoFactor is a user's second factor, rebuilt from their two-factor stream.
type TwoFactor struct {
	UserID        uuid.UUID
	PendingSecret string // of an unconfirmed setup
	Enabled       bool
	EnabledAt     time.Time
	Secret        string
	// LastStep is the latest TOTP step accepted for the current secret.
	LastStep    int64
	BackupCodes []string // hashes of the unused ones
	// usedChallenges are the challenges answered so far, with when: a
	// challenge whose answer lost a race is found here when the command
	// decides again.
	usedChallenges map[uuid.UUID]time.Time
	Version        int64
	// sinceSnapshot counts the events applied after the latest snapshot (or
	// the stream's start).
	sinceSnapshot int
}

// Apply folds one event into the aggregate; at is when it happened.
func (t *TwoFactor) Apply(e Event, at time.Time) {
	switch e := e.(type) {
	case *TotpSetupStarted:
		t.UserID, t.PendingSecret = e.UserID, e.Secret.Secret
	case *TotpEnabled:
		t.UserID, t.Enabled, t.EnabledAt = e.UserID, true, at
		t.Secret, t.LastStep, t.PendingSecret = e.Secret.Secret, e.Step, ""
		t.BackupCodes = append([]string(nil), e.Secret.BackupCodes...)
	case *TotpDisabled:
		t.Enabled, t.EnabledAt, t.Secret, t.BackupCodes, t.PendingSecret = false, time.Time{}, "", nil, ""
	case *TotpCodeAccepted:
		t.LastStep = max(t.LastStep, e.Step)
		t.useChallenge(e.ChallengeID, at)
	case *BackupCodesRegenerated:
		t.BackupCodes = append([]string(nil), e.Secret.Hashes...)
	case *BackupCodeUsed:
		for i, h := range t.BackupCodes {
			if h == e.Secret.Hash {
				t.BackupCodes = append(t.BackupCodes[:i:i], t.BackupCodes[i+1:]...)
				break
			}
		}
		t.useChallenge(e.ChallengeID, at)
	case *TwoFactorSnapshotTaken:
		*t = TwoFactor{
			UserID: e.UserID, PendingSecret: e.Secret.PendingSecret, Enabled: e.Enabled, EnabledAt: e.EnabledAt,
			Secret: e.Secret.Secret, LastStep: e.LastStep, BackupCodes: append([]string(nil), e.Secret.BackupCodes...),
			Version: t.Version,
		}
		for id, at := range e.Challenges {
			t.useChallenge(id, at)
		}
		t.sinceSnapshot = -1 // the snapshot itself is not counted
	}
	t.Version++
	t.sinceSnapshot++
}

func (t *TwoFactor) useChallenge(id uuid.UUID, at time.Time) {
	if id == uuid.Nil {
		return
	}
	if t.usedChallenges == nil {
		t.usedChallenges = map[uuid.UUID]time.Time{}
	}
	t.usedChallenges[id] = at
}

// SnapshotDue reports whether enough events follow the latest snapshot for
// the next one to be worth appending.
func (t *TwoFactor) SnapshotDue() bool { return t.sinceSnapshot >= SnapshotEvery }

// Snapshot restates the aggregate as it is. A used challenge is left out once
// it is twice ChallengeTTL old: it has expired, and no answer to it gets as
// far as this aggregate.
func (t *TwoFactor) Snapshot(now time.Time) []Event {
	e := &TwoFactorSnapshotTaken{
		UserID: t.UserID, Enabled: t.Enabled, EnabledAt: t.EnabledAt, LastStep: t.LastStep,
		BackupCodes: len(t.BackupCodes), Challenges: map[uuid.UUID]time.Time{},
	}
	e.Secret = TwoFactorSnapshotSecrets{PendingSecret: t.PendingSecret, Secret: t.Secret, BackupCodes: append([]string{}, t.BackupCodes...)}
	for id, at := range t.usedChallenges {
		if now.Sub(at) < 2*ChallengeTTL {
			e.Challenges[id] = at
		}
	}
	return []Event{e}
}

// Setup starts a new setup with secret, drawn by the caller, in place of any
// unconfirmed one. A user with two-factor on must turn it off first.
func (t *TwoFactor) Setup(user uuid.UUID, secret string) ([]Event, error) {
	if t.Enabled {
		return nil, ErrTwoFactorEnabled
	}
	e := &TotpSetupStarted{UserID: user}
	e.Secret.Secret = secret
	return []Event{e}, nil
}

// Enable confirms the pending setup with a TOTP code of it at now, and sets
// the backup codes whose hashes are given.
func (t *TwoFactor) Enable(user uuid.UUID, code Code, now time.Time, backupHashes []string) ([]Event, error) {
	if t.Enabled || t.PendingSecret == "" {
		return nil, ErrNoSetupPending
	}
	if code.Kind != TOTPCode {
		return nil, ErrWrongCode
	}
	step, ok := totp.Match(t.PendingSecret, code.Digits, now, -1)
	if !ok {
		return nil, ErrWrongCode
	}
	e := &TotpEnabled{UserID: user, Step: step, BackupCodes: len(backupHashes)}
	e.Secret.Secret, e.Secret.BackupCodes = t.PendingSecret, backupHashes
	return []Event{e}, nil
}

// check finds what code proves: a TOTP step after the last accepted one, or
// an unused backup code (hash is the keyed hash of backup code digits).
func (t *TwoFactor) check(code Code, now time.Time, hash func(digits string) string) (step int64, backup string, err error) {
	switch code.Kind {
	case TOTPCode:
		if s, ok := totp.Match(t.Secret, code.Digits, now, t.LastStep); ok {
			return s, "", nil
		}
	case BackupCode:
		h := hash(code.Digits)
		found := -1
		for i, c := range t.BackupCodes { // every hash compared, in constant time
			if subtle.ConstantTimeCompare([]byte(c), []byte(h)) == 1 {
				found = i
			}
		}
		if found >= 0 {
			return 0, t.BackupCodes[found], nil
		}
	}
	return 0, "", ErrWrongCode
}

// Verify answers a login challenge with a TOTP or backup code at now. A
// challenge is answered once: a second answer, even one that raced the
// first, is ErrChallengeUsed.
func (t *TwoFactor) Verify(challenge uuid.UUID, code Code, now time.Time, hash func(string) string) ([]Event, error) {
	if !t.Enabled {
		return nil, ErrTwoFactorDisabled
	}
	if _, used := t.usedChallenges[challenge]; used {
		return nil, ErrChallengeUsed
	}
	step, backup, err := t.check(code, now, hash)
	if err != nil {
		return nil, err
	}
	if backup != "" {
		e := &BackupCodeUsed{UserID: t.UserID, ChallengeID: challenge, Remaining: len(t.BackupCodes) - 1}
		e.Secret.Hash = backup
		return []Event{e}, nil
	}
	return []Event{&TotpCodeAccepted{UserID: t.UserID, Step: step, ChallengeID: challenge}}, nil
}

// Disable turns two-factor authentication off, proven by a TOTP or backup code.
func (t *TwoFactor) Disable(code Code, now time.Time, hash func(string) string) ([]Event, error) {
	if !t.Enabled {
		return nil, ErrTwoFactorDisabled
	}
	if _, _, err := t.check(code, now, hash); err != nil {
		return nil, err
	}
	method := MethodTOTP
	if code.Kind == BackupCode {
		method = MethodBackupCode
	}
	return []Event{&TotpDisabled{UserID: t.UserID, Method: method}}, nil
}

// RegenerateBackupCodes replaces every backup code with the given hashes.
func (t *TwoFactor) RegenerateBackupCodes(hashes []string) ([]Event, error) {
	if !t.Enabled {
		return nil, ErrTwoFactorDisabled
	}
	e := &BackupCodesRegenerated{UserID: t.UserID, BackupCodes: len(hashes)}
	e.Secret.Hashes = hashes
	return []Event{e}, nil
}
