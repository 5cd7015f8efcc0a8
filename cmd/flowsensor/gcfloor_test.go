package main

import (
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

// TestGCFloor: below the floor nothing is collected; the first collection
// restores the pacing the process had, with no memory limit left behind.
func TestGCFloor(t *testing.T) {
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	before := debug.SetGCPercent(100)
	defer debug.SetGCPercent(before)
	defer debug.SetMemoryLimit(math.MaxInt64)

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	const floor = 32 << 20
	setGCFloor(floor)
	if p := debug.SetGCPercent(-1); p != -1 {
		t.Fatalf("GC percent %d under the floor, want -1 (off)", p)
	}
	debug.SetGCPercent(-1)
	if l := debug.SetMemoryLimit(-1); l != floor {
		t.Fatalf("memory limit %d, want the floor %d", l, floor)
	}

	// Allocate well past the floor, keeping little alive, until a collection
	// ran and its cleanup restored the pacing.
	var keep [][]byte
	deadline := time.Now().Add(time.Minute)
	for debug.SetMemoryLimit(-1) != math.MaxInt64 {
		if time.Now().After(deadline) {
			t.Fatal("the first collection did not restore GOGC")
		}
		keep = append(keep, make([]byte, 1<<20))
		if len(keep) > 8 {
			keep = keep[1:]
		}
		runtime.Gosched()
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if after.NumGC == ms.NumGC {
		t.Fatal("no collection ran, yet the floor was lifted")
	}
	if p := debug.SetGCPercent(100); p != 100 {
		t.Fatalf("GC percent %d after the floor, want 100", p)
	}
}

// TestGCFloorRespectsUserTuning: GOGC or GOMEMLIMIT set by the user wins.
func TestGCFloorRespectsUserTuning(t *testing.T) {
	t.Setenv("GOGC", "200")
	before := debug.SetGCPercent(200)
	defer debug.SetGCPercent(before)
	setGCFloor(1 << 30)
	if p := debug.SetGCPercent(200); p != 200 {
		t.Fatalf("GC percent %d, want the user's 200", p)
	}
	if l := debug.SetMemoryLimit(-1); l != math.MaxInt64 {
		t.Fatalf("memory limit %d set despite GOGC", l)
	}
}

func TestMemoryLimit(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	v2 := write("memory.max", "268435456\n")
	v2max := write("memory.max.unlimited", "max\n")
	v1 := write("memory.limit_in_bytes", "134217728\n")
	v1max := write("memory.limit_in_bytes.unlimited", "9223372036854771712\n")
	missing := filepath.Join(dir, "absent")
	for _, tc := range []struct {
		files []string
		want  int64
	}{
		{[]string{v2, v1}, 256 << 20},
		{[]string{missing, v1}, 128 << 20},
		{[]string{v2max, v1}, 0},
		{[]string{missing, v1max}, 0},
		{[]string{missing}, 0},
	} {
		if got := memoryLimit(tc.files); got != tc.want {
			t.Errorf("%v: %d, want %d", tc.files, got, tc.want)
		}
	}
}
