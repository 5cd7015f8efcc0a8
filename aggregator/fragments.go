package aggregator

import (
	"time"

	"github.com/flowsensor/flowsensor/bpf"
)

// Fragment tracking. Only the first fragment of an IP datagram carries the
// L4 header; later fragments come with ports 0. A Writer remembers the ports
// of each first fragment by (interface, VLANs, addresses, protocol, fragment
// ID) and gives them to the later fragments of the same datagram, so every
// fragment counts in its datagram's flow. A later fragment seen before its
// first one (some senders emit them in reverse) cannot know its ports: it
// counts in the flow of its addresses and protocol with ports 0.
//
// Entries live fragTTL (the reassembly timeout of RFC 791/8200 is 60 s at
// most; fragments of one datagram arrive within milliseconds in practice) and
// at most maxFragments are held, oldest evicted first.
const (
	fragTTL      = 30 * time.Second
	maxFragments = 1 << 16
)

type fragKey struct {
	src, dst    [16]byte
	id          uint32
	ifindex     uint32
	vlanID      uint16
	innerVLANID uint16
	protocol    uint8
	ipVersion   uint8
}

type fragPorts struct {
	sport, dport uint16
	ts           int64
}

type fragQueued struct {
	key fragKey
	ts  int64
}

type fragTracker struct {
	ports map[fragKey]fragPorts
	fifo  []fragQueued // insertion order, for expiry; head at fifo[head]
	head  int
}

func fragKeyOf(r *bpf.Record) fragKey {
	return fragKey{src: r.SrcAddr, dst: r.DstAddr, id: r.FragID, ifindex: r.Ifindex,
		vlanID: r.VLANID, innerVLANID: r.InnerVLANID, protocol: r.Protocol, ipVersion: r.IPVersion}
}

// resolve records a first fragment's ports, or fills a later fragment's.
func (f *fragTracker) resolve(r *bpf.Record) {
	if r.FragFlags&bpf.FragFragment == 0 {
		return
	}
	ts := int64(r.Ts)
	k := fragKeyOf(r)
	if r.FragFlags&bpf.FragNotFirst == 0 {
		if f.ports == nil {
			f.ports = make(map[fragKey]fragPorts)
		}
		f.expire(ts)
		if len(f.ports) >= maxFragments {
			f.evictOldest()
		}
		f.ports[k] = fragPorts{sport: r.SrcPort, dport: r.DstPort, ts: ts}
		f.fifo = append(f.fifo, fragQueued{key: k, ts: ts})
		return
	}
	if p, ok := f.ports[k]; ok && ts-p.ts < int64(fragTTL) {
		r.SrcPort, r.DstPort = p.sport, p.dport
		r.Flags |= bpf.RecFragPorts
	}
}

// expire forgets first fragments older than fragTTL.
func (f *fragTracker) expire(now int64) {
	for f.head < len(f.fifo) && now-f.fifo[f.head].ts >= int64(fragTTL) {
		f.dropHead()
	}
	f.compact()
}

func (f *fragTracker) evictOldest() {
	for f.head < len(f.fifo) {
		n := len(f.ports)
		f.dropHead()
		if len(f.ports) < n {
			break
		}
	}
	f.compact()
}

// dropHead removes the oldest queued entry, and its map entry unless the key
// was stored again later (then the map holds the newer one).
func (f *fragTracker) dropHead() {
	q := f.fifo[f.head]
	if p, ok := f.ports[q.key]; ok && p.ts == q.ts {
		delete(f.ports, q.key)
	}
	f.fifo[f.head] = fragQueued{}
	f.head++
}

// compact reclaims the consumed front of the queue once it is half of it.
func (f *fragTracker) compact() {
	if f.head > 0 && f.head*2 >= len(f.fifo) {
		n := copy(f.fifo, f.fifo[f.head:])
		f.fifo = f.fifo[:n]
		f.head = 0
	}
}
