package aggregator

import (
	"sync"
	"testing"
	"time"

	"github.com/flowsensor/flowsensor/bpf"
)

// runWriter sends pkts through an Aggregator's Writer and returns every report.
func runWriter(t *testing.T, pkts ...pkt) []Flow {
	t.Helper()
	var mu sync.Mutex
	var out []Flow
	a := New(Config{Shards: 2}, func(fs []Flow) {
		mu.Lock()
		out = append(out, fs...)
		mu.Unlock()
	})
	w := a.NewWriter()
	for _, p := range pkts {
		r := p.rec()
		if p.frag&bpf.FragNotFirst != 0 {
			r.SrcPort, r.DstPort = 0, 0 // the kernel cannot see ports here
		}
		r.FragID = 77
		w.Add(r)
	}
	w.Flush()
	a.Close()
	return out
}

func TestFragmentsJoinTheirFlow(t *testing.T) {
	const first, later = bpf.FragFragment | bpf.FragMore, bpf.FragFragment | bpf.FragNotFirst
	for _, tc := range []struct {
		name     string
		src, dst string
		proto    uint8
	}{
		{"udp-v4", "10.0.0.1:5353", "10.0.0.2:53", bpf.ProtoUDP},
		{"udp-v6", "[2001:db8::1]:5353", "[2001:db8::2]:53", bpf.ProtoUDP},
		{"icmp-echo", "10.0.0.1:8", "10.0.0.2:0", bpf.ProtoICMP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			flows := runWriter(t,
				pkt{at: 0, src: tc.src, dst: tc.dst, proto: tc.proto, frag: first, len: 1514},
				pkt{at: time.Millisecond, src: tc.src, dst: tc.dst, proto: tc.proto, frag: later | bpf.FragMore, len: 1514},
				pkt{at: 2 * time.Millisecond, src: tc.src, dst: tc.dst, proto: tc.proto, frag: later, len: 300},
			)
			f := one(t, flows)
			if f.SrcPackets != 3 || f.SrcBytes != 1514+1514+300 {
				t.Fatalf("flow %+v, want all 3 fragments", f)
			}
		})
	}
}

func TestFragmentWithoutFirstCountsPortless(t *testing.T) {
	const later = bpf.FragFragment | bpf.FragNotFirst
	flows := runWriter(t,
		pkt{at: 0, src: "10.0.0.1:5353", dst: "10.0.0.2:53", proto: bpf.ProtoUDP, frag: later}, // first fragment never seen
		pkt{at: time.Millisecond, src: "10.0.0.1:5353", dst: "10.0.0.2:53", proto: bpf.ProtoUDP},
	)
	if len(flows) != 2 {
		t.Fatalf("got %d flows, want a port-less one and the datagram's: %+v", len(flows), flows)
	}
	for _, f := range flows {
		if f.SrcPackets != 1 {
			t.Errorf("flow %+v", f)
		}
	}
}

func TestFragTrackerExpiryAndBound(t *testing.T) {
	var f fragTracker
	rec := func(id uint32, ts time.Duration, flags uint8, sport uint16) *bpf.Record {
		r := pkt{at: ts, src: "10.0.0.1:0", dst: "10.0.0.2:0", proto: bpf.ProtoUDP, frag: flags}.rec()
		r.FragID, r.SrcPort, r.DstPort = id, sport, sport
		return r
	}
	const first, later = bpf.FragFragment | bpf.FragMore, bpf.FragFragment | bpf.FragNotFirst
	f.resolve(rec(1, 0, first, 1000))
	port := func(r *bpf.Record) uint16 { f.resolve(r); return r.SrcPort }
	if p := port(rec(1, fragTTL-time.Nanosecond, later, 0)); p != 1000 {
		t.Fatalf("within the TTL: port %d", p)
	}
	if p := port(rec(1, fragTTL, later, 0)); p != 0 {
		t.Fatalf("after the TTL: port %d", p)
	}
	for i := uint32(0); i < maxFragments+10; i++ {
		f.resolve(rec(i+2, fragTTL+time.Duration(i), first, 2000))
	}
	if len(f.ports) > maxFragments {
		t.Fatalf("%d entries held, limit %d", len(f.ports), maxFragments)
	}
	if p := port(rec(maxFragments+11, fragTTL+maxFragments+9, later, 0)); p != 2000 {
		t.Fatalf("newest entry evicted")
	}
	if len(f.fifo)-f.head != len(f.ports) {
		t.Fatalf("queue holds %d entries, map %d", len(f.fifo)-f.head, len(f.ports))
	}
}
