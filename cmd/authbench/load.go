package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// A worker sends one scenario's requests over its own connection. Do sends
// one measured request and says what came back: an HTTP status, or an error
// when there was no answer (refused, reset, timed out).
type worker interface {
	Do(ctx context.Context) (status int, err error)
}

// A preparer is a worker that sometimes has unmeasured work to do before its
// next request, such as signing in again after its session was lost. Prepare
// runs outside the timed part of a closed-loop request.
type preparer interface {
	Prepare(ctx context.Context) error
}

// recorder keeps one worker's results, so workers never share a lock or a
// cache line while the load runs; the results are merged afterwards.
type recorder struct {
	byStatus map[int][]time.Duration
	errors   int64
	errKinds map[string]int64
	prepErrs int64
	// perSecond counts answers by the second of the phase they came in.
	perSecond []int64
}

func newRecorder(expect int, seconds int) *recorder {
	return &recorder{byStatus: map[int][]time.Duration{200: make([]time.Duration, 0, expect)}, errKinds: map[string]int64{},
		perSecond: make([]int64, seconds)}
}

func (r *recorder) record(status int, err error, lat time.Duration, sinceStart time.Duration) {
	if err == nil {
		if s := int(sinceStart / time.Second); s >= 0 && s < len(r.perSecond) {
			r.perSecond[s]++
		}
	}
	if err != nil {
		r.errors++
		if len(r.errKinds) < 20 {
			r.errKinds[errKind(err)]++
		} else {
			r.errKinds["other"]++
		}
		return
	}
	r.byStatus[status] = append(r.byStatus[status], lat)
}

// errKind names an error without the parts that differ per request (ports,
// ids), so that a run's errors group into a few lines.
func errKind(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	var ue interface{ Timeout() bool }
	if errors.As(err, &ue) && ue.Timeout() {
		return "timeout"
	}
	s := err.Error()
	for _, k := range []string{"connection refused", "connection reset", "broken pipe", "EOF", "too many open files"} {
		if strings.Contains(s, k) {
			return k
		}
	}
	if len(s) > 120 {
		s = s[:120]
	}
	return s
}

// phase is one timed run of the load: the warmup or the measurement.
type phase struct {
	duration time.Duration
	rate     float64 // requests/s offered in total; 0 runs closed-loop
	maxReqs  int64   // stop after this many requests have been started; 0 is no limit
	timeout  time.Duration
}

// phaseResult is what a phase measured, merged over its workers.
type phaseResult struct {
	elapsed  time.Duration
	byStatus map[int][]time.Duration
	errors   int64
	errKinds map[string]int64
	prepErrs int64
	// Open loop only: requests whose send time fell inside the phase but that
	// no worker was free to send before it ended, and the age of the oldest.
	unsent    int64
	unsentAge []time.Duration
	scheduled int64
	// perSecond is answers per whole second of the phase (a partial last
	// second is left out).
	perSecond []int64
}

// run drives the workers for one phase and merges what they recorded.
//
// Closed loop (rate 0): each worker sends its next request as soon as the
// previous one is answered, and a request's latency is its own round trip.
//
// Open loop (rate > 0): the k-th request of the phase is due at
// start + k/rate, whatever happened to the earlier ones. Workers take due
// times in order from one shared counter (a FIFO of tickets), wait for the
// time if it is still ahead, send, and measure latency from the due time, not
// from when the request could actually go out. So when the server stalls and
// every worker is stuck, the requests that should have been sent meanwhile
// are charged the wait (no coordinated omission), as a real population of
// clients would experience it.
func (p phase) run(ctx context.Context, workers []worker) phaseResult {
	n := len(workers)
	expect := 1024
	if p.rate > 0 {
		expect = int(p.rate*p.duration.Seconds())/n + 16
	}
	seconds := int(p.duration/time.Second) + 1
	recs := make([]*recorder, n)
	for i := range recs {
		recs[i] = newRecorder(expect, seconds)
	}
	start := time.Now()
	end := start.Add(p.duration)
	// In-flight requests at the end get their timeout to finish, no more.
	ctx, cancel := context.WithDeadline(ctx, end.Add(p.timeout+time.Second))
	defer cancel()

	var started atomic.Int64 // requests begun (both loops), against maxReqs
	var ticket atomic.Int64  // next due time to hand out (open loop)
	due := func(k int64) time.Time {
		return start.Add(time.Duration(float64(k) * float64(time.Second) / p.rate))
	}
	var wg sync.WaitGroup
	for i, w := range workers {
		wg.Add(1)
		go func(rec *recorder, w worker) {
			defer wg.Done()
			pr, _ := w.(preparer)
			timer := time.NewTimer(time.Hour)
			timer.Stop()
			for ctx.Err() == nil {
				if pr != nil {
					if err := pr.Prepare(ctx); err != nil {
						rec.prepErrs++
						if sleepCtx(ctx, 100*time.Millisecond) != nil {
							return
						}
						continue
					}
				}
				var sendAt time.Time
				if p.rate > 0 {
					// Past the end, what is still due stays unsent: the
					// backlog is reported, not drained.
					if !time.Now().Before(end) {
						return
					}
					k := ticket.Add(1) - 1
					sendAt = due(k)
					if !sendAt.Before(end) {
						return
					}
					if wait := time.Until(sendAt); wait > 0 {
						timer.Reset(wait)
						select {
						case <-timer.C:
						case <-ctx.Done():
							return
						}
					}
				} else if !time.Now().Before(end) {
					return
				}
				if p.maxReqs > 0 && started.Add(1) > p.maxReqs {
					return
				}
				if p.rate == 0 {
					sendAt = time.Now()
				}
				rctx, rcancel := context.WithTimeout(ctx, p.timeout)
				status, err := w.Do(rctx)
				rcancel()
				now := time.Now()
				rec.record(status, err, now.Sub(sendAt), now.Sub(start))
			}
		}(recs[i], w)
	}
	wg.Wait()
	res := phaseResult{elapsed: time.Since(start), byStatus: map[int][]time.Duration{}, errKinds: map[string]int64{}}
	for _, r := range recs {
		for s, l := range r.byStatus {
			if len(l) > 0 {
				res.byStatus[s] = append(res.byStatus[s], l...)
			}
		}
		res.errors += r.errors
		res.prepErrs += r.prepErrs
		for k, v := range r.errKinds {
			res.errKinds[k] += v
		}
		if res.perSecond == nil {
			// A phase that ran out of requests (maxReqs) ends early: its
			// seconds after the end would read as a server that stopped.
			res.perSecond = make([]int64, int(min(p.duration, res.elapsed)/time.Second))
		}
		for i := range res.perSecond {
			res.perSecond[i] += r.perSecond[i]
		}
	}
	if p.rate > 0 {
		// Every due time before the end that no worker took is a request the
		// offered load asked for and never got: charge each its age at the end.
		// total: how many k have due(k) < end, robust to float rounding.
		total := int64(p.rate * p.duration.Seconds())
		for due(total).Before(end) {
			total++
		}
		for total > 0 && !due(total-1).Before(end) {
			total--
		}
		taken := min(ticket.Load(), total)
		if p.maxReqs > 0 {
			taken = min(taken, p.maxReqs)
			total = min(total, p.maxReqs)
		}
		res.scheduled = total // a phase bounded by maxReqs asked for no more
		for k := taken; k < total; k++ {
			res.unsentAge = append(res.unsentAge, end.Sub(due(k)))
		}
		res.unsent = int64(len(res.unsentAge))
	}
	return res
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// newClient is one worker's HTTP client: a single keep-alive connection, so
// that -c workers are exactly -c connections to the server.
func newClient(timeout time.Duration, dials *atomic.Int64) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil // loopback only; never through a proxy from the environment
	t.MaxConnsPerHost = 1
	t.MaxIdleConnsPerHost = 1
	t.MaxIdleConns = 1
	t.IdleConnTimeout = 2 * time.Minute
	t.DisableCompression = true
	t.ForceAttemptHTTP2 = false
	dial := t.DialContext
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if dials != nil {
			dials.Add(1)
		}
		return dial(ctx, network, addr)
	}
	return &http.Client{Transport: t, Timeout: timeout}
}
