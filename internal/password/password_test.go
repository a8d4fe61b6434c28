package password

import (
	"context"
	"errors"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
)

// fastParams keeps tests quick; the cost parameters do not change the logic.
func fastParams() Params {
	return Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}
}

// countDerive makes h count its argon2 runs, and still run them.
func countDerive(h *Hasher) *atomic.Int64 {
	var n atomic.Int64
	next := h.derive
	h.derive = func(password, salt []byte, p Params) []byte {
		n.Add(1)
		return next(password, salt, p)
	}
	return &n
}

// blockDerive makes h's hashes announce themselves on the returned channel and
// then wait until release is called, so a test can hold hashing slots without
// depending on how long argon2 takes.
func blockDerive(h *Hasher) (started <-chan struct{}, release func()) {
	start := make(chan struct{}, 16)
	gate := make(chan struct{})
	next := h.derive
	h.derive = func(password, salt []byte, p Params) []byte {
		start <- struct{}{}
		<-gate
		return next(password, salt, p)
	}
	var once sync.Once
	return start, func() { once.Do(func() { close(gate) }) }
}

func TestOWASP(t *testing.T) {
	p := OWASP()
	if p.Memory < 19456 || p.Time < 2 || p.Threads < 1 || p.SaltLen < 16 || p.KeyLen < 32 {
		t.Fatalf("OWASP() = %+v, below m=19456 t=2 p=1 salt=16 key=32", p)
	}
	if err := p.validate(); err != nil {
		t.Fatalf("OWASP() invalid: %v", err)
	}
	if testing.Short() {
		t.Skip("one full-cost hash")
	}
	h := NewHasher(p, 1, 0)
	ctx := t.Context()
	enc, err := h.Hash(ctx, "correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	if want := "$argon2id$v=19$m=19456,t=2,p=1$"; !strings.HasPrefix(enc, want) {
		t.Errorf("hash %q does not start with %q", enc, want)
	}
	ok, rehash, err := h.Verify(ctx, Admission{}, enc, "correct horse battery staple")
	if !ok || rehash || err != nil {
		t.Errorf("Verify = %v, %v, %v; want true, false, nil", ok, rehash, err)
	}
}

func TestNewHasherDefaults(t *testing.T) {
	h := NewHasher(Params{}, 0, -1)
	if h.Params() != OWASP() {
		t.Errorf("Params() = %+v, want OWASP %+v", h.Params(), OWASP())
	}
	if got, want := h.concurrency, runtime.NumCPU(); got != want {
		t.Errorf("concurrency %d, want NumCPU %d", got, want)
	}
	if got, want := h.concurrency+h.queue, 3*runtime.NumCPU(); got != want {
		t.Errorf("concurrency+queue %d, want %d", got, want)
	}

	h = NewHasher(Params{Memory: 64, Time: 1}, 3, 0)
	if want := (Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}); h.Params() != want {
		t.Errorf("Params() = %+v, want %+v", h.Params(), want)
	}
	if h.concurrency != 3 || h.concurrency+h.queue != 3 {
		t.Errorf("concurrency %d, concurrency+queue %d; want 3, 3", h.concurrency, h.concurrency+h.queue)
	}
}

func TestNewHasherInvalidParamsPanics(t *testing.T) {
	for _, p := range []Params{
		{Memory: 7, Time: 1, Threads: 1},  // below 8 KiB per lane
		{Memory: 64, Time: 1, Threads: 9}, // below 8 KiB per lane
		{Memory: 64, Time: 1, SaltLen: 4}, // salt too short
		{Memory: 64, Time: 1, KeyLen: 8},  // key too short
		{Memory: maxMemory + 1, Time: 1},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewHasher(%+v) did not panic", p)
				}
			}()
			NewHasher(p, 1, 0)
		}()
	}
}

func TestHashVerify(t *testing.T) {
	h := NewHasher(fastParams(), 1, 0)
	ctx := t.Context()
	const pw = "hunter2hunter2"
	enc, err := h.Hash(ctx, pw)
	if err != nil {
		t.Fatal(err)
	}
	phc := regexp.MustCompile(`^\$argon2id\$v=19\$m=64,t=1,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`)
	if !phc.MatchString(enc) {
		t.Errorf("hash %q is not an argon2id PHC string with a 16-byte salt and 32-byte key", enc)
	}
	if strings.Contains(enc, pw) {
		t.Errorf("hash contains the password")
	}

	ok, rehash, err := h.Verify(ctx, Admission{}, enc, pw)
	if !ok || rehash || err != nil {
		t.Errorf("Verify(right password) = %v, %v, %v; want true, false, nil", ok, rehash, err)
	}
	for _, wrong := range []string{"hunter2hunter3", "hunter2hunter2 ", "Hunter2hunter2", "", "hunter2"} {
		ok, rehash, err := h.Verify(ctx, Admission{}, enc, wrong)
		if ok || rehash || err != nil {
			t.Errorf("Verify(%q) = %v, %v, %v; want false, false, nil", wrong, ok, rehash, err)
		}
	}

	enc2, err := h.Hash(ctx, pw)
	if err != nil {
		t.Fatal(err)
	}
	if enc2 == enc {
		t.Error("two hashes of one password are equal: salt is not random")
	}
}

// TestReferenceVector checks interoperability with the Argon2 reference
// implementation (phc-winner-argon2 src/test.c), so hashes can move between
// implementations in either direction.
func TestReferenceVector(t *testing.T) {
	if testing.Short() {
		t.Skip("one 64 MiB hash")
	}
	const enc = "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc"
	// "somesalt" is an 8-byte salt, so the hasher's params differ from the hash's.
	h := NewHasher(fastParams(), 1, 0)
	ok, rehash, err := h.Verify(t.Context(), Admission{}, enc, "password")
	if !ok || !rehash || err != nil {
		t.Errorf("Verify(reference) = %v, %v, %v; want true, true, nil", ok, rehash, err)
	}
}

func TestValidate(t *testing.T) {
	for _, tt := range []struct {
		pw   string
		want error
	}{
		{"", ErrTooShort},
		{"1234567", ErrTooShort},
		{"12345678", nil},
		{"пароль12", nil},                  // 8 runes, 14 bytes
		{"日本語の", ErrTooShort},              // 12 bytes, 4 runes
		{"😀😀😀😀😀😀😀", ErrTooShort},           // 28 bytes, 7 runes
		{strings.Repeat("a", MaxLen), nil}, // exactly the cap
		{strings.Repeat("a", MaxLen+1), ErrTooLong},
		{strings.Repeat("é", MaxLen/2+1), ErrTooLong}, // 513 runes but 1026 bytes
		{strings.Repeat("a", 1<<20), ErrTooLong},
	} {
		if got := Validate(tt.pw); got != tt.want {
			t.Errorf("Validate(%.20q, %d bytes) = %v, want %v", tt.pw, len(tt.pw), got, tt.want)
		}
	}
}

func TestHashRejectsInvalidWithoutHashing(t *testing.T) {
	h := NewHasher(fastParams(), 1, 0)
	n := countDerive(h)
	for pw, want := range map[string]error{"short": ErrTooShort, strings.Repeat("x", MaxLen+1): ErrTooLong} {
		if _, err := h.Hash(t.Context(), pw); !errors.Is(err, want) {
			t.Errorf("Hash(%d bytes) error = %v, want %v", len(pw), err, want)
		}
	}
	if n.Load() != 0 {
		t.Errorf("argon2 ran %d times for invalid passwords, want 0", n.Load())
	}
}

func TestVerifyOverlongPasswordNeverMatches(t *testing.T) {
	h := NewHasher(fastParams(), 1, 0)
	enc, err := h.Hash(t.Context(), "a fine password")
	if err != nil {
		t.Fatal(err)
	}
	n := countDerive(h)
	ok, rehash, err := h.Verify(t.Context(), Admission{}, enc, strings.Repeat("x", MaxLen+1))
	if ok || rehash || err != nil {
		t.Errorf("Verify(overlong) = %v, %v, %v; want false, false, nil", ok, rehash, err)
	}
	if err := h.VerifyUnknown(t.Context(), Admission{}, strings.Repeat("x", MaxLen+1)); err != nil {
		t.Errorf("VerifyUnknown(overlong) = %v", err)
	}
	if n.Load() != 0 {
		t.Errorf("argon2 ran %d times for an overlong password, want 0", n.Load())
	}
}

func TestRehash(t *testing.T) {
	ctx := t.Context()
	const pw = "a fine password"
	old := NewHasher(fastParams(), 1, 0)
	enc, err := old.Hash(ctx, pw)
	if err != nil {
		t.Fatal(err)
	}
	for _, change := range []func(*Params){
		func(p *Params) { p.Memory *= 2 },
		func(p *Params) { p.Time++ },
		func(p *Params) { p.Threads++ },
		func(p *Params) { p.SaltLen += 8 },
		func(p *Params) { p.KeyLen += 8 },
	} {
		p := fastParams()
		change(&p)
		h := NewHasher(p, 1, 0)
		ok, rehash, err := h.Verify(ctx, Admission{}, enc, pw)
		if !ok || !rehash || err != nil {
			t.Errorf("params %+v: Verify(old hash) = %v, %v, %v; want true, true, nil", p, ok, rehash, err)
		}
		// A wrong password must not prompt a rehash: there is nothing to store.
		ok, rehash, err = h.Verify(ctx, Admission{}, enc, "a wrong password")
		if ok || rehash || err != nil {
			t.Errorf("params %+v: Verify(wrong) = %v, %v, %v; want false, false, nil", p, ok, rehash, err)
		}
		// The rehashed password verifies under the new params without a rehash.
		enc2, err := h.Hash(ctx, pw)
		if err != nil {
			t.Fatal(err)
		}
		if ok, rehash, err := h.Verify(ctx, Admission{}, enc2, pw); !ok || rehash || err != nil {
			t.Errorf("params %+v: Verify(new hash) = %v, %v, %v; want true, false, nil", p, ok, rehash, err)
		}
	}
}

// malformedHashes are encoded strings Verify must refuse; valid is a good
// hash of "password" under fastParams to derive them from.
func malformedHashes(valid string) []string {
	return []string{
		"",
		"$",
		"$argon2id$",
		"argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
		"$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy", // bcrypt
		strings.Replace(valid, "argon2id", "argon2i", 1),
		strings.Replace(valid, "argon2id", "argon2d", 1),
		strings.Replace(valid, "v=19", "v=16", 1),
		strings.Replace(valid, "$v=19", "", 1),
		strings.Replace(valid, "m=64", "m=0", 1),
		strings.Replace(valid, "m=64", "m=7", 1),
		strings.Replace(valid, "m=64", "m=064", 1),
		strings.Replace(valid, "m=64", "m=+64", 1),
		strings.Replace(valid, "m=64", "m=-64", 1),
		strings.Replace(valid, "m=64", "m=4294967295", 1),
		strings.Replace(valid, "m=64", "m=4294967296", 1),
		strings.Replace(valid, "t=1", "t=0", 1),
		strings.Replace(valid, "t=1", "t=4294967295", 1),
		strings.Replace(valid, "p=1", "p=0", 1),
		strings.Replace(valid, "p=1", "p=256", 1),
		strings.Replace(valid, "m=64,t=1,p=1", "t=1,m=64,p=1", 1),
		strings.Replace(valid, "m=64,t=1,p=1", "m=64,t=1,p=1,keyid=abc", 1),
		strings.Replace(valid, "m=64,t=1,p=1", "m=64,t=1", 1),
		strings.Replace(valid, "m=64,t=1,p=1", "", 1),
		valid + "$",
		valid + "=",
		valid + "AB", // 45 base64 characters are no whole number of bytes
		"$" + valid,
		valid[:strings.LastIndex(valid, "$")+1], // empty key
		valid[:strings.LastIndex(valid, "$")] + "$AAAA",  // 3-byte key
		strings.Replace(valid, "$", "$\n", 4),            // line breaks the decoder would skip
		valid[:strings.LastIndex(valid, "$")] + "$!!!!!", // not base64
		valid + strings.Repeat("A", 1<<16),
		"\x00\xff$argon2id$v=19$m=64,t=1,p=1$\xc3\x28$\xe2\x82",
	}
}

func TestVerifyMalformed(t *testing.T) {
	h := NewHasher(fastParams(), 1, 0)
	ctx := t.Context()
	const pw = "s3cret-Pa55word"
	valid, err := h.Hash(ctx, "password")
	if err != nil {
		t.Fatal(err)
	}
	n := countDerive(h)
	for _, enc := range malformedHashes(valid) {
		ok, rehash, err := h.Verify(ctx, Admission{}, enc, pw)
		if ok || rehash || !errors.Is(err, ErrMalformed) {
			t.Errorf("Verify(%.100q) = %v, %v, %v; want false, false, ErrMalformed", enc, ok, rehash, err)
		}
		if err != nil && strings.Contains(err.Error(), pw) {
			t.Errorf("Verify(%.100q) error %q contains the password", enc, err)
		}
	}
	if n.Load() != 0 {
		t.Errorf("argon2 ran %d times on malformed hashes, want 0", n.Load())
	}
}

func FuzzVerify(f *testing.F) {
	h := NewHasher(fastParams(), 1, 0)
	valid, err := h.Hash(context.Background(), "password")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid, "password")
	f.Add(valid, "wrong password")
	f.Add("$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc", "password")
	for _, enc := range malformedHashes(valid) {
		f.Add(enc, "password")
	}

	// Mutated parameters can be valid yet expensive (m up to 4 GiB); fuzzing
	// is about parsing, so run argon2 for real only when it is cheap.
	next := h.derive
	h.derive = func(password, salt []byte, p Params) []byte {
		if uint64(p.Memory)*uint64(p.Time) > 1<<12 {
			return make([]byte, p.KeyLen)
		}
		return next(password, salt, p)
	}

	f.Fuzz(func(t *testing.T, encoded, password string) {
		ok, rehash, err := h.Verify(context.Background(), Admission{}, encoded, password)
		if err != nil && (ok || rehash) {
			t.Fatalf("Verify = %v, %v, %v: ok or rehash with an error", ok, rehash, err)
		}
		if rehash && !ok {
			t.Fatal("rehash without ok")
		}
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("Verify error %v does not wrap ErrMalformed", err)
		}
		if err == nil && len(password) <= MaxLen {
			// Whatever parsed must be in canonical form, so it re-encodes
			// to itself.
			p, salt, key, err := decode(encoded)
			if err != nil {
				t.Fatalf("Verify accepted a hash decode rejects: %v", err)
			}
			if got := encode(p, salt, key); got != encoded {
				t.Fatalf("decode/encode changed %q to %q", encoded, got)
			}
		}
	})
}

// TestBusy holds the only slot of a hasher with no queue and checks that
// every other caller is turned away at once instead of waiting.
func TestBusy(t *testing.T) {
	h := NewHasher(fastParams(), 1, 0)
	ctx := t.Context()
	valid, err := h.Hash(ctx, "password")
	if err != nil {
		t.Fatal(err)
	}
	started, release := blockDerive(h)
	defer release()

	done := make(chan error)
	go func() {
		_, err := h.Hash(ctx, "first caller")
		done <- err
	}()
	<-started

	if !h.Full(Admission{}) {
		t.Error("Full while busy = false")
	}
	if _, err := h.Hash(ctx, "second caller"); !errors.Is(err, ErrBusy) {
		t.Errorf("Hash while busy: %v, want ErrBusy", err)
	}
	if _, _, err := h.Verify(ctx, Admission{}, valid, "password"); !errors.Is(err, ErrBusy) {
		t.Errorf("Verify while busy: %v, want ErrBusy", err)
	}
	if err := h.VerifyUnknown(ctx, Admission{}, "password"); !errors.Is(err, ErrBusy) {
		t.Errorf("VerifyUnknown while busy: %v, want ErrBusy", err)
	}

	release()
	if err := <-done; err != nil {
		t.Fatalf("first caller: %v", err)
	}
	// The slot is free again.
	if h.Full(Admission{}) {
		t.Error("Full after the slot was freed = true")
	}
	if _, _, err := h.Verify(ctx, Admission{}, valid, "password"); err != nil {
		t.Errorf("Verify after the slot was freed: %v", err)
	}
}

// TestQueue checks that callers up to the queue length wait for a slot and
// then run, and the one after them is turned away.
func TestQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := NewHasher(fastParams(), 1, 2)
		n := countDerive(h)
		started, release := blockDerive(h)
		ctx := t.Context()

		errs := make(chan error, 3)
		hash := func() {
			_, err := h.Hash(ctx, "a fine password")
			errs <- err
		}
		go hash()
		<-started
		go hash()
		go hash()
		synctest.Wait() // both are waiting for the slot now

		if _, err := h.Hash(ctx, "a fine password"); !errors.Is(err, ErrBusy) {
			t.Errorf("Hash with a full queue: %v, want ErrBusy", err)
		}
		release()
		for range 3 {
			if err := <-errs; err != nil {
				t.Errorf("queued caller: %v", err)
			}
		}
		if n.Load() != 3 {
			t.Errorf("argon2 ran %d times, want 3", n.Load())
		}
	})
}

func TestCancelWhileQueued(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := NewHasher(fastParams(), 1, 1)
		n := countDerive(h)
		started, release := blockDerive(h)
		defer release()

		first := make(chan error, 1)
		go func() {
			_, err := h.Hash(t.Context(), "a fine password")
			first <- err
		}()
		<-started

		ctx, cancel := context.WithCancel(t.Context())
		queued := make(chan error, 1)
		go func() {
			queued <- h.VerifyUnknown(ctx, Admission{}, "a fine password")
		}()
		synctest.Wait() // the second caller is waiting for the slot
		select {
		case err := <-queued:
			t.Fatalf("queued caller returned before cancel: %v", err)
		default:
		}
		cancel()
		if err := <-queued; !errors.Is(err, context.Canceled) {
			t.Errorf("queued caller after cancel: %v, want context.Canceled", err)
		}

		// The canceled caller gave its place in the queue back.
		second := make(chan error, 1)
		go func() {
			_, err := h.Hash(t.Context(), "a fine password")
			second <- err
		}()
		synctest.Wait()
		select {
		case err := <-second:
			t.Fatalf("caller after the canceled one was not queued: %v", err)
		default:
		}

		release()
		if err := <-first; err != nil {
			t.Errorf("first caller: %v", err)
		}
		if err := <-second; err != nil {
			t.Errorf("caller after the canceled one: %v", err)
		}
		if n.Load() != 2 {
			t.Errorf("argon2 ran %d times, want 2 (none for the canceled caller)", n.Load())
		}
	})
}

func TestCanceledContextDoesNotHash(t *testing.T) {
	h := NewHasher(fastParams(), 1, 0)
	n := countDerive(h)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	// The slot is free, so only the up-front check stops the hash.
	for range 20 {
		if _, err := h.Hash(ctx, "a fine password"); !errors.Is(err, context.Canceled) {
			t.Fatalf("Hash with a canceled ctx: %v, want context.Canceled", err)
		}
	}
	if n.Load() != 0 {
		t.Errorf("argon2 ran %d times for a canceled ctx, want 0", n.Load())
	}
}

// TestVerifyUnknownDoesTheWork checks that an unknown account costs the same
// argon2 run as a known account with a wrong password: same count, same
// parameters, same salt and key sizes.
func TestVerifyUnknownDoesTheWork(t *testing.T) {
	type call struct {
		p       Params
		saltLen int
		keyLen  int
	}
	h := NewHasher(fastParams(), 1, 0)
	ctx := t.Context()
	enc, err := h.Hash(ctx, "the real password")
	if err != nil {
		t.Fatal(err)
	}
	var calls []call
	next := h.derive
	h.derive = func(password, salt []byte, p Params) []byte {
		key := next(password, salt, p)
		calls = append(calls, call{p, len(salt), len(key)})
		return key
	}

	if ok, _, err := h.Verify(ctx, Admission{}, enc, "a wrong password"); ok || err != nil {
		t.Fatalf("Verify(wrong) = %v, %v", ok, err)
	}
	if err := h.VerifyUnknown(ctx, Admission{}, "a wrong password"); err != nil {
		t.Fatalf("VerifyUnknown = %v", err)
	}
	if len(calls) != 2 {
		t.Fatalf("argon2 ran %d times for one Verify and one VerifyUnknown, want 2", len(calls))
	}
	if calls[0] != calls[1] {
		t.Errorf("Verify ran argon2 as %+v, VerifyUnknown as %+v", calls[0], calls[1])
	}
	if want := (call{fastParams(), 16, 32}); calls[1] != want {
		t.Errorf("VerifyUnknown ran argon2 as %+v, want %+v", calls[1], want)
	}
}

func TestErrorsDoNotLeakPassword(t *testing.T) {
	const pw = "Tr0ub4dor&3-unique"
	h := NewHasher(fastParams(), 1, 0)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err1 := h.Hash(ctx, pw)
	_, _, err2 := h.Verify(t.Context(), Admission{}, "$argon2id$v=19$m=64,t=1,p=1$"+pw+"$"+pw, pw)
	err3 := h.VerifyUnknown(ctx, Admission{}, pw)
	for _, err := range []error{err1, err2, err3} {
		if err == nil {
			t.Fatal("want an error")
		}
		if strings.Contains(err.Error(), pw) {
			t.Errorf("error %q contains the password", err)
		}
	}
}

// recordOrder makes h note each hashed password, in the order the hashes
// start: with one slot, the order callers were given their turn.
func recordOrder(h *Hasher) func() []string {
	var mu sync.Mutex
	var order []string
	next := h.derive
	h.derive = func(password, salt []byte, p Params) []byte {
		mu.Lock()
		order = append(order, string(password))
		mu.Unlock()
		return next(password, salt, p)
	}
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(order)
	}
}

// TestAFloodFromOneNetworkLeavesOthersAPlace checks that one network's
// flood of checks cannot take every place in the queue: another network's
// check still waits for its turn and runs, where the flood's surplus is
// refused.
func TestAFloodFromOneNetworkLeavesOthersAPlace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := NewHasher(fastParams(), 1, 4)
		started, release := blockDerive(h)
		defer release()
		order := recordOrder(h)
		ctx := t.Context()
		flood := Admission{Network: "198.51.100.0/24"}
		other := Admission{Network: "203.0.113.0/24"}

		errs := make(chan error, 8)
		verify := func(adm Admission, pw string) {
			errs <- h.VerifyUnknown(ctx, adm, pw)
		}
		go verify(flood, "flood 0")
		<-started
		refused := 0
		for i := 1; i < 8; i++ {
			go verify(flood, "flood "+strconv.Itoa(i))
			synctest.Wait()
		}
		// The flood's surplus has been answered already; its admitted
		// checks are still waiting for the slot.
		for len(errs) > 0 {
			if err := <-errs; !errors.Is(err, ErrBusy) {
				t.Fatalf("a check of the flood returned %v before the slot was free, want ErrBusy", err)
			}
			refused++
		}
		if !h.Full(flood) {
			t.Error("Full(flood network) = false with its share of the queue taken")
		}
		if h.Full(other) {
			t.Error("Full(other network) = true while the flood holds only its share")
		}
		go verify(other, "other")
		synctest.Wait()
		select {
		case err := <-errs:
			t.Fatalf("the other network's check returned %v before the slot was free, want a place in the queue", err)
		default:
		}

		release()
		for range 8 - refused + 1 { // and the other network's
			if err := <-errs; err != nil {
				t.Errorf("admitted check: %v", err)
			}
		}
		got := order()
		if !slices.Contains(got, "other") {
			t.Errorf("hashed %q: the other network's check never ran", got)
		}
		// 1 slot + a network's share of 4 places: half of the queue.
		if want := 1 + 4/2; len(got)-1 != want {
			t.Errorf("the flood got %d checks run, want %d (its share)", len(got)-1, want)
		}
	})
}

// TestKnownClientsGoFirst checks that a check from a network known to the
// account is admitted when the queue is full of unknown ones, and has the
// next turn ahead of them.
func TestKnownClientsGoFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := NewHasher(fastParams(), 1, 2)
		started, release := blockDerive(h)
		defer release()
		order := recordOrder(h)
		ctx := t.Context()
		unknown := func(i int) Admission { return Admission{Network: "198.51.100." + strconv.Itoa(i) + "/32"} }
		known := Admission{Network: "203.0.113.0/24", Known: true}

		errs := make(chan error, 5)
		verify := func(adm Admission, pw string) {
			errs <- h.VerifyUnknown(ctx, adm, pw)
		}
		go verify(unknown(0), "unknown 0")
		<-started
		go verify(unknown(1), "unknown 1")
		synctest.Wait()
		go verify(unknown(2), "unknown 2")
		synctest.Wait() // the queue is full

		if err := h.VerifyUnknown(ctx, unknown(3), "unknown 3"); !errors.Is(err, ErrBusy) {
			t.Errorf("an unknown check with the queue full: %v, want ErrBusy", err)
		}
		if h.Full(known) {
			t.Error("Full(known) = true with only the unknown checks' queue full")
		}
		go verify(known, "known")
		synctest.Wait()
		select {
		case err := <-errs:
			t.Fatalf("a check returned %v before the slot was free", err)
		default:
		}

		release()
		for range 4 {
			if err := <-errs; err != nil {
				t.Errorf("admitted check: %v", err)
			}
		}
		want := []string{"unknown 0", "known", "unknown 1", "unknown 2"}
		if got := order(); !slices.Equal(got, want) {
			t.Errorf("checks ran in the order %q, want %q", got, want)
		}
	})
}

// TestUnknownChecksLeaveASlotForKnown checks that checks from unknown
// networks never take the last slot: with two slots, a second unknown check
// waits while one is free, and a known check takes it at once.
func TestUnknownChecksLeaveASlotForKnown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := NewHasher(fastParams(), 2, 4)
		started, release := blockDerive(h)
		defer release()
		ctx := t.Context()

		errs := make(chan error, 3)
		verify := func(adm Admission) {
			errs <- h.VerifyUnknown(ctx, adm, "a fine password")
		}
		go verify(Admission{Network: "198.51.100.0/24"})
		go verify(Admission{Network: "192.0.2.0/24"})
		synctest.Wait()
		if n := len(started); n != 1 {
			t.Fatalf("%d unknown checks computing with two slots, want 1", n)
		}
		go verify(Admission{Network: "203.0.113.0/24", Known: true})
		synctest.Wait()
		if n := len(started); n != 2 {
			t.Fatalf("%d checks computing after a known one came, want 2", n)
		}

		release()
		for range 3 {
			if err := <-errs; err != nil {
				t.Errorf("check: %v", err)
			}
		}
		if n := len(started); n != 3 {
			t.Errorf("%d checks computed, want 3", n)
		}
	})
}
