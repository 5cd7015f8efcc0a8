package aggregator

import (
	"cmp"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/flowsensor/flowsensor/bpf"
)

// t0 is the fake clock's origin; tests place packets and ticks relative to it.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// pkt describes one test record. Zero values mean TCP, 100 bytes, ifindex 1.
type pkt struct {
	at       time.Duration // since t0
	src, dst string        // "addr:port"; ICMP: the ports are type and code
	proto    uint8
	flags    uint8
	len      uint32
	ifindex  uint32
	vlan     uint16
	inner    uint16
	frag     uint8
}

func (p pkt) rec() *bpf.Record {
	s, d := netip.MustParseAddrPort(p.src), netip.MustParseAddrPort(p.dst)
	r := &bpf.Record{
		Ts:          uint64(t0.Add(p.at).UnixNano()),
		Ifindex:     cmp.Or(p.ifindex, 1),
		WireLen:     cmp.Or(p.len, 100),
		SrcPort:     s.Port(),
		DstPort:     d.Port(),
		VLANID:      p.vlan,
		InnerVLANID: p.inner,
		Protocol:    cmp.Or(p.proto, bpf.ProtoTCP),
		FragFlags:   p.frag,
	}
	if r.Protocol == bpf.ProtoTCP {
		r.TCPFlags = p.flags
	}
	r.SetAddrs(s.Addr(), d.Addr())
	return r
}

// feed returns a default table with pkts added.
func feed(cfg Config, pkts ...pkt) *Table {
	tb := NewTable(cfg)
	for _, p := range pkts {
		tb.Add(p.rec())
	}
	return tb
}

func expire(tb *Table, at time.Duration) []Flow {
	var out []Flow
	tb.Expire(t0.Add(at), func(f Flow) { out = append(out, f) })
	return out
}

func flush(tb *Table) []Flow {
	var out []Flow
	tb.Flush(func(f Flow) { out = append(out, f) })
	return out
}

func ts(d time.Duration) time.Time { return t0.Add(d) }

// one fails the test unless flows has exactly one element, and returns it.
func one(t *testing.T, flows []Flow) Flow {
	t.Helper()
	if len(flows) != 1 {
		t.Fatalf("got %d flows, want 1: %+v", len(flows), flows)
	}
	return flows[0]
}

func sortFlows(flows []Flow) {
	slices.SortFunc(flows, func(a, b Flow) int {
		return cmp.Or(cmp.Compare(a.ID, b.ID), cmp.Compare(a.Seq, b.Seq))
	})
}

// phaseLen is the workload's tick interval. Timeouts in workloadConfig are
// multiples of it and no record falls on a phase boundary, so every expiry
// decision is the same whatever order records of one phase arrive in: that
// lets several writers feed an Aggregator and still match one Table exactly.
const phaseLen = time.Second

var workloadConfig = Config{
	IdleTimeout:   15 * phaseLen,
	ActiveTimeout: 20 * phaseLen,
	TCPLinger:     2 * phaseLen,
	MaxFlows:      1 << 20,
}

// workload returns records grouped by phase: a mix of TCP (with SYN, FIN and
// RST), UDP, ICMP echo, ICMP errors, ICMPv6 and port-less GRE over IPv4 and
// IPv6, VLANs and interfaces, a few long-lived flows and many short ones.
func workload(seed uint64, phases int) [][]bpf.Record {
	rng := rand.New(rand.NewPCG(seed, 0))
	v4 := func() netip.Addr { return netip.AddrFrom4([4]byte{10, 0, byte(rng.IntN(4)), byte(rng.IntN(16))}) }
	v6 := func() netip.Addr {
		return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(rng.IntN(16))})
	}
	type tmpl struct {
		r   bpf.Record
		rev bpf.Record
	}
	var flows []tmpl
	for range 400 {
		var r bpf.Record
		if rng.IntN(4) == 0 {
			r.SetAddrs(v6(), v6())
		} else {
			r.SetAddrs(v4(), v4())
		}
		r.Ifindex = uint32(1 + rng.IntN(2))
		if rng.IntN(5) == 0 {
			r.VLANID = uint16(1 + rng.IntN(3))
			if rng.IntN(2) == 0 {
				r.InnerVLANID = uint16(100 + rng.IntN(2))
			}
		}
		icmp := uint8(bpf.ProtoICMP)
		echo, reply := uint16(8), uint16(0)
		if r.IPVersion == 6 {
			icmp, echo, reply = bpf.ProtoICMPv6, 128, 129
		}
		switch n := rng.IntN(20); {
		case n < 10:
			r.Protocol = bpf.ProtoTCP
			r.SrcPort, r.DstPort = uint16(32768+rng.IntN(8)), []uint16{22, 80, 443}[rng.IntN(3)]
		case n < 15:
			r.Protocol = bpf.ProtoUDP
			r.SrcPort, r.DstPort = uint16(32768+rng.IntN(8)), 53
		case n < 17:
			r.Protocol, r.SrcPort, r.DstPort = icmp, echo, 0
		case n < 19:
			r.Protocol, r.SrcPort, r.DstPort = icmp, 3, uint16(rng.IntN(4)) // one-way
		default:
			r.Protocol = 47
		}
		rev := r
		rev.SrcAddr, rev.DstAddr = r.DstAddr, r.SrcAddr
		rev.SrcPort, rev.DstPort = r.DstPort, r.SrcPort
		if r.Protocol == icmp && r.SrcPort == echo {
			rev.SrcPort, rev.DstPort = reply, 0
		}
		if r.Protocol == icmp && r.SrcPort == 3 {
			rev.SrcPort, rev.DstPort = r.SrcPort, r.DstPort // an error the other way: another one-way flow
		}
		flows = append(flows, tmpl{r, rev})
	}

	out := make([][]bpf.Record, phases)
	for p := range out {
		n := rng.IntN(80)
		if rng.IntN(10) == 0 {
			n = 0 // quiet phases let flows go idle
		}
		for range n {
			f := &flows[rng.IntN(len(flows))]
			if rng.IntN(2) == 0 {
				f = &flows[rng.IntN(8)] // a few long-lived flows
			}
			r := f.r
			if rng.IntN(2) == 0 {
				r = f.rev
			}
			r.Ts = uint64(t0.Add(time.Duration(p)*phaseLen + 1 + time.Duration(rng.Int64N(int64(phaseLen-2)))).UnixNano())
			r.WireLen = uint32(60 + rng.IntN(1440))
			if r.Protocol == bpf.ProtoTCP {
				switch n := rng.IntN(100); {
				case n < 5:
					r.TCPFlags = bpf.TCPSyn
				case n < 8:
					r.TCPFlags = bpf.TCPSyn | bpf.TCPAck
				case n < 13:
					r.TCPFlags = bpf.TCPFin | bpf.TCPAck
				case n < 15:
					r.TCPFlags = bpf.TCPRst
				default:
					r.TCPFlags = bpf.TCPAck | uint8(rng.IntN(2))*bpf.TCPPsh
				}
			}
			out[p] = append(out[p], r)
		}
	}
	return out
}

// runTable feeds a workload through one Table, ticking after every phase, and
// returns every report.
func runTable(cfg Config, phases [][]bpf.Record) (*Table, []Flow) {
	tb := NewTable(cfg)
	var out []Flow
	emit := func(f Flow) { out = append(out, f) }
	for p, recs := range phases {
		for i := range recs {
			tb.Add(&recs[i])
		}
		tb.Expire(t0.Add(time.Duration(p+1)*phaseLen), emit)
	}
	tb.Flush(emit)
	return tb, out
}
