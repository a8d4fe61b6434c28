// Package password hashes and verifies passwords with argon2id, bounding how
// many hashes run at once.
//
// A hash is encoded as a PHC string,
//
//	$argon2id$v=19$m=19456,t=2,p=1$<salt>$<key>
//
// with salt and key in unpadded standard base64, so the parameters travel with
// the hash and can be raised later without invalidating stored hashes.
package password

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

// Length limits enforced by [Validate].
const (
	MinLen = 8    // runes
	MaxLen = 1024 // bytes
)

var (
	// ErrTooShort and ErrTooLong are returned by [Validate]; their messages
	// are safe to show users.
	ErrTooShort = errors.New("password must be at least 8 characters")
	ErrTooLong  = errors.New("password must be at most 1024 bytes")

	// ErrBusy means too many hashes are running or queued; the caller should
	// answer 503 with Retry-After rather than pile up more work.
	ErrBusy = errors.New("password: too many password checks in progress, try again shortly")

	// ErrMalformed means an encoded hash is not an argon2id PHC string this
	// package can verify.
	ErrMalformed = errors.New("password: malformed hash")
)

// Limits on parameters read from an encoded hash. They are far above any
// sensible setting; they exist so a corrupt or hostile stored hash cannot make
// one login allocate terabytes or run for hours.
const (
	maxMemory  = 4 << 20 // KiB, 4 GiB
	maxTime    = 1 << 8
	minSaltLen = 8 // the Argon2 specification's minimum
	maxSaltLen = 64
	minKeyLen  = 16
	maxKeyLen  = 64
)

// Params are argon2id cost parameters.
type Params struct {
	Memory  uint32 // KiB
	Time    uint32 // passes over memory
	Threads uint8  // lanes
	SaltLen uint32 // bytes
	KeyLen  uint32 // bytes
}

// OWASP returns the argon2id parameters recommended by the OWASP Password
// Storage Cheat Sheet: 19 MiB of memory, 2 passes, 1 lane, a 16-byte salt and
// a 32-byte key. One lane per hash lets the [Hasher]'s concurrency bound map
// directly to cores.
func OWASP() Params {
	return Params{Memory: 19456, Time: 2, Threads: 1, SaltLen: 16, KeyLen: 32}
}

func (p Params) validate() error {
	switch {
	case p.Time < 1 || p.Time > maxTime:
		return fmt.Errorf("time %d out of range [1, %d]", p.Time, maxTime)
	case p.Threads < 1:
		return errors.New("threads must be at least 1")
	// Argon2 needs 8 KiB per lane; x/crypto would silently round a smaller
	// value up, so the encoded m would not be what was computed.
	case p.Memory < 8*uint32(p.Threads) || p.Memory > maxMemory:
		return fmt.Errorf("memory %d KiB out of range [%d, %d]", p.Memory, 8*uint32(p.Threads), maxMemory)
	case p.SaltLen < minSaltLen || p.SaltLen > maxSaltLen:
		return fmt.Errorf("salt length %d out of range [%d, %d]", p.SaltLen, minSaltLen, maxSaltLen)
	case p.KeyLen < minKeyLen || p.KeyLen > maxKeyLen:
		return fmt.Errorf("key length %d out of range [%d, %d]", p.KeyLen, minKeyLen, maxKeyLen)
	}
	return nil
}

// Validate reports whether password is acceptable as a new password: at least
// [MinLen] characters and at most [MaxLen] bytes. The upper bound is not about
// hashing cost, which does not depend on length, but about refusing
// megabyte-sized inputs outright.
func Validate(password string) error {
	// Check bytes first so an oversized input is never scanned for runes.
	if len(password) > MaxLen {
		return ErrTooLong
	}
	if utf8.RuneCountInString(password) < MinLen {
		return ErrTooShort
	}
	return nil
}

// Admission says where a password check comes from, so that the [Hasher]
// can share its queue fairly when there is more work than it can do.
type Admission struct {
	// Network is the client's network ([Network]), or "" for work no client
	// network is to be charged for (a signup's hash, say).
	Network string
	// Known is true when the client network has signed in to the account
	// before: such checks wait in places of their own and run first.
	Known bool
}

// Hasher hashes and verifies passwords with fixed parameters. At most a
// configured number of hashes compute at once and a bounded number of callers
// wait for a turn, so a flood of password requests fails fast with [ErrBusy]
// instead of starving every other request of CPU and memory.
//
// Admission is fair per client network and favours known clients: a network
// holds at most concurrency+queue/2 places (running or waiting) of each kind,
// known or not, so one network cannot fill the queue; known checks have
// concurrency waiting places beyond the queue that only they may take, and
// a freed slot goes to the longest-waiting known check before any other.
// Checks from unknown networks run in all slots but one, so that however
// many of them come, a known check finds a slot free or has the next one,
// and the rest of the process keeps a core their hashes do not take. A
// flood from unknown networks therefore leaves the owner of an account,
// signing in from a network it used before, a place and the next turn.
//
// A Hasher is safe for concurrent use.
type Hasher struct {
	params Params

	// concurrency hashes compute at once, at most strangerSlots of them
	// for unknown networks; queue callers may wait besides, and known
	// callers reserved more; a network holds at most netCap places of each
	// kind.
	concurrency, strangerSlots, queue, reserved, netCap int

	mu sync.Mutex
	// running counts the hashes computing, strangers those of them for
	// unknown networks.
	running, strangers int
	// waiting holds the callers waiting for a slot, oldest first: [0]
	// unknown, [1] known.
	waiting [2][]*waiter
	// held counts each network's places, running or waiting, by kind.
	held map[Admission]int

	// dummy is a hash of no password under params, verified by VerifyUnknown.
	dummy string

	// derive computes the key; a field so tests can count or block the work.
	derive func(password, salt []byte, p Params) []byte
}

// waiter is a caller waiting for a slot; ready is closed when it has one.
type waiter struct {
	adm   Admission
	ready chan struct{}
}

// NewHasher returns a Hasher using p. Zero fields of p take the value from
// [OWASP]. At most concurrency hashes compute at once (runtime.NumCPU() when
// concurrency <= 0), all but one of them for checks from unknown networks
// unless there is only one, and at most queue further callers wait for a turn
// (2*concurrency when queue < 0), plus concurrency known callers
// ([Admission]); any caller beyond that gets [ErrBusy] at once. Pass queue 0
// for no waiting but the known callers'.
//
// NewHasher panics if p is out of range, as that is a programming error.
func NewHasher(p Params, concurrency, queue int) *Hasher {
	def := OWASP()
	if p.Memory == 0 {
		p.Memory = def.Memory
	}
	if p.Time == 0 {
		p.Time = def.Time
	}
	if p.Threads == 0 {
		p.Threads = def.Threads
	}
	if p.SaltLen == 0 {
		p.SaltLen = def.SaltLen
	}
	if p.KeyLen == 0 {
		p.KeyLen = def.KeyLen
	}
	if err := p.validate(); err != nil {
		panic("password: NewHasher: " + err.Error())
	}
	if concurrency <= 0 {
		concurrency = runtime.NumCPU()
	}
	if queue < 0 {
		queue = 2 * concurrency
	}
	h := &Hasher{
		params:      p,
		concurrency: concurrency,
		// One slot for known checks alone, unless there is only one.
		strangerSlots: max(1, concurrency-1),
		queue:         queue,
		reserved:      concurrency,
		// Enough for one network alone to keep every slot busy, too few
		// for it to fill the queue.
		netCap: concurrency + queue/2,
		held:   make(map[Admission]int),
		derive: func(password, salt []byte, p Params) []byte {
			return argon2.IDKey(password, salt, p.Time, p.Memory, p.Threads, p.KeyLen)
		},
	}
	// The dummy needs the shape of a real hash, not to be the hash of
	// anything: random bytes cost nothing here, where computing a real hash
	// would cost a full argon2 run per Hasher. Verifying against it costs
	// exactly what verifying against a real hash does.
	salt := make([]byte, p.SaltLen)
	key := make([]byte, p.KeyLen)
	rand.Read(salt)
	rand.Read(key)
	h.dummy = encode(p, salt, key)
	return h
}

// Params returns the parameters new hashes are made with.
func (h *Hasher) Params() Params { return h.params }

// Hash validates password with [Validate] and returns its encoded argon2id
// hash. It returns [ErrBusy] when too many callers are hashing already, and
// ctx's error if ctx ends while waiting for a turn. It is charged to no
// client network.
func (h *Hasher) Hash(ctx context.Context, password string) (string, error) {
	if err := Validate(password); err != nil {
		return "", err
	}
	salt := make([]byte, h.params.SaltLen)
	rand.Read(salt) // never fails since Go 1.24; it crashes the program instead
	if err := h.acquire(ctx, Admission{}); err != nil {
		return "", err
	}
	defer h.release(Admission{})
	key := h.derive([]byte(password), salt, h.params)
	return encode(h.params, salt, key), nil
}

// Verify reports whether password matches encoded, and whether encoded was
// made with parameters other than h's, in which case the caller should store
// a fresh [Hasher.Hash] of the password. rehash is only ever true when ok is.
// adm says whose check it is, for admission.
//
// A password longer than [MaxLen] never matches, since [Hasher.Hash] refuses
// to hash one, and is rejected without hashing. A malformed encoded hash is an
// error wrapping [ErrMalformed]. Like Hash, Verify may return [ErrBusy] or
// ctx's error.
func (h *Hasher) Verify(ctx context.Context, adm Admission, encoded, password string) (ok, rehash bool, err error) {
	if len(password) > MaxLen {
		return false, false, nil
	}
	p, salt, want, err := decode(encoded)
	if err != nil {
		return false, false, err
	}
	if err := h.acquire(ctx, adm); err != nil {
		return false, false, err
	}
	defer h.release(adm)
	got := h.derive([]byte(password), salt, p)
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return false, false, nil
	}
	return true, p != h.params, nil
}

// VerifyUnknown does the work of a failing [Hasher.Verify] for an account that
// does not exist, so that an unknown email costs a login request as much time
// as a wrong password and response times do not reveal which accounts exist.
// It is admitted as adm, as Verify would be, and returns nil, or [ErrBusy] or
// ctx's error just as Verify would.
func (h *Hasher) VerifyUnknown(ctx context.Context, adm Admission, password string) error {
	_, _, err := h.Verify(ctx, adm, h.dummy, password)
	return err
}

// Full reports whether a check admitted as adm asked for now would be refused
// with [ErrBusy], so that a caller can turn a request away before doing any
// other work for it. A caller that goes on may still get ErrBusy: Full only
// looks.
func (h *Hasher) Full(adm Admission) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.admits(adm)
}

// admits says whether adm may have a place now. h.mu must be held.
func (h *Hasher) admits(adm Admission) bool {
	if adm.Network != "" && h.held[adm] >= h.netCap {
		return false
	}
	if h.canRun(adm) {
		return true
	}
	unknown, known := len(h.waiting[0]), len(h.waiting[1])
	if adm.Known {
		return unknown+known < h.queue+h.reserved
	}
	// Known callers wait in their reserved places first and take from the
	// queue only what overflows them.
	return unknown+max(0, known-h.reserved) < h.queue
}

// acquire waits for a turn to compute a hash. It fails at once with ErrBusy
// when adm may have no place, since waiting longer would only add latency to
// a request that the server cannot keep up with anyway.
func (h *Hasher) acquire(ctx context.Context, adm Admission) error {
	// Without this, a done ctx could still win the select below against a
	// free slot and start an expensive hash for a caller that has gone.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("password: wait for a hashing slot: %w", err)
	}
	h.mu.Lock()
	if !h.admits(adm) {
		h.mu.Unlock()
		return ErrBusy
	}
	h.hold(adm, 1)
	if h.canRun(adm) {
		h.start(adm)
		h.mu.Unlock()
		return nil
	}
	w := &waiter{adm: adm, ready: make(chan struct{})}
	k := kind(adm)
	h.waiting[k] = append(h.waiting[k], w)
	h.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
	}
	h.mu.Lock()
	if i := slices.Index(h.waiting[k], w); i >= 0 {
		h.waiting[k] = slices.Delete(h.waiting[k], i, i+1)
		h.hold(adm, -1)
		h.mu.Unlock()
	} else {
		// The slot came with the cancellation: pass it on unused.
		h.mu.Unlock()
		h.release(adm)
	}
	return fmt.Errorf("password: wait for a hashing slot: %w", ctx.Err())
}

// release ends adm's turn and hands the slot to the longest-waiting known
// caller, or else the longest-waiting other one that may have it.
func (h *Hasher) release(adm Admission) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hold(adm, -1)
	h.running--
	if stranger(adm) {
		h.strangers--
	}
	for h.running < h.concurrency {
		k := 1
		if len(h.waiting[k]) == 0 {
			k = 0
			if len(h.waiting[k]) == 0 || !h.strangerMayRun(h.waiting[k][0].adm) {
				return
			}
		}
		w := h.waiting[k][0]
		h.waiting[k][0] = nil
		h.waiting[k] = h.waiting[k][1:]
		h.start(w.adm)
		close(w.ready)
	}
}

// canRun says whether adm may start computing at once: a slot is free to it
// and nobody it would overtake is waiting. h.mu must be held.
func (h *Hasher) canRun(adm Admission) bool {
	if h.running >= h.concurrency || len(h.waiting[kind(adm)]) > 0 {
		return false
	}
	// Known callers never wait while a slot is free, so a known adm
	// overtakes nobody.
	return adm.Known || h.strangerMayRun(adm)
}

// strangerMayRun says whether the unknown caller adm may take a free slot.
// h.mu must be held.
func (h *Hasher) strangerMayRun(adm Admission) bool {
	return !stranger(adm) || h.strangers < h.strangerSlots
}

// start counts adm's hash as computing. h.mu must be held.
func (h *Hasher) start(adm Admission) {
	h.running++
	if stranger(adm) {
		h.strangers++
	}
}

// stranger says whether adm is a check from a network not known to the
// account, kept out of the last slot. Work charged to no network (a signup's
// hash) is not: the limits on its own endpoints bound it.
func stranger(adm Admission) bool { return adm.Network != "" && !adm.Known }

// hold adds n to adm's places. h.mu must be held.
func (h *Hasher) hold(adm Admission, n int) {
	if adm.Network == "" {
		return
	}
	if h.held[adm] += n; h.held[adm] == 0 {
		delete(h.held, adm)
	}
}

// kind is the index in Hasher.waiting of adm's callers.
func kind(adm Admission) int {
	if adm.Known {
		return 1
	}
	return 0
}

func encode(p Params, salt, key []byte) string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.Memory, p.Time, p.Threads,
		base64.RawStdEncoding.EncodeToString(salt),
		base64.RawStdEncoding.EncodeToString(key))
}

// decode parses an encoded hash. Error messages never quote the input: it is
// a secret (a hash) and may be garbage of any size.
func decode(encoded string) (p Params, salt, key []byte, err error) {
	// The longest valid string is well under 256 bytes; refusing more up
	// front keeps garbage from costing anything.
	if len(encoded) > 256 {
		return Params{}, nil, nil, fmt.Errorf("%w: too long", ErrMalformed)
	}
	fields := strings.Split(encoded, "$")
	if len(fields) != 6 || fields[0] != "" {
		return Params{}, nil, nil, fmt.Errorf("%w: want 5 $-separated fields", ErrMalformed)
	}
	if fields[1] != "argon2id" {
		return Params{}, nil, nil, fmt.Errorf("%w: algorithm is not argon2id", ErrMalformed)
	}
	if fields[2] != "v="+strconv.Itoa(argon2.Version) {
		return Params{}, nil, nil, fmt.Errorf("%w: unsupported argon2 version", ErrMalformed)
	}
	m, t, threads, ok := parseCost(fields[3])
	if !ok {
		return Params{}, nil, nil, fmt.Errorf("%w: parameters are not m=<n>,t=<n>,p=<n>", ErrMalformed)
	}
	enc := base64.RawStdEncoding.Strict()
	salt, err = enc.DecodeString(fields[4])
	if err != nil {
		return Params{}, nil, nil, fmt.Errorf("%w: decode salt: %w", ErrMalformed, err)
	}
	key, err = enc.DecodeString(fields[5])
	if err != nil {
		return Params{}, nil, nil, fmt.Errorf("%w: decode key: %w", ErrMalformed, err)
	}
	p = Params{Memory: m, Time: t, Threads: threads, SaltLen: uint32(len(salt)), KeyLen: uint32(len(key))}
	if err := p.validate(); err != nil {
		return Params{}, nil, nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	// Accept only the canonical form (no leading zeros, no line breaks in
	// base64, which the decoder would skip), so one hash has one spelling.
	if encode(p, salt, key) != encoded {
		return Params{}, nil, nil, fmt.Errorf("%w: not in canonical form", ErrMalformed)
	}
	return p, salt, key, nil
}

// parseCost parses "m=<n>,t=<n>,p=<n>", in that order as every argon2
// implementation writes it.
func parseCost(s string) (m, t uint32, p uint8, ok bool) {
	parts := strings.Split(s, ",")
	if len(parts) != 3 {
		return 0, 0, 0, false
	}
	var vals [3]uint64
	for i, name := range [3]string{"m=", "t=", "p="} {
		digits, found := strings.CutPrefix(parts[i], name)
		if !found {
			return 0, 0, 0, false
		}
		bits := 32
		if i == 2 {
			bits = 8
		}
		v, err := strconv.ParseUint(digits, 10, bits)
		if err != nil {
			return 0, 0, 0, false
		}
		vals[i] = v
	}
	return uint32(vals[0]), uint32(vals[1]), uint8(vals[2]), true
}
