package main

import (
	"math"
	"os"
	"runtime"
	"runtime/debug"
)

// replayGCFloor is the heap size below which replay runs no garbage
// collection. Most capture files are replayed well under it, in a process
// that exits right after; collecting there only costs time (a third of a
// small replay, see BENCHMARKS.md).
const replayGCFloor = 64 << 20

// setGCFloor keeps the collector off until the heap reaches floor bytes and
// restores the normal pacing (GOGC) after that first collection, so a large
// replay behaves as it would without the floor. It leaves the runtime alone
// when the user tuned it with GOGC or GOMEMLIMIT.
func setGCFloor(floor int64) {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return
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
