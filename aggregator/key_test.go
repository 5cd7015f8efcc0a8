package aggregator

import (
	"encoding/binary"
	"hash/fnv"
	"testing"

	"github.com/flowsensor/flowsensor/bpf"
)

// reverse returns r as the other endpoint would send it.
func reverse(r *bpf.Record) *bpf.Record {
	rr := *r
	rr.SrcAddr, rr.DstAddr = r.DstAddr, r.SrcAddr
	rr.SrcPort, rr.DstPort = r.DstPort, r.SrcPort
	return &rr
}

func TestKeyCanonical(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    pkt
		fwd  bool // the sender is the lower endpoint
	}{
		{"v4 lower speaks", pkt{src: "10.0.0.1:40000", dst: "10.0.0.2:80"}, true},
		{"v4 higher speaks", pkt{src: "10.0.0.2:80", dst: "10.0.0.1:40000"}, false},
		{"address beats port", pkt{src: "10.0.0.1:65000", dst: "10.0.0.2:1"}, true},
		{"same address, ports decide", pkt{src: "10.0.0.1:80", dst: "10.0.0.1:40000"}, true},
		{"same address, higher port speaks", pkt{src: "10.0.0.1:40000", dst: "10.0.0.1:80"}, false},
		{"byte order, not numeric", pkt{src: "10.0.0.9:1", dst: "10.0.0.10:1"}, true},
		{"v6 udp", pkt{src: "[2001:db8::2]:53", dst: "[2001:db8::1]:5353", proto: bpf.ProtoUDP}, false},
		{"v6 low bytes differ", pkt{src: "[2001:db8::1:0:0:1]:1", dst: "[2001:db8::1:0:0:2]:1", proto: bpf.ProtoUDP}, true},
		{"vlan qinq", pkt{src: "192.168.1.1:1", dst: "10.0.0.1:2", vlan: 10, inner: 20}, false},
		{"gre, no ports", pkt{src: "10.0.0.1:0", dst: "10.0.0.2:0", proto: 47}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.p.rec()
			k1, fwd1 := keyOf(r)
			k2, fwd2 := keyOf(reverse(r))
			if k1 != k2 {
				t.Fatalf("keys differ by direction:\n%+v\n%+v", k1, k2)
			}
			if fwd1 != tc.fwd || fwd2 != !tc.fwd {
				t.Errorf("fwd = %v, reversed %v; want %v, %v", fwd1, fwd2, tc.fwd, !tc.fwd)
			}
			if k1.ifindex != r.Ifindex || k1.vlanID != r.VLANID || k1.innerVLANID != r.InnerVLANID ||
				k1.protocol != r.Protocol || k1.ipVersion != r.IPVersion {
				t.Errorf("key %+v does not carry the record's scope", k1)
			}
		})
	}
}

// TestICMPPortEquivalents pins the mapping against the Community ID v1 tables
// (pycommunityid icmp.py and icmp6.py).
func TestICMPPortEquivalents(t *testing.T) {
	pairs := map[uint8][][2]uint16{
		bpf.ProtoICMP:   {{8, 0}, {13, 14}, {15, 16}, {10, 9}, {17, 18}},
		bpf.ProtoICMPv6: {{128, 129}, {130, 131}, {133, 134}, {135, 136}, {139, 140}, {144, 145}},
	}
	twoWay := map[uint8]map[uint16]bool{bpf.ProtoICMP: {}, bpf.ProtoICMPv6: {}}
	for proto, ps := range pairs {
		for _, p := range ps {
			for _, typ := range []uint16{p[0], p[1]} {
				other := p[0] + p[1] - typ
				twoWay[proto][typ] = true
				sp, dp, tw := icmpPorts(proto, typ, 7)
				if sp != typ || dp != other || !tw {
					t.Errorf("proto %d type %d: got (%d, %d, twoWay %v), want (%d, %d, true)", proto, typ, sp, dp, tw, typ, other)
				}
			}
		}
	}
	for _, proto := range []uint8{bpf.ProtoICMP, bpf.ProtoICMPv6} {
		for typ := range uint16(256) {
			if twoWay[proto][typ] {
				continue
			}
			if sp, dp, tw := icmpPorts(proto, typ, 7); sp != typ || dp != 7 || tw {
				t.Errorf("proto %d type %d: got (%d, %d, twoWay %v), want (%d, 7, false)", proto, typ, sp, dp, tw, typ)
			}
		}
	}
}

func TestICMPKeys(t *testing.T) {
	for _, tc := range []struct {
		name     string
		a, b     pkt
		sameFlow bool
	}{
		{"echo and reply", pkt{src: "10.0.0.2:8", dst: "10.0.0.1:0", proto: 1}, pkt{src: "10.0.0.1:0", dst: "10.0.0.2:0", proto: 1}, true},
		{"timestamp", pkt{src: "10.0.0.1:13", dst: "10.0.0.2:0", proto: 1}, pkt{src: "10.0.0.2:14", dst: "10.0.0.1:0", proto: 1}, true},
		{"router solicit/advert", pkt{src: "10.0.0.1:10", dst: "10.0.0.254:0", proto: 1}, pkt{src: "10.0.0.254:9", dst: "10.0.0.1:0", proto: 1}, true},
		{"mask", pkt{src: "10.0.0.1:17", dst: "10.0.0.2:0", proto: 1}, pkt{src: "10.0.0.2:18", dst: "10.0.0.1:0", proto: 1}, true},
		{"v6 echo", pkt{src: "[2001:db8::1]:128", dst: "[2001:db8::2]:0", proto: 58}, pkt{src: "[2001:db8::2]:129", dst: "[2001:db8::1]:0", proto: 58}, true},
		{"v6 neighbour", pkt{src: "[fe80::2]:135", dst: "[fe80::1]:0", proto: 58}, pkt{src: "[fe80::1]:136", dst: "[fe80::2]:0", proto: 58}, true},
		{"echo codes ignored", pkt{src: "10.0.0.1:8", dst: "10.0.0.2:0", proto: 1}, pkt{src: "10.0.0.2:0", dst: "10.0.0.1:5", proto: 1}, true},
		{"unreachable both ways", pkt{src: "10.0.0.1:3", dst: "10.0.0.2:3", proto: 1}, pkt{src: "10.0.0.2:3", dst: "10.0.0.1:3", proto: 1}, false},
		{"unreachable vs echo", pkt{src: "10.0.0.1:3", dst: "10.0.0.2:0", proto: 1}, pkt{src: "10.0.0.1:8", dst: "10.0.0.2:0", proto: 1}, false},
		{"two requests are not a pair", pkt{src: "10.0.0.1:8", dst: "10.0.0.2:0", proto: 1}, pkt{src: "10.0.0.2:8", dst: "10.0.0.1:0", proto: 1}, false},
		{"v4 type numbers are not v6", pkt{src: "10.0.0.1:128", dst: "10.0.0.2:0", proto: 1}, pkt{src: "10.0.0.2:129", dst: "10.0.0.1:0", proto: 1}, false},
		{"non-first fragments are not mapped", pkt{src: "10.0.0.1:0", dst: "10.0.0.2:0", proto: 1, frag: bpf.FragFragment | bpf.FragNotFirst},
			pkt{src: "10.0.0.2:0", dst: "10.0.0.1:0", proto: 1, frag: bpf.FragFragment | bpf.FragNotFirst}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ka, _ := keyOf(tc.a.rec())
			kb, _ := keyOf(tc.b.rec())
			if (ka == kb) != tc.sameFlow {
				t.Errorf("same key = %v, want %v:\n%+v\n%+v", ka == kb, tc.sameFlow, ka, kb)
			}
		})
	}
}

// TestOneWayNotFlipped checks that a one-way ICMP message keys as sent even
// when its sender is the higher endpoint (Community ID's is_one_way).
func TestOneWayNotFlipped(t *testing.T) {
	k, fwd := keyOf(pkt{src: "10.0.0.9:11", dst: "10.0.0.1:0", proto: 1}.rec())
	if !fwd || k.loAddr != [16]byte{10: 0xff, 11: 0xff, 12: 10, 15: 9} || k.loPort != 11 {
		t.Errorf("one-way key flipped: fwd %v, %+v", fwd, k)
	}
}

func TestFlowIDStable(t *testing.T) {
	k, _ := keyOf(pkt{src: "10.0.0.1:40000", dst: "10.0.0.2:80", vlan: 7, inner: 9, ifindex: 3}.rec())
	first := t0.UnixNano()

	// Independent FNV-1a over the documented layout.
	var b [56]byte
	copy(b[0:], k.loAddr[:])
	copy(b[16:], k.hiAddr[:])
	binary.BigEndian.PutUint32(b[32:], 3)
	binary.BigEndian.PutUint16(b[36:], 7)
	binary.BigEndian.PutUint16(b[38:], 9)
	binary.BigEndian.PutUint16(b[40:], 40000)
	binary.BigEndian.PutUint16(b[42:], 80)
	b[44], b[45] = bpf.ProtoTCP, 4
	binary.BigEndian.PutUint64(b[48:], uint64(first))
	h := fnv.New64a()
	h.Write(b[:])
	if got, want := flowID(&k, first), h.Sum64(); got != want {
		t.Errorf("flowID = %#x, FNV-1a of the layout = %#x", got, want)
	}
	// Pinned: sinks use the ID as a document ID, so it must never change.
	if got, want := flowID(&k, first), uint64(0xf7ffd2c500621f4c); got != want {
		t.Errorf("flowID = %#x, want %#x", got, want)
	}
	if flowID(&k, first) == flowID(&k, first+1) {
		t.Error("the first packet time does not change the ID")
	}
}

func TestShardSpread(t *testing.T) {
	const n = 4
	var counts [n]int
	for i := range 4000 {
		r := pkt{src: "10.0.0.1:80", dst: "10.0.0.2:80"}.rec()
		r.SrcPort = uint16(1024 + i)
		k, _ := keyOf(r)
		counts[k.shard(n)]++
	}
	for i, c := range counts {
		if c < 800 || c > 1200 { // expect 1000 each
			t.Errorf("shard %d got %d of 4000 keys: %v", i, c, counts)
		}
	}
}
