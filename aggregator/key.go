package aggregator

import (
	"encoding/binary"

	"github.com/flowsensor/flowsensor/bpf"
)

// flowKey identifies a bidirectional flow. The endpoints are in canonical
// order (see keyOf), so both directions of a conversation give the same key.
// Go hashes and compares struct map keys field by field, never padding bytes,
// so the layout needs no explicit zeroing.
type flowKey struct {
	loAddr      [16]byte // canonical first endpoint (IPv4-mapped for IPv4)
	hiAddr      [16]byte
	ifindex     uint32
	vlanID      uint16
	innerVLANID uint16
	loPort      uint16 // ICMP: port equivalents of Community ID v1
	hiPort      uint16
	protocol    uint8
	ipVersion   uint8 // keeps IPv6 packets with v4-mapped addresses apart from IPv4
}

// keyOf returns the record's flow key and whether the record was sent by the
// key's first (lo) endpoint.
//
// The ordering follows Community ID v1 (github.com/corelight/community-id-spec):
// the endpoint whose address, then port, compares lower comes first. Comparing
// IPv4-mapped addresses orders IPv4 exactly as comparing 4-byte ones does.
// ICMP and ICMPv6 use the spec's port equivalents (icmpPorts); a message type
// without a counterpart is one-way and is never flipped, so it keys as sent.
// Non-first fragments carry no ICMP header, so their zero "type" is not mapped
// unless the Writer gave them their first fragment's type and code.
func keyOf(r *bpf.Record) (k flowKey, fwd bool) {
	sp, dp := r.SrcPort, r.DstPort
	twoWay := true
	if (r.Protocol == bpf.ProtoICMP || r.Protocol == bpf.ProtoICMPv6) && (r.FragFlags&bpf.FragNotFirst == 0 || r.Flags&bpf.RecFragPorts != 0) {
		sp, dp, twoWay = icmpPorts(r.Protocol, sp, dp)
	}
	k.ifindex = r.Ifindex
	k.vlanID = r.VLANID
	k.innerVLANID = r.InnerVLANID
	k.protocol = r.Protocol
	k.ipVersion = r.IPVersion
	if !twoWay || endpointLess(&r.SrcAddr, sp, &r.DstAddr, dp) {
		k.loAddr, k.loPort, k.hiAddr, k.hiPort = r.SrcAddr, sp, r.DstAddr, dp
		return k, true
	}
	k.loAddr, k.loPort, k.hiAddr, k.hiPort = r.DstAddr, dp, r.SrcAddr, sp
	return k, false
}

// endpointLess orders (address, port) endpoints: addresses bytewise, then ports.
func endpointLess(a *[16]byte, ap uint16, b *[16]byte, bp uint16) bool {
	a0, b0 := binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(b[:8])
	if a0 != b0 {
		return a0 < b0
	}
	a1, b1 := binary.BigEndian.Uint64(a[8:]), binary.BigEndian.Uint64(b[8:])
	if a1 != b1 {
		return a1 < b1
	}
	return ap < bp
}

// icmpPorts maps an ICMP (proto 1) or ICMPv6 (58) type and code to Community
// ID v1 port equivalents. A type with a request/reply counterpart becomes
// (type, counterpart) and is two-way, so a request and its reply flip into the
// same key; any other type is (type, code), one-way. The pairs are Zeek's
// ICMP4_counterpart and ICMP6_counterpart, as in pycommunityid's icmp.py and
// icmp6.py.
func icmpPorts(proto uint8, typ, code uint16) (sport, dport uint16, twoWay bool) {
	if c, ok := icmpCounterpart(proto, typ); ok {
		return typ, c, true
	}
	return typ, code, false
}

func icmpCounterpart(proto uint8, typ uint16) (uint16, bool) {
	if proto == bpf.ProtoICMP {
		switch typ {
		case 8: // echo
			return 0, true
		case 0: // echo reply
			return 8, true
		case 13: // timestamp
			return 14, true
		case 14: // timestamp reply
			return 13, true
		case 15: // information request
			return 16, true
		case 16: // information reply
			return 15, true
		case 10: // router solicitation
			return 9, true
		case 9: // router advertisement
			return 10, true
		case 17: // address mask request
			return 18, true
		case 18: // address mask reply
			return 17, true
		}
		return 0, false
	}
	switch typ {
	case 128: // echo request
		return 129, true
	case 129: // echo reply
		return 128, true
	case 130: // MLD listener query
		return 131, true
	case 131: // MLD listener report
		return 130, true
	case 133: // router solicitation
		return 134, true
	case 134: // router advertisement
		return 133, true
	case 135: // neighbor solicitation
		return 136, true
	case 136: // neighbor advertisement
		return 135, true
	case 139: // who-are-you request
		return 140, true
	case 140: // who-are-you reply
		return 139, true
	case 144: // home agent address discovery request
		return 145, true
	case 145: // home agent address discovery reply
		return 144, true
	}
	return 0, false
}

// shard picks one of n shards. It only has to spread keys evenly within one
// process, so it is a cheap multiply-xorshift mix rather than a seeded hash.
func (k *flowKey) shard(n int) int {
	const m = 0x9e3779b97f4a7c15
	h := uint64(k.ifindex)<<32 | uint64(k.vlanID)<<16 | uint64(k.innerVLANID)
	for _, w := range [...]uint64{
		uint64(k.loPort)<<48 | uint64(k.hiPort)<<32 | uint64(k.protocol)<<8 | uint64(k.ipVersion),
		binary.LittleEndian.Uint64(k.loAddr[:8]),
		binary.LittleEndian.Uint64(k.loAddr[8:]),
		binary.LittleEndian.Uint64(k.hiAddr[:8]),
		binary.LittleEndian.Uint64(k.hiAddr[8:]),
	} {
		h = (h ^ w) * m
		h ^= h >> 32
	}
	// Multiply-shift range reduction: uniform over [0, n) without a division.
	return int((h >> 32) * uint64(n) >> 32)
}

// flowID is a flow's stable ID: FNV-1a 64 over the canonical key and the
// flow's first packet time. The input is serialised field by field in a fixed
// big-endian layout, not copied from memory, so the ID is the same on every
// architecture, process and Go version: sinks use it as a document ID, so a
// retry or a replay of the same capture never duplicates a flow.
func flowID(k *flowKey, firstTs int64) uint64 {
	var b [56]byte
	copy(b[0:16], k.loAddr[:])
	copy(b[16:32], k.hiAddr[:])
	binary.BigEndian.PutUint32(b[32:], k.ifindex)
	binary.BigEndian.PutUint16(b[36:], k.vlanID)
	binary.BigEndian.PutUint16(b[38:], k.innerVLANID)
	binary.BigEndian.PutUint16(b[40:], k.loPort)
	binary.BigEndian.PutUint16(b[42:], k.hiPort)
	b[44] = k.protocol
	b[45] = k.ipVersion
	// b[46:48] stay zero.
	binary.BigEndian.PutUint64(b[48:], uint64(firstTs))

	const (
		offset64 = 14695981039346656037
		prime64  = 1099511628211
	)
	h := uint64(offset64)
	for _, c := range b {
		h ^= uint64(c)
		h *= prime64
	}
	return h
}
