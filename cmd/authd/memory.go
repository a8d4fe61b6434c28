package main

import (
	"bufio"
	"bytes"
	"io/fs"
	"path"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"
)

// gcPacing is how the garbage collector is told to pace itself: a GOGC
// percentage (-1 for off) and a memory limit (GOMEMLIMIT) in bytes.
type gcPacing struct {
	percent int
	limit   int64
}

// Every password hash allocates its argon2 memory (19 MiB) anew, so under a
// login load the heap is mostly hash buffers turned to garbage a few times a
// second. Paced by GOGC, the heap swings between the live set and a multiple
// of it, and the runtime's scavenger hands the freed part back to the kernel
// after each collection: the next hashes fault it back in, two faults per 4
// KiB page, the second with a TLB shootdown. At 60 logins/s on 2 cores that
// was 25,000-27,500 faults/s, and the kernel and the collector took 8-9% of
// the machine. With GOGC off, the runtime collects only at a memory limit
// and keeps most memory mapped below it: 10,000-13,000 faults/s, a third
// fewer collections, and the share of the machine spent hashing went from
// 75.7% to 78.0%.
const (
	// gcBase covers what authd holds besides hashes (tens of MiB under load),
	// with room to spare so the limit is never close to the live heap.
	gcBase = 128 << 20
	// gcSpareHashes is how many hashes' garbage may pile up between
	// collections. On 2 cores, limits with room for about 12, 19 and 32
	// (384, 512 and 768 MiB) gave hashing shares of 75.6, 77.6 and 78.4%.
	gcSpareHashes = 16
	// gcPercentFallback paces the collector by GOGC when the memory authd
	// may use is too small for a limit with that much room.
	gcPercentFallback = 400
)

// choosePacing decides the collector's pacing for hashers concurrent
// hashes of hashBytes each, when the heap may use allowed bytes (0: no cap,
// see allowance). A limit with room for the base, the hashes in flight and
// gcSpareHashes more turns GOGC off; a container too small for that keeps
// GOGC, with the limit as a cap that keeps the heap from growing into the
// container's own limit.
func choosePacing(hashers int, hashBytes, allowed int64) gcPacing {
	want := gcBase + int64(hashers+gcSpareHashes)*hashBytes
	if allowed == 0 || allowed >= want {
		return gcPacing{percent: -1, limit: want}
	}
	return gcPacing{percent: gcPercentFallback, limit: allowed}
}

// allowance is how much of a container's memory limit the Go heap may use (0
// when there is no limit): a quarter is left for what the runtime does not
// count, thread stacks, the kernel's socket buffers, fragmentation.
func allowance(containerLimit int64) int64 {
	if containerLimit <= 0 {
		return 0
	}
	return containerLimit / 4 * 3
}

// withRoomFor adjusts p to a live heap of live bytes. With GOGC off the
// collector runs only at the limit, so a live heap that grew close to it (a
// great many connections, say) would have it run almost without pause. Once
// the live heap passes half the limit, the limit becomes twice the live
// heap, the room GOGC=100 would give, and past allowed (0: no cap) pacing
// goes back to GOGC under that cap. A limit is never lowered again.
func withRoomFor(p gcPacing, live, allowed int64) gcPacing {
	if p.percent >= 0 || 2*live <= p.limit {
		return p
	}
	if allowed > 0 && 2*live > allowed {
		return gcPacing{percent: gcPercentFallback, limit: allowed}
	}
	return gcPacing{percent: -1, limit: 2 * live}
}

// apply tells the runtime to pace the collector by p.
func (p gcPacing) apply() {
	debug.SetGCPercent(p.percent)
	debug.SetMemoryLimit(p.limit)
}

// keepRoom looks at the live heap every interval, for as long as the process
// runs, and applies withRoomFor's answer to the pacing in force, p, when it
// changes.
func keepRoom(p gcPacing, allowed int64, every time.Duration) {
	live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	for range time.Tick(every) {
		metrics.Read(live)
		if q := withRoomFor(p, int64(live[0].Value.Uint64()), allowed); q != p {
			p = q
			p.apply()
		}
	}
}

// containerMemoryLimit returns the smallest memory limit of the cgroups
// holding the process described by procSelfCgroup (the text of
// /proc/self/cgroup), read from sys (a view of /sys/fs/cgroup), or 0 when
// there is none. It reads cgroup v2's memory.max and cgroup v1's
// memory.limit_in_bytes up every cgroup's ancestors, since a limit on a
// parent binds its children, and a container that sees only its own cgroup
// finds it at the root.
func containerMemoryLimit(procSelfCgroup []byte, sys fs.FS) int64 {
	var limit int64
	consider := func(file string) {
		b, err := fs.ReadFile(sys, file)
		if err != nil {
			return
		}
		v, err := strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64)
		// "max" (v2) does not parse; v1 says "no limit" with a number near
		// 2^63, which no machine has.
		if err != nil || v <= 0 || v >= 1<<62 {
			return
		}
		if limit == 0 || v < limit {
			limit = v
		}
	}
	lines := bufio.NewScanner(bytes.NewReader(procSelfCgroup))
	for lines.Scan() {
		// hierarchy-ID:controller-list:cgroup-path
		fields := strings.SplitN(lines.Text(), ":", 3)
		if len(fields) != 3 || !strings.HasPrefix(fields[2], "/") {
			continue
		}
		var dir, file string
		switch {
		case fields[0] == "0" && fields[1] == "":
			dir, file = ".", "memory.max"
		case hasController(fields[1], "memory"):
			dir, file = "memory", "memory.limit_in_bytes"
		default:
			continue
		}
		for p := path.Clean(fields[2]); ; p = path.Dir(p) {
			consider(path.Join(dir, strings.TrimPrefix(p, "/"), file))
			if p == "/" {
				break
			}
		}
	}
	return limit
}

func hasController(list, name string) bool {
	for c := range strings.SplitSeq(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}
