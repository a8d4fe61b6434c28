package googleauth

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/httpcc"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"golang.org/x/time/rate"
)

// Why a cache of our own around jwx's key parser: jwx's jwk.Cache honours
// Cache-Control but refreshes in background goroutines from registration on
// (not lazily, and for the life of a context authd's wiring does not have),
// and its forced Refresh is not rate limited; MicahParks/jwkset rate-limits
// its unknown-kid refresh but refreshes on a fixed interval, ignoring
// Cache-Control. KeySet keeps what both get right: keys are parsed by jwx
// (jwk.ParseKey) and Cache-Control by httpcc, the parser jwx's cache uses.

// maxJWKSBody bounds a JWKS response; Google's is about 2 KiB.
const maxJWKSBody = 1 << 20

// KeySet is Google's public signing keys, fetched from a JWKS URL when first
// needed and kept for as long as the response's Cache-Control (or Expires)
// allows, within [MinTTL, MaxTTL]. A kid it does not know makes it fetch
// again at once, but at most once per UnknownKIDInterval, so that tokens
// with made-up kids cannot make it hammer the JWKS server. It is safe for
// concurrent use; concurrent callers share one fetch.
type KeySet struct {
	url    string
	client *http.Client
	now    func() time.Time
	o      KeySetOptions

	unknownKID *rate.Limiter

	mu       sync.Mutex
	keys     map[string]*rsa.PublicKey
	gen      uint64    // counts successful fetches
	expires  time.Time // when the keys must be fetched again
	failedAt time.Time // the last failed fetch, zero after a success
	lastErr  error     // its error
	// unreported is the last fetch error until TakeFetchError returns it.
	unreported error
	inflight   *fetchCall
}

type fetchCall struct {
	done chan struct{}
	err  error
}

// KeySetOptions tune a KeySet; zero fields take the defaults.
type KeySetOptions struct {
	// HTTPClient fetches the JWKS; by default a client with a 10 s timeout.
	HTTPClient *http.Client
	// Now is the clock; time.Now by default.
	Now func() time.Time
	// MinTTL is the shortest time keys are kept, whatever the response
	// says (max-age=0, no-cache, no-store): 1 minute by default.
	MinTTL time.Duration
	// MaxTTL is the longest: 24 hours by default.
	MaxTTL time.Duration
	// DefaultTTL is used when the response has no Cache-Control max-age and
	// no Expires: 1 hour by default.
	DefaultTTL time.Duration
	// UnknownKIDInterval is the least time between two fetches caused by a
	// kid the keys do not have: 30 seconds by default.
	UnknownKIDInterval time.Duration
	// RetryAfterFailure is how long after a failed fetch the next one may be
	// tried: 5 seconds by default. Meanwhile the keys in hand are used if
	// they are not older than MaxStale, and otherwise requests fail at once.
	RetryAfterFailure time.Duration
	// MaxStale is how long past their expiry keys are still used while the
	// JWKS cannot be fetched: 1 hour by default.
	MaxStale time.Duration
	// FetchTimeout bounds one fetch: 10 seconds by default.
	FetchTimeout time.Duration
}

func (o KeySetOptions) withDefaults() KeySetOptions {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.MinTTL, time.Minute)
	def(&o.MaxTTL, 24*time.Hour)
	def(&o.DefaultTTL, time.Hour)
	def(&o.UnknownKIDInterval, 30*time.Second)
	def(&o.RetryAfterFailure, 5*time.Second)
	def(&o.MaxStale, time.Hour)
	def(&o.FetchTimeout, 10*time.Second)
	if o.MaxTTL < o.MinTTL {
		o.MaxTTL = o.MinTTL
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: o.FetchTimeout}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// NewKeySet returns the key set published at url; nothing is fetched yet.
func NewKeySet(url string, o KeySetOptions) *KeySet {
	o = o.withDefaults()
	return &KeySet{
		url: url, client: o.HTTPClient, now: o.Now, o: o,
		unknownKID: rate.NewLimiter(rate.Every(o.UnknownKIDInterval), 1),
	}
}

// Key returns the RSA public key with the given kid. It fails with
// ErrKeysUnavailable when no usable keys can be had, and with ErrUnknownKey
// when the keys, fetched again if allowed, do not have the kid.
func (s *KeySet) Key(ctx context.Context, kid string) (*rsa.PublicKey, error) {
	fetched := false // this call has waited for a fetch
	var fetchErr error
	for {
		s.mu.Lock()
		now := s.now()
		if s.gen > 0 && now.Before(s.expires) {
			if k, ok := s.keys[kid]; ok {
				s.mu.Unlock()
				return k, nil
			}
			// An unknown kid: Google may have rotated its keys before our
			// copy expired. Fetch again unless this call already did, and
			// only as often as the limiter allows, joining a fetch under way
			// rather than starting another.
			if fetched || s.inflight == nil && !s.unknownKID.AllowN(now, 1) {
				s.mu.Unlock()
				if fetchErr != nil {
					return nil, fmt.Errorf("%w: %w", ErrKeysUnavailable, fetchErr)
				}
				return nil, fmt.Errorf("%w: kid %q", ErrUnknownKey, clip(kid))
			}
		} else if fetched || s.inflight == nil && !s.failedAt.IsZero() && now.Sub(s.failedAt) < s.o.RetryAfterFailure {
			// Expired or never fetched, and fetching failed just now: use
			// the keys in hand while they are not too stale.
			k, ok, usable := s.stale(kid, now)
			err := s.lastErr
			s.mu.Unlock()
			switch {
			case usable && ok:
				return k, nil
			case usable:
				return nil, fmt.Errorf("%w: kid %q", ErrUnknownKey, clip(kid))
			case err == nil:
				err = errors.New("no keys fetched")
			}
			return nil, fmt.Errorf("%w: %w", ErrKeysUnavailable, err)
		}
		call := s.start()
		s.mu.Unlock()
		select {
		case <-call.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", ErrKeysUnavailable, ctx.Err())
		}
		fetched, fetchErr = true, call.err
	}
}

// stale looks kid up in keys that may have expired, and says whether they
// may still be used. s.mu is held.
func (s *KeySet) stale(kid string, now time.Time) (*rsa.PublicKey, bool, bool) {
	if s.gen == 0 || now.After(s.expires.Add(s.o.MaxStale)) {
		return nil, false, false
	}
	k, ok := s.keys[kid]
	return k, ok, true
}

// start returns the fetch under way, or starts one. s.mu is held.
func (s *KeySet) start() *fetchCall {
	if s.inflight != nil {
		return s.inflight
	}
	c := &fetchCall{done: make(chan struct{})}
	s.inflight = c
	go func() {
		// Its own context: the request that started it may give up, and
		// others may be waiting on it.
		ctx, cancel := context.WithTimeout(context.Background(), s.o.FetchTimeout)
		defer cancel()
		keys, ttl, err := s.fetch(ctx)
		s.mu.Lock()
		now := s.now()
		if err == nil {
			s.keys, s.expires, s.gen = keys, now.Add(ttl), s.gen+1
			s.failedAt = time.Time{}
		} else {
			s.failedAt, s.lastErr, s.unreported = now, err, err
		}
		c.err = err
		s.inflight = nil
		s.mu.Unlock()
		close(c.done)
	}()
	return c
}

// TakeFetchError returns the error of the last failed fetch once, then nil
// until another fetch fails: how an operator hears that the keys in use are
// going stale.
func (s *KeySet) TakeFetchError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.unreported
	s.unreported = nil
	return err
}

func (s *KeySet) fetch(ctx context.Context) (map[string]*rsa.PublicKey, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("fetch JWKS: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("fetch JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("fetch JWKS: status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBody+1))
	if err != nil {
		return nil, 0, fmt.Errorf("fetch JWKS: %w", err)
	}
	if len(body) > maxJWKSBody {
		return nil, 0, fmt.Errorf("fetch JWKS: response over %d bytes", maxJWKSBody)
	}
	keys, err := ParseKeys(body)
	if err != nil {
		return nil, 0, err
	}
	return keys, s.ttl(resp.Header), nil
}

// ParseKeys returns the RSA signing keys of a JWKS document by kid. Keys of
// other types or uses, without a kid, shorter than 2048 bits, or that do not
// parse are left out, so one odd key does not hide the others; a document
// with no usable key at all is an error.
func ParseKeys(body []byte) (map[string]*rsa.PublicKey, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("parse JWKS: %w", err)
	}
	keys := make(map[string]*rsa.PublicKey, len(doc.Keys))
	for _, raw := range doc.Keys {
		k, err := jwk.ParseKey(raw)
		if err != nil {
			continue
		}
		kid, _ := k.KeyID()
		if kid == "" || keys[kid] != nil {
			continue // no kid to find it by, or a second key under one kid
		}
		if use, ok := k.KeyUsage(); ok && use != "sig" {
			continue
		}
		if alg, ok := k.Algorithm(); ok && alg.String() != "RS256" {
			continue
		}
		var pub rsa.PublicKey
		if err := jwk.Export(k, &pub); err != nil {
			continue
		}
		if pub.N == nil || pub.N.BitLen() < 2048 {
			continue
		}
		keys[kid] = &pub
	}
	if len(keys) == 0 {
		return nil, errors.New("parse JWKS: no usable RSA signing key")
	}
	return keys, nil
}

// ttl is how long a response may be kept: Cache-Control max-age less Age,
// else Expires less Date, else DefaultTTL; no-store and no-cache mean as
// short as allowed. Within [MinTTL, MaxTTL].
func (s *KeySet) ttl(h http.Header) time.Duration {
	clamp := func(d time.Duration) time.Duration { return min(max(d, s.o.MinTTL), s.o.MaxTTL) }
	if cc := strings.Join(h.Values("Cache-Control"), ", "); cc != "" {
		if dir, err := httpcc.ParseResponse(cc); err == nil {
			if dir.NoStore() || hasDirective(cc, "no-cache") {
				return s.o.MinTTL
			}
			if maxAge, ok := dir.MaxAge(); ok {
				if maxAge > uint64(s.o.MaxTTL/time.Second) {
					return s.o.MaxTTL
				}
				d := time.Duration(maxAge) * time.Second
				if age, err := strconv.ParseUint(strings.TrimSpace(h.Get("Age")), 10, 32); err == nil {
					d -= time.Duration(age) * time.Second
				}
				return clamp(d)
			}
		}
	}
	if v := h.Get("Expires"); v != "" {
		expires, err := http.ParseTime(v)
		if err != nil {
			return s.o.MinTTL // an invalid Expires means already expired (RFC 9111 5.3)
		}
		date, err := http.ParseTime(h.Get("Date"))
		if err != nil {
			date = s.now()
		}
		return clamp(expires.Sub(date))
	}
	return clamp(s.o.DefaultTTL)
}

func hasDirective(cc, name string) bool {
	tokens, err := httpcc.ParseResponseDirectives(cc)
	if err != nil {
		return false
	}
	for _, t := range tokens {
		if strings.EqualFold(t.Name, name) {
			return true
		}
	}
	return false
}

// clip keeps an attacker's kid from filling a log line.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
