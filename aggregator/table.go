package aggregator

import (
	"net/netip"
	"time"

	"github.com/flowsensor/flowsensor/bpf"
)

// Stats are cumulative counters of a Table or an Aggregator.
type Stats struct {
	Packets      uint64 // records added
	Bytes        uint64 // their wire length
	FlowsCreated uint64
	Reports      uint64 // Flow reports emitted, final or not
	ActiveFlows  uint64 // flows in memory now
	Evicted      uint64 // flows ended early because the table was full
}

// The lists every entry can be on. Each is ordered newest first, so expiry
// pops from the back while the oldest entry is due.
const (
	idleList    = iota // every live flow, by last packet
	activeList         // flows with packets in their current report, by report start
	closingList        // TCP flows after RST or FIN both ways, by close time
	numLists
)

type link struct{ prev, next *entry }

// entry is one flow in a Table. Directions are relative to the flow's Src:
// index 0 counts what Src sent, index 1 what Dst sent. The fields every
// packet updates come first; the rest is used at creation and report time.
type entry struct {
	links   [numLists]link // next == nil: not on that list
	packets [2]uint64
	bytes   [2]uint64
	start   int64    // first packet of the current report (Unix ns)
	end     int64    // last packet of the current report
	last    int64    // last packet of the flow, for the idle timeout
	flags   [2]uint8 // TCP flags of the current report
	maxLen  uint32   // longest packet of the current report (wire length)
	fin     uint8    // bit d: direction d sent a FIN
	closing bool
	srcIsLo bool // Src is the key's lo endpoint

	seq     uint32 // next report's Seq
	srcPort uint16 // first packet's ports, real ICMP type and code
	dstPort uint16
	closeAt int64 // when the flow entered closing
	id      uint64
	key     flowKey
	iface   string
}

// empty reports whether the current report has no packet yet.
func (e *entry) empty() bool { return e.packets[0] == 0 && e.packets[1] == 0 }

// Table is a single-threaded flow table. Records go in with Add; reports come
// out of Expire and Flush. It never drops a record: a full table evicts its
// least recently seen flow instead.
//
// Reports that Add itself produces (EndEvicted when the table is full,
// EndRestart when a SYN reuses a closing TCP tuple) are held and delivered,
// in order, at the start of the next Expire or Flush.
//
// A Table is not safe for concurrent use.
type Table struct {
	idle, active, linger int64 // Config durations in ns
	maxFlows             int
	ifname               func(uint32) string

	flows   map[flowKey]*entry
	roots   [numLists]entry // list sentinels: root.links[l] links the ends of list l
	free    []*entry        // recycled entries, to keep allocation off the hot path
	pending []Flow          // reports from Add, not yet delivered
	stats   Stats
}

// NewTable returns an empty table. It panics if cfg is not valid (see
// Config.Validate); validate configuration when it is loaded.
func NewTable(cfg Config) *Table {
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	cfg = cfg.withDefaults()
	t := &Table{
		idle:     int64(cfg.IdleTimeout),
		active:   int64(cfg.ActiveTimeout),
		linger:   int64(cfg.TCPLinger),
		maxFlows: cfg.MaxFlows,
		ifname:   cfg.InterfaceName,
		flows:    make(map[flowKey]*entry, min(cfg.MaxFlows, 1024)),
	}
	for l := range t.roots {
		r := &t.roots[l]
		r.links[l] = link{prev: r, next: r}
	}
	return t
}

// Len returns the number of flows in the table.
func (t *Table) Len() int { return len(t.flows) }

// Stats returns the table's counters.
func (t *Table) Stats() Stats {
	s := t.stats
	s.ActiveFlows = uint64(len(t.flows))
	return s
}

// Add counts one record into its flow, creating the flow if needed. r is not
// retained.
func (t *Table) Add(r *bpf.Record) {
	k, fwd := keyOf(r)
	ts := int64(r.Ts)
	t.stats.Packets++
	t.stats.Bytes += uint64(r.WireLen)

	e := t.flows[k]
	if e != nil {
		// Timeouts that passed before this packet apply now, whenever the next
		// Expire comes: the packet then starts a new flow (or report) exactly as
		// if expiry had run at the deadline.
		switch {
		case e.closing && r.Protocol == bpf.ProtoTCP && r.TCPFlags&(bpf.TCPSyn|bpf.TCPAck) == bpf.TCPSyn && ts >= e.closeAt:
			// A new connection on the tuple of a closed one: report the old one
			// now rather than merging two connections into one flow. (A SYN
			// from before the close is this connection's, arriving late.)
			t.pending = append(t.pending, t.finish(e, EndRestart))
			e = nil
		case e.closing && ts-e.closeAt >= t.linger:
			t.pending = append(t.pending, t.finish(e, EndTCPClose))
			e = nil
		case ts-e.last >= t.idle:
			t.pending = append(t.pending, t.finish(e, EndIdle))
			e = nil
		case !e.empty() && ts-e.start >= t.active:
			t.pending = append(t.pending, t.activeReport(e))
		}
	}
	if e == nil {
		e = t.create(&k, fwd, r, ts)
	}

	d := 0
	if fwd != e.srcIsLo {
		d = 1
		if ts < e.start && e.seq == 0 && !e.empty() {
			// The other side sent first: records reach the table out of
			// order when CPUs hand them over in batches (up to a flush
			// interval apart). Src is the sender of the earliest packet.
			e.reverse(r)
			d = 0
		}
	}
	if e.seq == 0 && !e.empty() && ts < e.start {
		e.id = flowID(&e.key, ts) // hash of the first packet's time
	}
	if e.empty() {
		e.start, e.end = ts, ts
		t.pushFront(activeList, e)
	} else {
		e.start = min(e.start, ts)
		e.end = max(e.end, ts)
	}
	e.packets[d]++
	e.bytes[d] += uint64(r.WireLen)
	e.flags[d] |= r.TCPFlags
	e.maxLen = max(e.maxLen, r.WireLen)
	e.last = max(e.last, ts)
	t.moveToFront(idleList, e)

	if r.Protocol == bpf.ProtoTCP && !e.closing {
		if r.TCPFlags&bpf.TCPFin != 0 {
			e.fin |= 1 << d
		}
		if r.TCPFlags&bpf.TCPRst != 0 || e.fin == 3 {
			e.closing = true
			e.closeAt = ts
			t.pushFront(closingList, e)
		}
	}
}

// reverse makes the other endpoint Src, r's sender, keeping the counts
// with the side that sent them.
func (e *entry) reverse(r *bpf.Record) {
	e.srcIsLo = !e.srcIsLo
	e.packets[0], e.packets[1] = e.packets[1], e.packets[0]
	e.bytes[0], e.bytes[1] = e.bytes[1], e.bytes[0]
	e.flags[0], e.flags[1] = e.flags[1], e.flags[0]
	e.fin = e.fin&1<<1 | e.fin>>1
	e.srcPort, e.dstPort = r.SrcPort, r.DstPort
}

// create adds a flow for the record, evicting the least recently seen flow
// if the table is full.
func (t *Table) create(k *flowKey, fwd bool, r *bpf.Record, ts int64) *entry {
	if len(t.flows) >= t.maxFlows {
		t.stats.Evicted++
		t.pending = append(t.pending, t.finish(t.back(idleList), EndEvicted))
	}
	var e *entry
	if n := len(t.free); n > 0 {
		e = t.free[n-1]
		t.free = t.free[:n-1]
	} else {
		e = new(entry)
	}
	e.key = *k
	e.id = flowID(k, ts)
	e.last = ts
	e.srcIsLo = fwd
	e.srcPort, e.dstPort = r.SrcPort, r.DstPort
	if t.ifname != nil {
		e.iface = t.ifname(r.Ifindex)
	}
	t.flows[*k] = e
	t.pushFront(idleList, e)
	t.stats.FlowsCreated++
	return e
}

// Expire emits the reports that are due at now: flows closed by TCP longer
// than the linger time, flows idle for the idle timeout (both Final), and
// periodic reports of flows whose report started an active timeout ago.
// Reports held by Add come first. emit must not call back into the Table.
func (t *Table) Expire(now time.Time, emit func(Flow)) {
	t.drain(emit)
	n := now.UnixNano()
	// Closing before idle before active: a flow due on several counts is
	// reported once, with the most telling reason.
	for e := t.back(closingList); e != nil && n-e.closeAt >= t.linger; e = t.back(closingList) {
		emit(t.finish(e, EndTCPClose))
	}
	for e := t.back(idleList); e != nil && n-e.last >= t.idle; e = t.back(idleList) {
		emit(t.finish(e, EndIdle))
	}
	for e := t.back(activeList); e != nil && n-e.start >= t.active; e = t.back(activeList) {
		emit(t.activeReport(e))
	}
}

// activeReport reports e with Final false and starts its next report: the
// flow's next packet starts it and puts the flow back on the active list.
func (t *Table) activeReport(e *entry) Flow {
	f := t.report(e, false, EndActive)
	e.seq++
	e.packets, e.bytes, e.flags, e.maxLen = [2]uint64{}, [2]uint64{}, [2]uint8{}, 0
	unlink(activeList, e)
	return f
}

// Flush emits every flow as Final with EndShutdown (EndTCPClose for TCP flows
// already closed), least recently seen first, and leaves the table empty. Reports held by Add come first.
func (t *Table) Flush(emit func(Flow)) {
	t.drain(emit)
	for e := t.back(idleList); e != nil; e = t.back(idleList) {
		reason := EndShutdown
		if e.closing {
			reason = EndTCPClose // closed before the input ended
		}
		emit(t.finish(e, reason))
	}
}

// drain delivers the reports Add produced.
func (t *Table) drain(emit func(Flow)) {
	for i := range t.pending {
		emit(t.pending[i])
	}
	clear(t.pending) // drop the Interface strings
	t.pending = t.pending[:0]
}

// finish reports e as Final and removes it from the table.
func (t *Table) finish(e *entry, reason EndReason) Flow {
	f := t.report(e, true, reason)
	delete(t.flows, e.key)
	for l := range numLists {
		unlink(l, e)
	}
	*e = entry{}
	t.free = append(t.free, e)
	return f
}

// report builds the current report of e.
func (t *Table) report(e *entry, final bool, reason EndReason) Flow {
	t.stats.Reports++
	k := &e.key
	src, dst := addr(&k.loAddr, k.ipVersion), addr(&k.hiAddr, k.ipVersion)
	if !e.srcIsLo {
		src, dst = dst, src
	}
	start, end := e.start, e.end
	if e.empty() {
		// A final report right after an active one has no packet of its own;
		// it still closes the flow and says why.
		start, end = e.last, e.last
	}
	return Flow{
		ID:          e.id,
		Seq:         e.seq,
		Start:       time.Unix(0, start).UTC(),
		End:         time.Unix(0, end).UTC(),
		Src:         src,
		Dst:         dst,
		SrcPort:     e.srcPort,
		DstPort:     e.dstPort,
		Protocol:    k.protocol,
		IPVersion:   k.ipVersion,
		VLANID:      k.vlanID,
		InnerVLANID: k.innerVLANID,
		Ifindex:     k.ifindex,
		Interface:   e.iface,
		SrcPackets:  e.packets[0],
		SrcBytes:    e.bytes[0],
		DstPackets:  e.packets[1],
		DstBytes:    e.bytes[1],
		SrcTCPFlags: e.flags[0],
		DstTCPFlags: e.flags[1],
		MaxPacket:   e.maxLen,
		Final:       final,
		EndReason:   reason,
		CommunityID: communityID(k),
	}
}

func addr(a *[16]byte, version uint8) netip.Addr {
	ip := netip.AddrFrom16(*a)
	if version == 4 {
		return ip.Unmap()
	}
	return ip
}

// pushFront puts e, which must not be on list l, at the front of l.
func (t *Table) pushFront(l int, e *entry) {
	root := &t.roots[l]
	next := root.links[l].next
	e.links[l] = link{prev: root, next: next}
	next.links[l].prev = e
	root.links[l].next = e
}

// moveToFront puts e at the front of list l, whether or not it is on l.
func (t *Table) moveToFront(l int, e *entry) {
	root := &t.roots[l]
	if root.links[l].next == e {
		return // bursts of one flow are common; skip the relinking
	}
	unlink(l, e)
	t.pushFront(l, e)
}

// back returns the oldest entry of list l, or nil if l is empty.
func (t *Table) back(l int) *entry {
	root := &t.roots[l]
	if e := root.links[l].prev; e != root {
		return e
	}
	return nil
}

// unlink takes e off list l if it is on it.
func unlink(l int, e *entry) {
	lk := &e.links[l]
	if lk.next == nil {
		return
	}
	lk.prev.links[l].next = lk.next
	lk.next.links[l].prev = lk.prev
	*lk = link{}
}
