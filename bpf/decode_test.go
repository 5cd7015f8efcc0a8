package bpf_test

import (
	"testing"

	"github.com/flowsensor/flowsensor/bpf"
	"github.com/flowsensor/flowsensor/internal/testframes"
)

// TestDecodeCraftedFrames holds Decode to the same table as the kernel
// program (loader/prog_test.go): every case, and every case cut at every length.
func TestDecodeCraftedFrames(t *testing.T) {
	n := 0
	for _, c := range testframes.Cases() {
		cuts := []int{len(c.Frame)}
		if c.Outcome == bpf.CounterEmitted {
			for cut := 0; cut < len(c.Frame); cut++ {
				cuts = append(cuts, cut)
			}
		}
		for _, cut := range cuts {
			tc := c.Truncated(cut)
			if cut < 14 {
				tc.Outcome = bpf.CounterTruncL2
			}
			var r bpf.Record
			got := bpf.Decode(tc.Frame, &r)
			if got != tc.Outcome {
				t.Errorf("%s: outcome %s, want %s", tc.Name, got, tc.Outcome)
				continue
			}
			n++
			if got != bpf.CounterEmitted {
				continue
			}
			want := tc.Want
			want.WireLen = uint32(len(tc.Frame))
			if r != want {
				t.Errorf("%s:\n got %+v\nwant %+v", tc.Name, r, want)
			}
		}
	}
	t.Logf("%d frames", n)
}

func TestDecodeEtherType(t *testing.T) {
	c := testframes.Cases()[0] // IPv4 TCP
	var a, b bpf.Record
	if bpf.Decode(c.Frame, &a) != bpf.CounterEmitted || bpf.DecodeEtherType(bpf.EtherTypeIPv4, c.Frame[14:], &b) != bpf.CounterEmitted {
		t.Fatal("not emitted")
	}
	b.WireLen = a.WireLen
	if a != b {
		t.Fatalf("Decode %+v\nDecodeEtherType %+v", a, b)
	}
}

func TestCountersCount(t *testing.T) {
	var c bpf.Counters
	r := bpf.Record{Flags: bpf.RecL4Truncated, FragFlags: bpf.FragFragment}
	c.Count(bpf.CounterEmitted, &r)
	c.Count(bpf.CounterNonIP, &r)
	if c[bpf.CounterSeen] != 2 || c[bpf.CounterEmitted] != 1 || c[bpf.CounterNonIP] != 1 || c[bpf.CounterTruncL4] != 1 || c[bpf.CounterFragments] != 1 {
		t.Fatalf("%v", c)
	}
}

// FuzzDecode: any input decodes without panicking, and a record is
// self-consistent. Seeded with the crafted frames; the corpus captures seed
// the file-reader fuzzers.
func FuzzDecode(f *testing.F) {
	for _, c := range testframes.Cases() {
		f.Add(c.Frame)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		var r bpf.Record
		out := bpf.Decode(frame, &r)
		if out >= bpf.NumCounters || out == bpf.CounterSeen {
			t.Fatalf("outcome %d", out)
		}
		if r.WireLen != uint32(len(frame)) {
			t.Fatalf("wire_len %d for %d bytes", r.WireLen, len(frame))
		}
		if out == bpf.CounterEmitted && r.IPVersion != 4 && r.IPVersion != 6 {
			t.Fatalf("record without IP version: %+v", r)
		}
		if r.VLANDepth > bpf.MaxVLAN {
			t.Fatalf("vlan depth %d", r.VLANDepth)
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	for _, f := range testframes.BenchFrames() {
		b.Run(f.Name, func(b *testing.B) {
			var r bpf.Record
			for b.Loop() {
				bpf.Decode(f.Frame, &r)
			}
		})
	}
}
