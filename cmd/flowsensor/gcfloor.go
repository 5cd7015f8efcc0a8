package main

import (
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
)

// replayGCFloor is the heap size below which replay runs no garbage
// collection. Most capture files are replayed well under it, in a process
// that exits right after; collecting there only costs time (a third of a
// small replay, see BENCHMARKS.md). In a container with a memory limit it is
// at most a quarter of the limit.
const replayGCFloor = 64 << 20

// cgroupMemoryLimits are where a process finds its own memory limit inside a
// container: cgroup v2, then v1.
var cgroupMemoryLimits = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// memoryLimit is the first limit found in files, or 0 for none ("max", or
// cgroup v1's page-rounded 2^63).
func memoryLimit(files []string) int64 {
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || v <= 0 || v >= 1<<60 {
			return 0
		}
		return v
	}
	return 0
}

// setGCFloor keeps the collector off until the heap reaches floor bytes and
// restores the normal pacing (GOGC) after that first collection, so a large
// replay behaves as it would without the floor. It leaves the runtime alone
// when the user tuned it with GOGC or GOMEMLIMIT.
func setGCFloor(floor int64) {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	if limit := memoryLimit(cgroupMemoryLimits); limit > 0 {
		floor = min(floor, limit/4)
	}
	percent := debug.SetGCPercent(-1)
	debug.SetMemoryLimit(floor)
	// The cleanup runs once the first collection has found the sentinel
	// unreachable.
	sentinel := new([64]byte)
	runtime.AddCleanup(sentinel, func(percent int) {
		debug.SetGCPercent(percent)
		debug.SetMemoryLimit(math.MaxInt64)
	}, percent)
}
