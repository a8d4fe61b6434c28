package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// The flood scenario (issue 16, item 9): unknown-email logins from many
// source addresses, offered faster than authd can hash, while the owner of an
// account signs in from the network it signed up from and other clients read
// (GET /me) and refresh at a steady rate. It measures each of those streams
// twice, first without the flood and then with it, and reports the owner's
// share of successful logins and the reads' latency in both.
//
// The flood's addresses travel in X-Forwarded-For, one per /24
// (10.<i/256>.<i%256>.7), so authd must trust the tool as a proxy
// (AUTHD_TRUSTED_PROXIES=127.0.0.1/32). The owner sends none: authd sees
// it at 127.0.0.1, the network its signup came from.
type floodConfig struct {
	rate             float64 // unknown-email logins/s offered
	addrs            int     // source addresses they come from
	conns            int     // connections the flood uses
	knownRate        float64 // the owner's logins/s
	meRate, refRate  float64 // GET /me and POST /refresh per second
	meConns, refConn int
}

// floodStream is one kind of request of the scenario, with its own
// connections and offered rate.
type floodStream struct {
	name    string
	rate    float64
	workers []worker
}

// FloodReport is what -scenario flood prints with -json: each stream's
// report without the flood, then with it.
type FloodReport struct {
	Before map[string]Report `json:"before"`
	During map[string]Report `json:"during"`
	// BeforeCPU and DuringCPU are CPU milliseconds per second of each phase
	// (its fields' "per request" is per second here) and the machine's load.
	BeforeCPU *CPU `json:"before_cpu_ms_per_s,omitempty"`
	DuringCPU *CPU `json:"during_cpu_ms_per_s,omitempty"`
}

// runFlood sets the streams up, runs the phases and prints the report.
func runFlood(ctx context.Context, e *env, connect newConn, stdout, stderr io.Writer) error {
	cfg, fc := e.cfg, e.cfg.flood
	setupCtx, cancel := context.WithTimeout(ctx, cfg.setupTimeout)
	defer cancel()
	// The last user is the owner whose logins are measured; the others
	// read and refresh.
	users, err := e.newUsers(setupCtx, cfg.users+1)
	if err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	owner, readers := users[len(users)-1], users[:len(users)-1]
	e.log("signing in %d sessions to refresh", fc.refConn)
	sessions := make([]string, fc.refConn)
	err = parallel(setupCtx, fc.refConn, 2, func(i int) error {
		u := readers[i%len(readers)]
		t, err := e.api.login(setupCtx, u.email, u.password)
		sessions[i] = t.RefreshToken
		return err
	})
	if err != nil {
		return fmt.Errorf("setup: %w", err)
	}

	base, _ := url.Parse(cfg.url)
	var dials atomic.Int64
	newConns := func(n int, w func(i int, c conn) worker) []worker {
		ws := make([]worker, n)
		for i := range ws {
			ws[i] = w(i, connect(base, cfg.timeout, &dials))
		}
		return ws
	}
	header := jsonHeader()
	ownerBody, _ := json.Marshal(map[string]string{"email": owner.email, "password": owner.password})
	var ownerNext atomic.Uint64
	meHeaders := make([]http.Header, len(readers))
	for i, u := range readers {
		meHeaders[i] = http.Header{"Authorization": {"Bearer " + u.access}, "User-Agent": {userAgent}}
	}
	runID := make([]byte, 6)
	rand.Read(runID)
	flood := &floodSource{run: hex.EncodeToString(runID), addrs: fc.addrs}
	steady := []floodStream{
		{name: "owner login", rate: fc.knownRate, workers: newConns(2, func(_ int, c conn) worker {
			return &loginWorker{c: c, header: header, bodies: [][]byte{ownerBody}, next: &ownerNext}
		})},
		{name: "GET /me", rate: fc.meRate, workers: newConns(fc.meConns, func(i int, c conn) worker {
			return &meWorker{c: c, headers: meHeaders, next: i}
		})},
		{name: "POST /refresh", rate: fc.refRate, workers: newConns(fc.refConn, func(i int, c conn) worker {
			return &refreshWorker{e: e, c: c, header: header, user: readers[i%len(readers)], token: sessions[i]}
		})},
	}
	floodStreams := append([]floodStream{{name: "flood login", rate: fc.rate, workers: newConns(fc.conns, func(_ int, c conn) worker {
		return &floodWorker{c: c, src: flood}
	})}}, steady...)

	if cfg.warmup > 0 {
		e.log("warming up for %v without the flood", cfg.warmup)
		e.runStreams(ctx, steady, cfg.warmup, cfg.timeout)
	}
	e.log("measuring %v without the flood: owner logins %.1f/s, GET /me %.0f/s, POST /refresh %.0f/s", cfg.duration, fc.knownRate, fc.meRate, fc.refRate)
	var rep FloodReport
	rep.Before, rep.BeforeCPU = e.runStreams(ctx, steady, cfg.duration, cfg.timeout)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	e.log("measuring %v with the flood: %.0f unknown-email logins/s from %d addresses over %d connections", cfg.duration, fc.rate, fc.addrs, fc.conns)
	rep.During, rep.DuringCPU = e.runStreams(ctx, floodStreams, cfg.duration, cfg.timeout)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	out := stdout
	if cfg.json {
		out = stderr
	}
	rep.writeText(out, loadAvg())
	if cfg.json {
		return json.NewEncoder(stdout).Encode(rep)
	}
	return nil
}

// runStreams runs every stream's open-loop phase at once for d and reports
// each, and the CPU spent per second (with -cpu).
func (e *env) runStreams(ctx context.Context, streams []floodStream, d, timeout time.Duration) (map[string]Report, *CPU) {
	reps := make(map[string]Report, len(streams))
	before := e.cpuSample(e.cfg.cpu)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, s := range streams {
		wg.Go(func() {
			res := phase{duration: d, rate: s.rate, timeout: timeout}.run(ctx, s.workers)
			r := buildReport(res)
			r.Scenario, r.Request, r.Connections, r.OfferedRate = "flood", s.name, len(s.workers), s.rate
			mu.Lock()
			reps[s.name] = r
			mu.Unlock()
		})
	}
	wg.Wait()
	if !e.cfg.cpu {
		return reps, nil
	}
	return reps, cpuBetween(before, e.cpuSample(true), int64(d/time.Second))
}

func (r FloodReport) writeText(w io.Writer, load string) {
	fmt.Fprintf(w, "flood scenario (load average now %s)\n", load)
	for _, ph := range []struct {
		name string
		reps map[string]Report
		cpu  *CPU
	}{{"without the flood", r.Before, r.BeforeCPU}, {"with the flood", r.During, r.DuringCPU}} {
		fmt.Fprintf(w, "%s:\n", ph.name)
		if c := ph.cpu; c != nil {
			fmt.Fprintf(w, "  cpu ms/s       authd %.0f, postgres %.0f, authbench %.0f; machine %.0f%% busy (others' processes %.0f%%)\n",
				c.ServerMsPerReq, c.PostgresMsPerReq, c.ClientMsPerReq, c.MachineBusyPct, c.OthersPct)
		}
		names := make([]string, 0, len(ph.reps))
		for n := range ph.reps {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			rep := ph.reps[n]
			share := 0.0
			if rep.Requests+rep.Errors > 0 {
				share = 100 * float64(rep.Statuses["200"]) / float64(rep.Requests+rep.Errors)
			}
			fmt.Fprintf(w, "  %-14s offered %6.1f/s  answered %6d  200s %5.1f%%  p50 %7.2f  p99 %7.2f ms  statuses %v",
				n, rep.OfferedRate, rep.Requests, share, rep.Latency.P50, rep.Latency.P99, rep.Statuses)
			if rep.Errors > 0 {
				fmt.Fprintf(w, "  %d without answer %v", rep.Errors, rep.ErrKinds)
			}
			if rep.Unsent > 0 {
				fmt.Fprintf(w, "  %d never sent", rep.Unsent)
			}
			fmt.Fprintln(w)
		}
	}
}

// floodSource hands out the flood's source addresses in turn and an email
// no account has.
type floodSource struct {
	run   string
	addrs int
	next  atomic.Uint64
}

// floodAddr is the i-th source address, each in a /24 of its own.
func floodAddr(i int) string { return fmt.Sprintf("10.%d.%d.7", i/256, i%256) }

type floodWorker struct {
	c   conn
	src *floodSource
}

func (w *floodWorker) Do(ctx context.Context) (int, error) {
	n := w.src.next.Add(1) - 1
	body, _ := json.Marshal(map[string]string{
		"email":    fmt.Sprintf("flood-%s-%d@example.com", w.src.run, n),
		"password": "not the password of anyone",
	})
	h := jsonHeader()
	h.Set("X-Forwarded-For", floodAddr(int(n%uint64(w.src.addrs))))
	r := request{method: http.MethodPost, path: apiPrefix + "/login", header: h, body: body}
	st, _, err := w.c.Do(ctx, &r, false)
	return st, err
}
