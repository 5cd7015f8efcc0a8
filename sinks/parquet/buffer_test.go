package parquet

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/flowsensor/flowsensor/aggregator"
)

// TestBuffer runs random appends, reads and drops across chunk boundaries
// against a plain slice.
func TestBuffer(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var b buffer
	var ref []uint64
	next := uint64(0)
	for step := range 300 {
		switch rng.IntN(3) {
		case 0: // append, sometimes more than a chunk
			n := rng.IntN(2 * chunkLen)
			flows := make([]aggregator.Flow, n)
			for i := range flows {
				flows[i].ID = next
				ref = append(ref, next)
				next++
			}
			b.append(flows)
		case 1: // read a prefix
			n := rng.IntN(b.len() + 1)
			var got []uint64
			err := b.visit(n, func(fs []aggregator.Flow) error {
				if len(fs) == 0 || len(fs) > chunkLen {
					t.Fatalf("step %d: visit gave %d flows", step, len(fs))
				}
				for _, f := range fs {
					got = append(got, f.ID)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, ref[:n]) {
				t.Fatalf("step %d: visit(%d) returned %d flows out of order", step, n, len(got))
			}
		case 2: // drop a prefix
			n := rng.IntN(b.len() + 1)
			b.drop(n)
			ref = ref[n:]
		}
		if b.len() != len(ref) {
			t.Fatalf("step %d: len %d, want %d", step, b.len(), len(ref))
		}
		if want := (b.head + b.len() + chunkLen - 1) / chunkLen; len(b.chunks) != want {
			t.Fatalf("step %d: %d chunks for %d flows from offset %d, want %d", step, len(b.chunks), b.len(), b.head, want)
		}
	}
	b.drop(b.len())
	if len(b.chunks) != 0 || b.head != 0 {
		t.Errorf("empty buffer keeps %d chunks, head %d", len(b.chunks), b.head)
	}
}
