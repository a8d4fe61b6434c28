package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestAnOwnerGetsThroughALoginFloodFromItsNetwork is issue 16, item 9: a
// flood of unknown-email logins from many networks keeps the password
// hasher's queue full, and the owner of an account, signing in from the
// network it signed up from, still gets every login answered 200 (on
// f1f8af5 most were 503s), because a known network has places of its own.
//
// Not parallel: the flood takes every core while it lasts, and the tests
// with deadlines of their own should not share them with it.
func TestAnOwnerGetsThroughALoginFloodFromItsNetwork(t *testing.T) {
	c := newCluster(t, map[string]string{"AUTHD_TRUSTED_PROXIES": "127.0.0.1/32"})
	in := c.start(t)
	email, pw := "owner-in-a-flood@example.com", "correct horse battery"
	c.signupVerified(t, in, email, pw, nil) // from 127.0.0.1, which the owner's logins come from too

	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	// Closed loop, four times as many as the hasher holds running and
	// waiting (as many as the cores, and four per core), each from a /24 of
	// its own: whenever a place frees up, a flooder is there to take it.
	flooders := 4 * 5 * runtime.GOMAXPROCS(0)
	var refused atomic.Int64
	for i := range flooders {
		wg.Go(func() {
			for n := 0; ctx.Err() == nil; n++ {
				body := fmt.Sprintf(`{"email":"flood-%d-%d@example.com","password":"not the password"}`, i, n)
				req, _ := http.NewRequestWithContext(ctx, "POST", in.base+api+"/login", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-Forwarded-For", fmt.Sprintf("10.%d.%d.7", i/256, i%256))
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					continue // the test is ending
				}
				if resp.StatusCode == http.StatusServiceUnavailable {
					refused.Add(1)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	// The owner comes once the flood is being turned away: the queue is full.
	for refused.Load() < int64(flooders) {
		select {
		case <-ctx.Done():
			t.Fatal("the test ended before the flood filled the hasher's queue")
		case <-time.After(10 * time.Millisecond):
		}
	}
	const logins = 10
	for i := range logins {
		if r := in.call(t, "POST", api+"/login", "", map[string]any{"email": email, "password": pw}); r.status != http.StatusOK {
			t.Errorf("the owner's login %d of %d during the flood = %d %s", i+1, logins, r.status, r.raw)
		}
	}
}
