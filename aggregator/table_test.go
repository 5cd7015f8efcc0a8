package aggregator

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/flowsensor/flowsensor/bpf"
)

const ms = time.Millisecond

func TestBidirectionalMerge(t *testing.T) {
	for _, tc := range []struct{ a, b string }{
		{"10.0.0.1", "10.0.0.2"}, // initiator is the lower endpoint
		{"10.0.0.2", "10.0.0.1"}, // initiator is the higher endpoint
		{"[2001:db8::2]", "[2001:db8::1]"},
	} {
		t.Run(tc.a, func(t *testing.T) {
			a, b := tc.a+":40000", tc.b+":80"
			tb := feed(Config{},
				pkt{at: 0, src: a, dst: b, flags: bpf.TCPSyn, len: 60},
				pkt{at: 1 * ms, src: b, dst: a, flags: bpf.TCPSyn | bpf.TCPAck, len: 60},
				pkt{at: 2 * ms, src: a, dst: b, flags: bpf.TCPAck, len: 52},
				pkt{at: 3 * ms, src: a, dst: b, flags: bpf.TCPPsh | bpf.TCPAck, len: 500},
				pkt{at: 4 * ms, src: b, dst: a, flags: bpf.TCPAck, len: 1500},
			)
			if tb.Len() != 1 {
				t.Fatalf("Len = %d, want 1", tb.Len())
			}
			f := one(t, flush(tb))
			ap, bp := netip.MustParseAddrPort(a), netip.MustParseAddrPort(b)
			want := Flow{
				ID: f.ID, Start: ts(0), End: ts(4 * ms),
				Src: ap.Addr(), Dst: bp.Addr(), SrcPort: 40000, DstPort: 80,
				Protocol: bpf.ProtoTCP, IPVersion: f.IPVersion, Ifindex: 1,
				SrcPackets: 3, SrcBytes: 612, DstPackets: 2, DstBytes: 1560,
				SrcTCPFlags: bpf.TCPSyn | bpf.TCPAck | bpf.TCPPsh, DstTCPFlags: bpf.TCPSyn | bpf.TCPAck, MaxPacket: 1500,
				Final: true, EndReason: EndShutdown, CommunityID: f.CommunityID,
			}
			if len(f.CommunityID) != 30 || f.CommunityID[:2] != "1:" {
				t.Errorf("CommunityID = %q, want 1:<base64 SHA-1>", f.CommunityID)
			}
			if f != want {
				t.Errorf("got  %+v\nwant %+v", f, want)
			}
			if wantV := map[bool]uint8{true: 4, false: 6}[ap.Addr().Is4()]; f.IPVersion != wantV {
				t.Errorf("IPVersion = %d, want %d", f.IPVersion, wantV)
			}
		})
	}
}

// TestOutOfOrderDirection feeds a conversation in the order per-CPU batches
// can deliver it (a reply before its request): Src is still the sender of the
// earliest packet, and the report equals the one of the in-order feed.
func TestOutOfOrderDirection(t *testing.T) {
	a, b := "10.0.0.2:40000", "10.0.0.1:80" // the initiator is the higher endpoint
	pkts := []pkt{
		{at: 0, src: a, dst: b, flags: bpf.TCPSyn, len: 60},
		{at: 1 * ms, src: b, dst: a, flags: bpf.TCPSyn | bpf.TCPAck, len: 60},
		{at: 2 * ms, src: a, dst: b, flags: bpf.TCPAck | bpf.TCPFin, len: 52},
		{at: 3 * ms, src: b, dst: a, flags: bpf.TCPAck | bpf.TCPFin, len: 1500},
	}
	want := one(t, flush(feed(Config{}, pkts...)))
	for _, order := range [][]int{{1, 0, 2, 3}, {1, 3, 0, 2}, {3, 1, 2, 0}} {
		var shuffled []pkt
		for _, i := range order {
			shuffled = append(shuffled, pkts[i])
		}
		if got := one(t, flush(feed(Config{}, shuffled...))); got != want {
			t.Errorf("order %v:\n got  %+v\nwant %+v", order, got, want)
		}
	}
	if want.Src != netip.MustParseAddr("10.0.0.2") || want.SrcPackets != 2 || want.SrcTCPFlags != bpf.TCPSyn|bpf.TCPAck|bpf.TCPFin {
		t.Errorf("in order: %+v", want)
	}
}

func TestICMPFlows(t *testing.T) {
	const a, b = "10.0.0.2", "10.0.0.1"
	for _, tc := range []struct {
		name  string
		pkts  []pkt
		flows []string // "src:type>dst:code srcPackets/dstPackets", compared as a set
	}{
		{"echo request and reply", []pkt{
			{src: a + ":8", dst: b + ":0", proto: 1},
			{src: b + ":0", dst: a + ":0", proto: 1},
			{src: a + ":8", dst: b + ":0", proto: 1},
		}, []string{"10.0.0.2:8>10.0.0.1:0 2/1"}},
		{"reply seen first", []pkt{
			{src: b + ":0", dst: a + ":0", proto: 1},
			{src: a + ":8", dst: b + ":0", proto: 1},
		}, []string{"10.0.0.1:0>10.0.0.2:0 1/1"}},
		{"v6 echo", []pkt{
			{src: "[2001:db8::1]:128", dst: "[2001:db8::2]:0", proto: 58},
			{src: "[2001:db8::2]:129", dst: "[2001:db8::1]:0", proto: 58},
		}, []string{"2001:db8::1:128>2001:db8::2:0 1/1"}},
		{"unreachable is one-way", []pkt{
			{src: a + ":3", dst: b + ":1", proto: 1},
			{src: b + ":3", dst: a + ":1", proto: 1},
			{src: a + ":3", dst: b + ":1", proto: 1},
		}, []string{"10.0.0.1:3>10.0.0.2:1 1/0", "10.0.0.2:3>10.0.0.1:1 2/0"}},
		{"unreachable codes are separate", []pkt{
			{src: a + ":3", dst: b + ":1", proto: 1},
			{src: a + ":3", dst: b + ":3", proto: 1},
		}, []string{"10.0.0.2:3>10.0.0.1:1 1/0", "10.0.0.2:3>10.0.0.1:3 1/0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := map[string]bool{}
			for _, f := range flush(feed(Config{}, tc.pkts...)) {
				got[fmt.Sprintf("%v:%d>%v:%d %d/%d", f.Src, f.SrcPort, f.Dst, f.DstPort, f.SrcPackets, f.DstPackets)] = true
			}
			if len(got) != len(tc.flows) {
				t.Errorf("got flows %v, want %v", got, tc.flows)
			}
			for _, w := range tc.flows {
				if !got[w] {
					t.Errorf("missing flow %q; got %v", w, got)
				}
			}
		})
	}
}

func TestScopeSeparatesFlows(t *testing.T) {
	base := pkt{src: "10.0.0.1:40000", dst: "10.0.0.2:80"}
	variants := []pkt{base}
	for _, mod := range []func(*pkt){
		func(p *pkt) { p.ifindex = 2 },
		func(p *pkt) { p.vlan = 10 },
		func(p *pkt) { p.vlan, p.inner = 10, 20 },
		func(p *pkt) { p.vlan, p.inner = 20, 10 },
		func(p *pkt) { p.proto = bpf.ProtoUDP },
		func(p *pkt) { p.src, p.dst = "[::ffff:10.0.0.1]:40000", "[::ffff:10.0.0.2]:80" }, // IPv6 carrying v4-mapped addresses
	} {
		p := base
		mod(&p)
		variants = append(variants, p)
	}
	cfg := Config{InterfaceName: func(i uint32) string { return fmt.Sprintf("eth%d", i) }}
	tb := NewTable(cfg)
	for i, p := range variants {
		r := p.rec()
		if i == len(variants)-1 {
			r.IPVersion = 6
		}
		tb.Add(r)
		rr := reverse(r) // the answer joins the same flow
		tb.Add(rr)
	}
	flows := flush(tb)
	if len(flows) != len(variants) {
		t.Fatalf("got %d flows, want %d", len(flows), len(variants))
	}
	seen := map[string]bool{}
	for _, f := range flows {
		if f.SrcPackets != 1 || f.DstPackets != 1 {
			t.Errorf("flow %+v: want one packet each way", f)
		}
		if f.Interface != fmt.Sprintf("eth%d", f.Ifindex) {
			t.Errorf("Interface = %q for ifindex %d", f.Interface, f.Ifindex)
		}
		s := fmt.Sprint(f.Ifindex, f.VLANID, f.InnerVLANID, f.Protocol, f.IPVersion)
		if seen[s] {
			t.Errorf("two flows with scope %s", s)
		}
		seen[s] = true
	}
}

func TestIdleTimeout(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   Config
		at    time.Duration // Expire time, after the last packet at 3s
		ended bool
	}{
		{"default, 1ns early", Config{}, 3*time.Second + DefaultIdleTimeout - 1, false},
		{"default, on time", Config{}, 3*time.Second + DefaultIdleTimeout, true},
		{"default, late", Config{}, time.Hour, true},
		{"5s, 1ns early", Config{IdleTimeout: 5 * time.Second}, 8*time.Second - 1, false},
		{"5s, on time", Config{IdleTimeout: 5 * time.Second}, 8 * time.Second, true},
		{"before the packets", Config{}, -time.Hour, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := feed(tc.cfg,
				pkt{at: 0, src: "10.0.0.1:1", dst: "10.0.0.2:2", proto: bpf.ProtoUDP},
				pkt{at: 3 * time.Second, src: "10.0.0.2:2", dst: "10.0.0.1:1", proto: bpf.ProtoUDP},
				pkt{at: 2 * time.Second, src: "10.0.0.1:1", dst: "10.0.0.2:2", proto: bpf.ProtoUDP}, // late arrival
			)
			got := expire(tb, tc.at)
			if !tc.ended {
				if len(got) != 0 || tb.Len() != 1 {
					t.Fatalf("expired early: %+v", got)
				}
				return
			}
			f := one(t, got)
			if !f.Final || f.EndReason != EndIdle || f.Seq != 0 || f.Packets() != 3 {
				t.Errorf("got %+v, want Final EndIdle with 3 packets", f)
			}
			if !f.Start.Equal(ts(0)) || !f.End.Equal(ts(3*time.Second)) {
				t.Errorf("Start, End = %v, %v; want t0, t0+3s (out-of-order packet must not move End back)", f.Start, f.End)
			}
			if tb.Len() != 0 {
				t.Errorf("Len = %d after expiry", tb.Len())
			}
		})
	}
}

func TestIdleExpiresOnlyDueFlows(t *testing.T) {
	tb := NewTable(Config{IdleTimeout: 10 * time.Second})
	for i := range 10 {
		tb.Add(pkt{at: time.Duration(i) * time.Second, src: fmt.Sprintf("10.0.0.%d:1", i+1), dst: "10.1.0.1:2"}.rec())
	}
	tb.Add(pkt{at: 9 * time.Second, src: "10.0.0.1:1", dst: "10.1.0.1:2"}.rec())   // refresh the oldest
	tb.Add(pkt{at: 20 * time.Second, src: "10.0.0.10:1", dst: "10.1.0.1:2"}.rec()) // idle since 9s: a new flow
	got := expire(tb, 15*time.Second)                                              // due: last packet <= 5s
	if len(got) != 6 {
		t.Fatalf("expired %d flows, want 6 (10.0.0.10's first flow, then 10.0.0.2 .. 10.0.0.6)", len(got))
	}
	if f := got[0]; f.Src != netip.AddrFrom4([4]byte{10, 0, 0, 10}) || f.EndReason != EndIdle || f.Packets() != 1 {
		t.Errorf("first report %+v, want 10.0.0.10's flow ended idle when its next packet came", f)
	}
	for i, f := range got[1:] {
		if want := netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 2)}); f.Src != want {
			t.Errorf("expired #%d is %v, want %v (oldest first)", i, f.Src, want)
		}
	}
	if tb.Len() != 5 {
		t.Errorf("Len = %d, want 5", tb.Len())
	}
}

func TestActiveTimeout(t *testing.T) {
	const active = 60 * time.Second
	tb := NewTable(Config{ActiveTimeout: active})
	var got []Flow
	emit := func(f Flow) { got = append(got, f) }
	// One packet a second, alternating directions, over 3.5 active windows,
	// with a tick after each.
	end := 7 * active / 2
	var total uint64
	for at := time.Duration(0); at <= end; at += time.Second {
		p := pkt{at: at, src: "10.0.0.1:5000", dst: "10.0.0.2:5001", proto: bpf.ProtoUDP, len: uint32(100 + at/time.Second)}
		if at/time.Second%2 == 1 {
			p.src, p.dst = p.dst, p.src
		}
		tb.Add(p.rec())
		total += uint64(p.len)
		tb.Expire(ts(at), emit)
	}
	tb.Expire(ts(end+DefaultIdleTimeout), emit)

	if len(got) != 4 {
		t.Fatalf("got %d reports, want 4: %+v", len(got), got)
	}
	// Each report covers [start, start+active): the packet at 60s is the
	// first one past the deadline, so it closes the report before it is
	// counted, and starts the next one.
	wantStart := []time.Duration{0, 60 * time.Second, 120 * time.Second, 180 * time.Second}
	wantEnd := []time.Duration{59 * time.Second, 119 * time.Second, 179 * time.Second, end}
	var packets, bytes uint64
	for i, f := range got {
		if f.ID != got[0].ID || f.Seq != uint32(i) {
			t.Errorf("report %d: ID %#x Seq %d, want ID %#x Seq %d", i, f.ID, f.Seq, got[0].ID, i)
		}
		last := i == len(got)-1
		if f.Final != last || (last && f.EndReason != EndIdle) || (!last && f.EndReason != EndActive) {
			t.Errorf("report %d: Final %v %v", i, f.Final, f.EndReason)
		}
		if !f.Start.Equal(ts(wantStart[i])) || !f.End.Equal(ts(wantEnd[i])) {
			t.Errorf("report %d: %v..%v, want %v..%v", i, f.Start.Sub(t0), f.End.Sub(t0), wantStart[i], wantEnd[i])
		}
		if f.Src != netip.MustParseAddr("10.0.0.1") {
			t.Errorf("report %d: Src %v changed", i, f.Src)
		}
		packets += f.Packets()
		bytes += f.Bytes()
	}
	if n := uint64(end/time.Second + 1); packets != n || bytes != total {
		t.Errorf("reports sum to %d packets, %d bytes; want %d, %d", packets, bytes, n, total)
	}
}

// TestActiveThenSilent: a flow that stops right after an active report still
// gets a Final report, with no packets, stamped at its last packet.
func TestActiveThenSilent(t *testing.T) {
	tb := feed(Config{ActiveTimeout: 10 * time.Second, IdleTimeout: 30 * time.Second},
		pkt{at: 0, src: "10.0.0.1:1", dst: "10.0.0.2:2"},
		pkt{at: 9 * time.Second, src: "10.0.0.1:1", dst: "10.0.0.2:2"},
	)
	r0 := one(t, expire(tb, 10*time.Second))
	if r0.Final || r0.EndReason != EndActive || r0.Packets() != 2 {
		t.Fatalf("first report %+v", r0)
	}
	if got := expire(tb, 20*time.Second); len(got) != 0 {
		t.Fatalf("a flow without new packets was reported again: %+v", got)
	}
	r1 := one(t, expire(tb, 39*time.Second))
	if r1.ID != r0.ID || r1.Seq != 1 || !r1.Final || r1.EndReason != EndIdle || r1.Packets() != 0 ||
		!r1.Start.Equal(ts(9*time.Second)) || !r1.End.Equal(ts(9*time.Second)) || r1.SrcTCPFlags != 0 {
		t.Errorf("final report %+v", r1)
	}
}

func TestTCPClose(t *testing.T) {
	const a, b = "10.0.0.1:40000", "10.0.0.2:443"
	handshake := []pkt{
		{at: 0, src: a, dst: b, flags: bpf.TCPSyn},
		{at: 1 * ms, src: b, dst: a, flags: bpf.TCPSyn | bpf.TCPAck},
		{at: 2 * ms, src: a, dst: b, flags: bpf.TCPAck},
	}
	for _, tc := range []struct {
		name    string
		pkts    []pkt
		closeAt time.Duration // -1: not closing
	}{
		{"fin both ways", []pkt{
			{at: 10 * ms, src: a, dst: b, flags: bpf.TCPFin | bpf.TCPAck},
			{at: 20 * ms, src: b, dst: a, flags: bpf.TCPFin | bpf.TCPAck},
			{at: 21 * ms, src: a, dst: b, flags: bpf.TCPAck},
		}, 20 * ms},
		{"fin retransmitted one way", []pkt{
			{at: 10 * ms, src: a, dst: b, flags: bpf.TCPFin | bpf.TCPAck},
			{at: 20 * ms, src: a, dst: b, flags: bpf.TCPFin | bpf.TCPAck},
		}, -1},
		{"rst from server", []pkt{
			{at: 10 * ms, src: b, dst: a, flags: bpf.TCPRst | bpf.TCPAck},
			{at: 11 * ms, src: a, dst: b, flags: bpf.TCPAck},
		}, 10 * ms},
		{"rst from client", []pkt{
			{at: 10 * ms, src: a, dst: b, flags: bpf.TCPRst},
		}, 10 * ms},
		{"fin then rst", []pkt{
			{at: 10 * ms, src: a, dst: b, flags: bpf.TCPFin | bpf.TCPAck},
			{at: 15 * ms, src: b, dst: a, flags: bpf.TCPRst},
			{at: 30 * ms, src: b, dst: a, flags: bpf.TCPFin}, // does not restart the linger
		}, 15 * ms},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := feed(Config{}, append(handshake, tc.pkts...)...)
			if tc.closeAt < 0 {
				if got := expire(tb, time.Second); len(got) != 0 {
					t.Fatalf("half-closed flow evicted: %+v", got)
				}
				f := one(t, expire(tb, 20*ms+DefaultIdleTimeout))
				if f.EndReason != EndIdle {
					t.Errorf("EndReason = %v, want idle", f.EndReason)
				}
				return
			}
			if got := expire(tb, tc.closeAt+DefaultTCPLinger-1); len(got) != 0 {
				t.Fatalf("evicted before the linger: %+v", got)
			}
			f := one(t, expire(tb, tc.closeAt+DefaultTCPLinger))
			if !f.Final || f.EndReason != EndTCPClose {
				t.Errorf("got %+v, want Final EndTCPClose", f)
			}
			if want := uint64(len(handshake) + len(tc.pkts)); f.Packets() != want {
				t.Errorf("Packets = %d, want %d (packets in the linger count)", f.Packets(), want)
			}
			if tb.Len() != 0 {
				t.Errorf("Len = %d", tb.Len())
			}
		})
	}
}

func TestTCPRestart(t *testing.T) {
	const a, b = "10.0.0.1:40000", "10.0.0.2:443"
	closed := []pkt{
		{at: 0, src: a, dst: b, flags: bpf.TCPSyn},
		{at: 1 * ms, src: b, dst: a, flags: bpf.TCPSyn | bpf.TCPAck},
		{at: 5 * ms, src: a, dst: b, flags: bpf.TCPFin | bpf.TCPAck},
		{at: 6 * ms, src: b, dst: a, flags: bpf.TCPFin | bpf.TCPAck},
	}
	for _, tc := range []struct {
		name    string
		next    pkt
		restart bool
	}{
		{"syn from client", pkt{at: 10 * ms, src: a, dst: b, flags: bpf.TCPSyn}, true},
		{"syn from server side", pkt{at: 10 * ms, src: b, dst: a, flags: bpf.TCPSyn | bpf.TCPEce | bpf.TCPCwr}, true},
		{"syn-ack retransmission", pkt{at: 10 * ms, src: b, dst: a, flags: bpf.TCPSyn | bpf.TCPAck}, false},
		{"last ack", pkt{at: 10 * ms, src: a, dst: b, flags: bpf.TCPAck}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := feed(Config{}, append(closed, tc.next)...)
			got := expire(tb, 10*ms) // before the linger ends
			if !tc.restart {
				if len(got) != 0 {
					t.Fatalf("unexpected reports %+v", got)
				}
				f := one(t, flush(tb))
				if f.Packets() != 5 {
					t.Errorf("Packets = %d, want 5", f.Packets())
				}
				return
			}
			old := one(t, got)
			if !old.Final || old.EndReason != EndRestart || old.Packets() != 4 {
				t.Errorf("old flow %+v, want Final EndRestart with 4 packets", old)
			}
			nf := one(t, flush(tb))
			np := netip.MustParseAddrPort(tc.next.src)
			if nf.ID == old.ID || nf.Seq != 0 || nf.Packets() != 1 || nf.Src != np.Addr() || nf.SrcPort != np.Port() ||
				!nf.Start.Equal(ts(10*ms)) {
				t.Errorf("new flow %+v", nf)
			}
			if st := tb.Stats(); st.FlowsCreated != 2 || st.Reports != 2 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// TestSynOpenFlowNoRestart: a SYN on a flow that is not closing (a
// retransmission) counts in the same flow.
func TestSynOpenFlowNoRestart(t *testing.T) {
	tb := feed(Config{},
		pkt{at: 0, src: "10.0.0.1:1", dst: "10.0.0.2:2", flags: bpf.TCPSyn},
		pkt{at: time.Second, src: "10.0.0.1:1", dst: "10.0.0.2:2", flags: bpf.TCPSyn},
	)
	if f := one(t, flush(tb)); f.SrcPackets != 2 {
		t.Errorf("got %+v", f)
	}
}

func TestMaxFlows(t *testing.T) {
	tb := NewTable(Config{MaxFlows: 3})
	flow := func(i int, at time.Duration) *bpf.Record {
		return pkt{at: at, src: fmt.Sprintf("10.0.0.%d:1", i), dst: "10.1.0.1:80"}.rec()
	}
	tb.Add(flow(1, 0))
	tb.Add(flow(2, 1*ms))
	tb.Add(flow(3, 2*ms))
	tb.Add(flow(1, 3*ms)) // 1 is now the most recent; 2 the least
	tb.Add(flow(4, 4*ms)) // full: evicts 2
	tb.Add(flow(4, 5*ms))
	if tb.Len() != 3 {
		t.Fatalf("Len = %d, want 3", tb.Len())
	}
	if st := tb.Stats(); st.Evicted != 1 || st.FlowsCreated != 4 || st.Packets != 6 {
		t.Errorf("stats %+v", st)
	}
	ev := one(t, expire(tb, 5*ms)) // nothing is due; the eviction is delivered
	if !ev.Final || ev.EndReason != EndEvicted || ev.Src != netip.MustParseAddr("10.0.0.2") || ev.Packets() != 1 {
		t.Errorf("evicted %+v, want 10.0.0.2 Final EndEvicted", ev)
	}
	var order []string
	var packets uint64
	for _, f := range flush(tb) {
		order = append(order, f.Src.String())
		packets += f.Packets()
	}
	if got := strings.Join(order, " "); got != "10.0.0.3 10.0.0.1 10.0.0.4" || packets != 5 {
		t.Errorf("flushed %s with %d packets, want 10.0.0.3 10.0.0.1 10.0.0.4 with 5", got, packets)
	}
}

func TestFlush(t *testing.T) {
	tb := NewTable(Config{ActiveTimeout: 10 * time.Second, TCPLinger: time.Minute})
	for i := range 5 {
		tb.Add(pkt{at: 0, src: fmt.Sprintf("10.0.0.%d:1", i), dst: "10.1.0.1:80"}.rec())
	}
	tb.Add(pkt{at: 0, src: "10.0.0.9:1", dst: "10.1.0.1:80", flags: bpf.TCPRst}.rec()) // closing
	tb.Add(pkt{at: 11 * time.Second, src: "10.0.0.0:1", dst: "10.1.0.1:80"}.rec())
	if got := expire(tb, 11*time.Second); len(got) != 6 { // all started at 0
		t.Fatalf("got %d active reports, want 6", len(got))
	}
	flows := flush(tb)
	if len(flows) != 6 || tb.Len() != 0 {
		t.Fatalf("flushed %d, Len %d; want 6, 0", len(flows), tb.Len())
	}
	for _, f := range flows {
		want := EndShutdown
		if f.Src == netip.MustParseAddr("10.0.0.9") {
			want = EndTCPClose // reset before the end, still lingering
		}
		if !f.Final || f.EndReason != want {
			t.Errorf("flushed %+v, want Final %v", f, want)
		}
	}
	if got := flush(tb); len(got) != 0 {
		t.Errorf("second Flush emitted %d", len(got))
	}
	// The table is reusable, with recycled entries.
	tb.Add(pkt{at: 20 * time.Second, src: "10.0.0.1:1", dst: "10.1.0.1:80"}.rec())
	if f := one(t, flush(tb)); f.Seq != 0 || f.Packets() != 1 || f.Interface != "" {
		t.Errorf("recycled entry leaked state: %+v", f)
	}
}

// TestTableInvariants runs a random workload through one Table and checks
// what must hold for any input: each flow's reports are numbered 0..n-1 with
// only the last one final, reports sum to exactly the input, and the table
// ends empty.
func TestTableInvariants(t *testing.T) {
	phases := workload(1, 400)
	tb, flows := runTable(workloadConfig, phases)

	var packets, bytes uint64
	for _, recs := range phases {
		for _, r := range recs {
			packets++
			bytes += uint64(r.WireLen)
		}
	}
	byID := map[uint64][]Flow{}
	var gotPackets, gotBytes uint64
	reasons := map[EndReason]int{}
	for _, f := range flows {
		byID[f.ID] = append(byID[f.ID], f)
		gotPackets += f.Packets()
		gotBytes += f.Bytes()
		reasons[f.EndReason]++
		if f.End.Before(f.Start) {
			t.Errorf("End before Start: %+v", f)
		}
	}
	if gotPackets != packets || gotBytes != bytes {
		t.Errorf("reports sum to %d packets %d bytes, input was %d, %d", gotPackets, gotBytes, packets, bytes)
	}
	for id, rs := range byID {
		for i, f := range rs {
			last := i == len(rs)-1
			if f.Seq != uint32(i) || f.Final != last || (!last && f.EndReason != EndActive) {
				t.Fatalf("flow %#x report %d: Seq %d Final %v %v", id, i, f.Seq, f.Final, f.EndReason)
			}
			if f.Src != rs[0].Src || f.SrcPort != rs[0].SrcPort {
				t.Fatalf("flow %#x changed sides: %+v then %+v", id, rs[0], f)
			}
		}
	}
	for _, r := range []EndReason{EndIdle, EndActive, EndTCPClose, EndShutdown, EndRestart} {
		if reasons[r] == 0 {
			t.Errorf("workload never produced %v: %v", r, reasons)
		}
	}
	st := tb.Stats()
	if st.Packets != packets || st.Bytes != bytes || st.Reports != uint64(len(flows)) ||
		st.FlowsCreated != uint64(len(byID)) || st.ActiveFlows != 0 || tb.Len() != 0 {
		t.Errorf("stats %+v; %d packets, %d reports, %d flows", st, packets, len(flows), len(byID))
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string // substring of the error, "" for valid
	}{
		{Config{}, ""},
		{Config{IdleTimeout: time.Minute, ActiveTimeout: time.Second}, ""}, // active < idle is fine
		{Config{IdleTimeout: -1}, "IdleTimeout"},
		{Config{ActiveTimeout: -time.Second}, "ActiveTimeout"},
		{Config{TCPLinger: -1}, "TCPLinger"},
		{Config{Shards: -2}, "Shards"},
		{Config{MaxFlows: -1}, "MaxFlows"},
	} {
		err := tc.cfg.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Validate(%+v) = %v, want error naming %q", tc.cfg, err, tc.want)
		}
	}
	err := Config{IdleTimeout: -1, MaxFlows: -1}.Validate()
	if err == nil || !strings.Contains(err.Error(), "IdleTimeout") || !strings.Contains(err.Error(), "MaxFlows") {
		t.Errorf("Validate reports only %v; want every bad field", err)
	}
	d := Config{}.withDefaults()
	if d.IdleTimeout != DefaultIdleTimeout || d.ActiveTimeout != DefaultActiveTimeout || d.TCPLinger != DefaultTCPLinger ||
		d.MaxFlows != DefaultMaxFlows || d.Shards < 1 {
		t.Errorf("defaults %+v", d)
	}
}

func TestNewTablePanicsOnBadConfig(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("no panic")
		}
	}()
	NewTable(Config{IdleTimeout: -1})
}
