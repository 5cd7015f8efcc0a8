package elasticsearch

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/flowsensor/flowsensor/aggregator"
)

// day1 and day2: two UTC days, so documents go to two daily indices.
var (
	day1 = time.Date(2024, 2, 29, 23, 59, 30, 123456789, time.UTC)
	day2 = time.Date(2024, 3, 1, 0, 0, 1, 1, time.UTC)
)

// sampleFlows covers every branch of the encoder.
func sampleFlows() []aggregator.Flow {
	cet := time.FixedZone("CET", 3600)
	return []aggregator.Flow{
		{ // IPv4 TCP, closed, with Community ID
			ID: 1, Start: day1, End: day1.Add(250 * time.Millisecond),
			Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("198.51.100.7"),
			SrcPort: 51234, DstPort: 443, Protocol: 6, IPVersion: 4,
			Ifindex: 2, Interface: "eth0",
			SrcPackets: 10, SrcBytes: 1500, DstPackets: 8, DstBytes: 9000,
			SrcTCPFlags: 0x1b, DstTCPFlags: 0xff, Final: true, EndReason: aggregator.EndTCPClose,
			CommunityID: "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
		},
		{ // IPv6 UDP, periodic report of a long flow; ID above 2^63
			ID: 0xfedcba9876543210, Seq: 3, Start: day2, End: day2.Add(59 * time.Second),
			Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8::53"),
			SrcPort: 53000, DstPort: 53, Protocol: 17, IPVersion: 6,
			Ifindex: 3, Interface: "eth1",
			SrcPackets: 1 << 40, SrcBytes: 1 << 50, DstPackets: 1, DstBytes: 90,
			Final: false, EndReason: aggregator.EndActive,
		},
		{ // ICMP echo, addresses IPv4-mapped as in the kernel record
			ID: 3, Start: day1.Add(10 * time.Second), End: day1.Add(11 * time.Second),
			Src: netip.MustParseAddr("::ffff:203.0.113.9"), Dst: netip.MustParseAddr("::ffff:192.0.2.1"),
			SrcPort: 8, DstPort: 0, Protocol: 1, IPVersion: 4,
			Ifindex: 2, Interface: "eth0",
			SrcPackets: 2, SrcBytes: 196, DstPackets: 2, DstBytes: 196,
			Final: true, EndReason: aggregator.EndIdle,
		},
		{ // ICMPv6, Start in another zone: indexed by the UTC day
			ID: 4, Start: day2.Add(15 * time.Minute).In(cet), End: day2.Add(16 * time.Minute).In(cet),
			Src: netip.MustParseAddr("fe80::1"), Dst: netip.MustParseAddr("ff02::1"),
			SrcPort: 128, DstPort: 3, Protocol: 58, IPVersion: 6,
			Interface:  "eth1",
			SrcPackets: 1, SrcBytes: 118,
			Final: true, EndReason: aggregator.EndShutdown,
		},
		{ // QinQ-tagged SCTP, SYN-only TCP flags ignored for non-TCP
			ID: 5, Seq: 1, Start: day2.Add(time.Second), End: day2.Add(2 * time.Second),
			Src: netip.MustParseAddr("10.1.2.3"), Dst: netip.MustParseAddr("10.3.2.1"),
			SrcPort: 2905, DstPort: 2905, Protocol: 132, IPVersion: 4,
			VLANID: 100, InnerVLANID: 4094, Ifindex: 7, Interface: "bond0.100",
			SrcPackets: 3, SrcBytes: 450, SrcTCPFlags: 2,
			Final: true, EndReason: aggregator.EndEvicted,
		},
		{ // GRE, no reason set, no interface, same address both ways
			ID: 6, Start: day1, End: day1,
			Src: netip.MustParseAddr("192.0.2.2"), Dst: netip.MustParseAddr("192.0.2.2"),
			Protocol: 47, IPVersion: 4,
			SrcPackets: 1, SrcBytes: 60,
			Final: true,
		},
		{ // a protocol without an IANA keyword here, an odd interface name
			ID: 7, Start: day2, End: day2.Add(time.Microsecond),
			Src: netip.MustParseAddr("192.0.2.3"), Dst: netip.MustParseAddr("192.0.2.4"),
			Protocol: 253, IPVersion: 4, VLANID: 4094, Ifindex: 9, Interface: "we\"ird\\\x01\xff",
			SrcPackets: 1, SrcBytes: 60, DstPackets: 1, DstBytes: 60,
			Final: true, EndReason: aggregator.EndRestart,
		},
	}
}

// genFlows makes n flows starting at base: IPv4 and IPv6, TCP, UDP, ICMP,
// ICMPv6, with and without VLAN tags, final and not. Flow i has ID
// base-derived and unique; every fourth is a periodic (non-final) report.
func genFlows(n int, base time.Time, idBase uint64) []aggregator.Flow {
	flows := make([]aggregator.Flow, n)
	for i := range flows {
		f := &flows[i]
		f.ID = idBase + uint64(i)*0x9e3779b97f4a7c15
		f.Seq = uint32(i % 3)
		f.Start = base.Add(time.Duration(i) * time.Millisecond)
		f.End = f.Start.Add(time.Duration(i%1000) * time.Microsecond)
		if i%2 == 0 {
			f.IPVersion = 4
			f.Src = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
			f.Dst = netip.AddrFrom4([4]byte{192, 0, 2, byte(i % 7)})
		} else {
			f.IPVersion = 6
			a := [16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)}
			f.Src = netip.AddrFrom16(a)
			f.Dst = netip.MustParseAddr("2001:db8::53")
		}
		switch i % 4 {
		case 0:
			f.Protocol, f.SrcPort, f.DstPort = 6, uint16(1024+i%50000), 443
			f.SrcTCPFlags, f.DstTCPFlags = 0x1b, 0x12
		case 1:
			f.Protocol, f.SrcPort, f.DstPort = 17, uint16(1024+i%50000), 53
		case 2:
			f.Protocol, f.SrcPort, f.DstPort = 1, 8, 0
			if f.IPVersion == 6 {
				f.Protocol, f.SrcPort = 58, 128
			}
		case 3:
			f.Protocol, f.SrcPort, f.DstPort = 6, uint16(1024+i%50000), 80
		}
		if i%5 == 0 {
			f.VLANID = uint16(100 + i%3)
		}
		if i%10 == 0 {
			f.InnerVLANID = 200
		}
		f.Ifindex, f.Interface = 2, "eth0"
		f.SrcPackets, f.SrcBytes = uint64(1+i%10), uint64(60*(1+i%10))
		f.DstPackets, f.DstBytes = uint64(i%3), uint64(1500*(i%3))
		f.Final = i%4 != 3
		if f.Final {
			f.EndReason = aggregator.EndIdle
		} else {
			f.EndReason = aggregator.EndActive
		}
		f.CommunityID = "1:test"
	}
	return flows
}

func quietLogger() *slog.Logger {
	if os.Getenv("FLOWSENSOR_ES_VERBOSE") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// waitFor polls cond every 50ms for at most limit; the limit is a bound on
// a hang, not a performance threshold.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: still waiting for %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// closeSink closes s with a generous bound.
func closeSink(t *testing.T, s *Sink) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return s.Close(ctx)
}

// checkInvariant: at rest every document is accounted for exactly once.
func checkInvariant(t *testing.T, st Stats) {
	t.Helper()
	in := st.Accepted + st.Recovered
	out := st.Indexed + st.Duplicates + st.DeadLettered + st.DeadLetterFailed + st.Refused + uint64(st.SpoolDocs) + uint64(st.Queued)
	if in != out {
		t.Errorf("accounting: accepted %d + recovered %d != indexed %d + duplicates %d + dead-lettered %d + dead-letter failed %d + refused %d + spooled %d + queued %d (%+v)",
			st.Accepted, st.Recovered, st.Indexed, st.Duplicates, st.DeadLettered, st.DeadLetterFailed, st.Refused, st.SpoolDocs, st.Queued, st)
	}
}
