package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Report is the result of a run; -json prints it as is.
type Report struct {
	Scenario    string  `json:"scenario"`
	Request     string  `json:"request"`
	URL         string  `json:"url"`
	Connections int     `json:"connections"`
	Engine      string  `json:"engine"`
	Users       int     `json:"users"`
	DurationS   float64 `json:"duration_s"` // measured phase, wall clock
	WarmupS     float64 `json:"warmup_s"`
	// OfferedRate is the open-loop load asked for; 0 means closed loop.
	OfferedRate float64 `json:"offered_rate"`
	Requests    int64   `json:"requests"` // answered, any status
	RPS         float64 `json:"rps"`
	OKRPS       float64 `json:"ok_rps"` // 2xx answers per second
	// Statuses counts answers by HTTP status.
	Statuses map[string]int64 `json:"statuses"`
	// PerSecond is answers in each whole second of the measurement: a
	// falling series means the server slows down as the run goes on.
	PerSecond []int64 `json:"per_second"`
	// Errors are requests with no answer (timeout, refused, reset).
	Errors   int64            `json:"errors"`
	ErrKinds map[string]int64 `json:"error_kinds,omitempty"`
	Latency  Latency          `json:"latency"`
	// LatencyByStatus splits it per status (e.g. 200 vs 503 under overload).
	LatencyByStatus map[string]Latency `json:"latency_by_status"`
	// Open loop: due requests no worker got to send before the end, and the
	// latency percentiles counting each of them at its age at the end (a
	// lower bound of what it would have been).
	Scheduled         int64    `json:"scheduled,omitempty"`
	Unsent            int64    `json:"unsent,omitempty"`
	LatencyWithUnsent *Latency `json:"latency_with_unsent,omitempty"`
	// Connections the workers opened: -c when keep-alive held throughout.
	Dials    int64            `json:"dials"`
	Counters map[string]int64 `json:"counters,omitempty"`
	CPU      *CPU             `json:"cpu,omitempty"`
	LoadAvg  string           `json:"loadavg_at_start"`
	Cores    int              `json:"cores"`
	Started  time.Time        `json:"started"`
}

// Latency is in milliseconds.
type Latency struct {
	N    int     `json:"n"`
	Mean float64 `json:"mean_ms"`
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	P999 float64 `json:"p999_ms"`
	Max  float64 `json:"max_ms"`
}

// CPU is the CPU time each party spent during the measured phase, per
// answered request, and how busy the whole machine was.
type CPU struct {
	ClientMsPerReq   float64 `json:"client_ms_per_req"`
	ServerMsPerReq   float64 `json:"server_ms_per_req,omitempty"`   // authd's process_cpu_seconds_total
	PostgresMsPerReq float64 `json:"postgres_ms_per_req,omitempty"` // every postgres process on the machine
	MachineBusyPct   float64 `json:"machine_busy_pct"`              // of all cores
	// OthersPct is the machine's CPU spent outside authd, Postgres and
	// authbench, in % of all cores: other work on the machine that the
	// measurement competed with. Near 0 is a clean run.
	OthersPct float64 `json:"others_pct"`
	StealPct  float64 `json:"steal_pct,omitempty"`
}

// summarize sorts ds in place and returns its percentiles.
func summarize(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	slices.Sort(ds)
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	ms := func(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
	return Latency{
		N: len(ds), Mean: ms(sum / time.Duration(len(ds))),
		P50: ms(quantile(ds, 0.50)), P90: ms(quantile(ds, 0.90)),
		P99: ms(quantile(ds, 0.99)), P999: ms(quantile(ds, 0.999)), Max: ms(ds[len(ds)-1]),
	}
}

// quantile of sorted ds by the nearest-rank method: the smallest value with
// at least q of the values at or below it.
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func buildReport(res phaseResult) Report {
	r := Report{Statuses: map[string]int64{}, LatencyByStatus: map[string]Latency{}, ErrKinds: res.errKinds}
	var all []time.Duration
	var ok int64
	for st, ds := range res.byStatus {
		r.Statuses[strconv.Itoa(st)] = int64(len(ds))
		r.Requests += int64(len(ds))
		if st >= 200 && st < 300 {
			ok += int64(len(ds))
		}
		all = append(all, ds...)
	}
	for st, ds := range res.byStatus {
		r.LatencyByStatus[strconv.Itoa(st)] = summarize(ds)
	}
	r.Latency = summarize(all)
	r.PerSecond = res.perSecond
	r.Errors = res.errors
	if len(r.ErrKinds) == 0 {
		r.ErrKinds = nil
	}
	r.DurationS = round3(res.elapsed.Seconds())
	r.RPS = round3(float64(r.Requests) / res.elapsed.Seconds())
	r.OKRPS = round3(float64(ok) / res.elapsed.Seconds())
	if res.scheduled > 0 {
		r.Scheduled, r.Unsent = res.scheduled, res.unsent
		if res.unsent > 0 {
			l := summarize(append(all, res.unsentAge...))
			r.LatencyWithUnsent = &l
		}
	}
	return r
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

// cpuSample is a snapshot of the CPU counters this tool can read.
type cpuSample struct {
	self     time.Duration
	server   float64 // seconds; -1 when authd's /metrics did not say
	postgres time.Duration
	pgOK     bool
	busy     uint64 // jiffies of the whole machine
	total    uint64
	steal    uint64
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

const jiffy = 10 * time.Millisecond // USER_HZ is 100 on Linux

// postgresCPU sums the CPU time of the processes named postgres: the
// postmaster and its background processes, and the client backends, all of
// them or, when db is set, only those connected to database db.
func postgresCPU(db string) (time.Duration, bool) {
	dirs, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		return 0, false
	}
	var sum uint64
	found := false
	for _, p := range dirs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(b)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < open || s[open+1:close] != "postgres" {
			continue
		}
		if db != "" {
			if backendDB, ok := pgBackendDB(strings.TrimSuffix(p, "stat") + "cmdline"); ok && backendDB != db {
				continue
			}
		}
		f := strings.Fields(s[close+1:])
		// After the command: state is field 3 of stat(5), utime 14, stime 15.
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseUint(f[11], 10, 64)
		st, _ := strconv.ParseUint(f[12], 10, 64)
		sum += u + st
		found = true
	}
	return time.Duration(sum) * jiffy, found
}

// pgBackendDB reads the database of a client backend from its process title,
// "postgres: 15/main: USER DB HOST(PORT) STATE"; ok is false for the
// postmaster and background processes, which have no HOST(PORT).
func pgBackendDB(cmdlinePath string) (db string, ok bool) {
	b, err := os.ReadFile(cmdlinePath)
	if err != nil {
		return "", false
	}
	f := strings.Fields(strings.ReplaceAll(string(b), "\x00", " "))
	for i := 1; i < len(f); i++ {
		if strings.HasSuffix(f[i], ")") && strings.Contains(f[i], "(") {
			return f[i-1], true
		}
	}
	return "", false
}

// processCPU is the user and system CPU time of process pid so far.
func processCPU(pid int) (time.Duration, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	s := string(b)
	close := strings.LastIndexByte(s, ')')
	if close < 0 {
		return 0, false
	}
	f := strings.Fields(s[close+1:])
	if len(f) < 13 {
		return 0, false
	}
	u, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return time.Duration(u+st) * jiffy, true
}

func machineCPU() (busy, total, steal uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0, 0
	}
	var v [8]uint64
	for i := range v {
		v[i], _ = strconv.ParseUint(f[i+1], 10, 64)
	}
	// user nice system idle iowait irq softirq steal
	for _, x := range v {
		total += x
	}
	return total - v[3] - v[4], total, v[7]
}

func (e *env) cpuSample(withServer bool) cpuSample {
	s := cpuSample{self: selfCPU(), server: -1}
	if withServer {
		if e.cfg.authdPID > 0 {
			if d, ok := processCPU(e.cfg.authdPID); ok {
				s.server = d.Seconds()
			}
		} else if v, ok := e.api.metricValue(context.Background(), "process_cpu_seconds_total"); ok {
			s.server = v
		}
	}
	s.postgres, s.pgOK = postgresCPU(e.cfg.pgDB)
	s.busy, s.total, s.steal = machineCPU()
	return s
}

func cpuBetween(a, b cpuSample, requests int64) *CPU {
	if requests == 0 {
		return nil
	}
	per := func(d time.Duration) float64 { return round3(float64(d) / 1e6 / float64(requests)) }
	c := &CPU{ClientMsPerReq: per(b.self - a.self)}
	if a.server >= 0 && b.server >= 0 {
		c.ServerMsPerReq = per(time.Duration((b.server - a.server) * float64(time.Second)))
	}
	if a.pgOK && b.pgOK && b.postgres >= a.postgres {
		c.PostgresMsPerReq = per(b.postgres - a.postgres)
	}
	if dt := b.total - a.total; dt > 0 {
		c.MachineBusyPct = math.Round(float64(b.busy-a.busy)/float64(dt)*1000) / 10
		c.StealPct = math.Round(float64(b.steal-a.steal)/float64(dt)*1000) / 10
		ours := (b.self - a.self) + (b.postgres - a.postgres)
		if a.server >= 0 && b.server >= 0 {
			ours += time.Duration((b.server - a.server) * float64(time.Second))
		}
		others := time.Duration(b.busy-a.busy)*jiffy - ours
		c.OthersPct = math.Round(float64(max(others, 0))/float64(time.Duration(dt)*jiffy)*1000) / 10
	}
	return c
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func (r Report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func (r Report) writeText(w io.Writer) {
	mode := "closed loop"
	if r.OfferedRate > 0 {
		mode = fmt.Sprintf("open loop at %.1f req/s offered", r.OfferedRate)
	}
	fmt.Fprintf(w, "%s  %s  -c %d  %s  engine %s  (%d users, %.1fs measured after %.1fs warmup; load avg at start %s, %d cores)\n",
		r.Scenario, r.Request, r.Connections, mode, r.Engine, r.Users, r.DurationS, r.WarmupS, r.LoadAvg, r.Cores)
	fmt.Fprintf(w, "  requests   %d answered, %.1f req/s (2xx %.1f/s), %d without answer\n", r.Requests, r.RPS, r.OKRPS, r.Errors)
	var sts []string
	for s := range r.Statuses {
		sts = append(sts, s)
	}
	sort.Strings(sts)
	var parts []string
	for _, s := range sts {
		parts = append(parts, fmt.Sprintf("%s: %d", s, r.Statuses[s]))
	}
	fmt.Fprintf(w, "  statuses   %s\n", strings.Join(parts, ", "))
	if n := len(r.PerSecond); n >= 2 {
		fmt.Fprintf(w, "  per second first %d, last %d, min %d, max %d\n", r.PerSecond[0], r.PerSecond[n-1], slices.Min(r.PerSecond), slices.Max(r.PerSecond))
	}
	lat := func(name string, l Latency) {
		fmt.Fprintf(w, "  %-10s p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f  mean %.2f ms  (n=%d)\n",
			name, l.P50, l.P90, l.P99, l.P999, l.Max, l.Mean, l.N)
	}
	lat("latency", r.Latency)
	if len(sts) > 1 {
		for _, s := range sts {
			lat("  "+s, r.LatencyByStatus[s])
		}
	}
	if r.Scheduled > 0 {
		fmt.Fprintf(w, "  schedule   %d due, %d never sent (client saturated)\n", r.Scheduled, r.Unsent)
		if r.LatencyWithUnsent != nil {
			lat("w/ unsent", *r.LatencyWithUnsent)
		}
	}
	for k, v := range r.ErrKinds {
		fmt.Fprintf(w, "  error      %d× %s\n", v, k)
	}
	for k, v := range r.Counters {
		fmt.Fprintf(w, "  %-10s %d\n", k, v)
	}
	if r.Dials != int64(r.Connections) {
		fmt.Fprintf(w, "  note       %d connections opened for %d workers: keep-alive did not hold\n", r.Dials, r.Connections)
	}
	if c := r.CPU; c != nil {
		server := "n/a (no /metrics: try -authd-pid)"
		if c.ServerMsPerReq > 0 {
			server = fmt.Sprintf("%.3f ms", c.ServerMsPerReq)
		}
		fmt.Fprintf(w, "  cpu/req    authd %s, postgres %.3f ms, authbench %.3f ms; machine %.0f%% busy (others' processes %.0f%%)", server, c.PostgresMsPerReq, c.ClientMsPerReq, c.MachineBusyPct, c.OthersPct)
		if c.StealPct > 0 {
			fmt.Fprintf(w, " (steal %.1f%%)", c.StealPct)
		}
		fmt.Fprintln(w)
	}
}
