package main

import (
	"testing"
	"testing/fstest"
)

func TestChoosePacing(t *testing.T) {
	const mib = 1 << 20
	hash := int64(19 * mib)
	want := int64(gcBase) + 18*hash // 2 hashes in flight, 16 spare
	tests := []struct {
		name      string
		container int64
		want      gcPacing
	}{
		{"no container limit", 0, gcPacing{percent: -1, limit: want}},
		{"a container with room", 4096 * mib, gcPacing{percent: -1, limit: want}},
		// 3/4 of it is just what the limit needs.
		{"a container just large enough", (want + 2) / 3 * 4, gcPacing{percent: -1, limit: want}},
		{"a container a little too small", (want+2)/3*4 - 4, gcPacing{percent: gcPercentFallback, limit: (want+2)/3*3 - 3}},
		{"a small container", 256 * mib, gcPacing{percent: gcPercentFallback, limit: 192 * mib}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := choosePacing(2, hash, allowance(tt.container)); got != tt.want {
				t.Errorf("choosePacing(2, 19 MiB, allowance(%d)) = %+v, want %+v", tt.container, got, tt.want)
			}
		})
	}
}

func TestWithRoomForRaisesTheLimitBeforeTheLiveHeapReachesIt(t *testing.T) {
	const mib = 1 << 20
	off := gcPacing{percent: -1, limit: 470 * mib}
	tests := []struct {
		name    string
		p       gcPacing
		live    int64
		allowed int64
		want    gcPacing
	}{
		{"a live heap under half the limit", off, 200 * mib, 0, off},
		{"just half the limit", off, 235 * mib, 0, off},
		{"past half the limit, no container", off, 300 * mib, 0, gcPacing{percent: -1, limit: 600 * mib}},
		{"past half, in a container with room", off, 300 * mib, 768 * mib, gcPacing{percent: -1, limit: 600 * mib}},
		{"past what the container allows", off, 300 * mib, 512 * mib, gcPacing{percent: gcPercentFallback, limit: 512 * mib}},
		{"already paced by GOGC", gcPacing{percent: gcPercentFallback, limit: 192 * mib}, 150 * mib, 192 * mib, gcPacing{percent: gcPercentFallback, limit: 192 * mib}},
		{"a live heap that shrank again", gcPacing{percent: -1, limit: 600 * mib}, 50 * mib, 0, gcPacing{percent: -1, limit: 600 * mib}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := withRoomFor(tt.p, tt.live, tt.allowed); got != tt.want {
				t.Errorf("withRoomFor(%+v, %d MiB, %d MiB) = %+v, want %+v", tt.p, tt.live/mib, tt.allowed/mib, got, tt.want)
			}
		})
	}
}

func TestContainerMemoryLimit(t *testing.T) {
	tests := []struct {
		name   string
		cgroup string
		sys    fstest.MapFS
		want   int64
	}{
		{
			name:   "cgroup v2 in a container's own namespace",
			cgroup: "0::/\n",
			sys:    fstest.MapFS{"memory.max": {Data: []byte("536870912\n")}},
			want:   512 << 20,
		},
		{
			name:   "cgroup v2 with no limit",
			cgroup: "0::/\n",
			sys:    fstest.MapFS{"memory.max": {Data: []byte("max\n")}},
		},
		{
			name:   "cgroup v2 under a systemd slice whose limit is the smaller",
			cgroup: "0::/system.slice/authd.service\n",
			sys: fstest.MapFS{
				"system.slice/memory.max":               {Data: []byte("1073741824\n")},
				"system.slice/authd.service/memory.max": {Data: []byte("max\n")},
			},
			want: 1 << 30,
		},
		{
			name: "cgroup v1 in a container that sees only its own cgroup at the root",
			cgroup: "12:pids:/docker/0123abcd\n" +
				"4:memory:/docker/0123abcd\n" +
				"1:name=systemd:/docker/0123abcd\n",
			sys:  fstest.MapFS{"memory/memory.limit_in_bytes": {Data: []byte("268435456\n")}},
			want: 256 << 20,
		},
		{
			name:   "cgroup v1 with no limit, next to an empty v2 hierarchy",
			cgroup: "4:memory:/process_api/f0200655\n1:cpu:/\n0::/\n",
			sys: fstest.MapFS{
				"memory/memory.limit_in_bytes":                      {Data: []byte("9223372036854771712\n")},
				"memory/process_api/f0200655/memory.limit_in_bytes": {Data: []byte("9223372036854771712\n")},
			},
		},
		{
			name:   "memory among other v1 controllers",
			cgroup: "3:cpu,memory:/job\n",
			sys:    fstest.MapFS{"memory/job/memory.limit_in_bytes": {Data: []byte("2147483648")}},
			want:   2 << 30,
		},
		{name: "no cgroups at all (not Linux)", cgroup: "", sys: fstest.MapFS{}},
		{
			name:   "garbage",
			cgroup: "nonsense\n0::relative\n",
			sys:    fstest.MapFS{"memory.max": {Data: []byte("-5")}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := containerMemoryLimit([]byte(tt.cgroup), tt.sys); got != tt.want {
				t.Errorf("containerMemoryLimit = %d, want %d", got, tt.want)
			}
		})
	}
}
