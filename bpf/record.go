// Package bpf owns the packet contract between the XDP program (flowsensor.c,
// record.h) and user space: the Go mirror of the per-packet record and of the
// kernel counters. It imports the standard library only, so the aggregator and
// the offline decoder can use it without pulling in cilium/ebpf.
package bpf

import (
	"fmt"
	"net/netip"
	"structs"
	"unsafe"
)

// RecordSize is sizeof(struct fs_record) in record.h.
const RecordSize = 72

// Record mirrors struct fs_record field by field (record.h). Memory layout is
// the contract: record_test.go pins it with golden bytes and the loader tests
// compare it with the BTF of the compiled program.
type Record struct {
	_           structs.HostLayout
	Ts          uint64   // bpf_ktime_get_ns() (CLOCK_MONOTONIC) when the program ran
	SrcAddr     [16]byte // IPv6, or IPv4-mapped IPv6
	DstAddr     [16]byte //
	Ifindex     uint32   // receiving interface
	WireLen     uint32   // frame length from the Ethernet header on, without FCS
	FragID      uint32   // IPv4 identification or IPv6 fragment identification (fragments only)
	SrcPort     uint16   // host order; ICMP/ICMPv6: type
	DstPort     uint16   // host order; ICMP/ICMPv6: code
	VLANID      uint16   // outermost tag's VID, 0 when untagged
	InnerVLANID uint16   // second tag's VID (QinQ)
	Protocol    uint8    // IP protocol after IPv6 extension headers
	IPVersion   uint8    // 4 or 6
	TCPFlags    uint8    // FIN..CWR
	DSCP        uint8    //
	FragFlags   uint8    // Frag* bits
	Encap       uint8    // Encap* bits
	VLANDepth   uint8    // VLAN tags walked
	Flags       uint8    // Rec* bits
	_           [4]byte  // padding, always zero
}

var _ [RecordSize - unsafe.Sizeof(Record{})]struct{} // Record is not larger than the C struct
var _ [unsafe.Sizeof(Record{}) - RecordSize]struct{} // nor smaller

// FragFlags bits.
const (
	FragFragment = 0x01 // the packet is an IP fragment
	FragMore     = 0x02 // more fragments follow
	FragNotFirst = 0x04 // offset != 0: no L4 header, ports are 0
)

// Encap bits.
const (
	EncapPPPoE = 0x01
	EncapMPLS  = 0x02
)

// Flags bits.
const (
	RecL4Truncated = 0x01 // L4 header (or IPv4 options / an IPv6 extension header) cut short
	RecExtLimit    = 0x02 // more IPv6 extension headers than the parser walks
	// RecFragPorts is set in user space, never by the kernel: the ports of this
	// later fragment were copied from its datagram's first fragment.
	RecFragPorts = 0x80
)

// TCP flag bits as they appear in TCPFlags.
const (
	TCPFin = 0x01
	TCPSyn = 0x02
	TCPRst = 0x04
	TCPPsh = 0x08
	TCPAck = 0x10
	TCPUrg = 0x20
	TCPEce = 0x40
	TCPCwr = 0x80
)

// Parser limits (FS_MAX_* in record.h).
const (
	MaxVLAN    = 4 // VLAN tags walked
	MaxMPLS    = 8 // MPLS labels walked
	MaxIPv6Ext = 8 // IPv6 extension headers walked
)

// IP protocol numbers the flow code cares about.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
	ProtoSCTP   = 132
)

// DecodeRecord copies one ring-buffer sample into r without allocating. The
// sample is in the host's byte order, as the kernel wrote it.
func DecodeRecord(sample []byte, r *Record) error {
	if len(sample) < RecordSize {
		return fmt.Errorf("record: %d bytes, want %d", len(sample), RecordSize)
	}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(r)), RecordSize), sample)
	return nil
}

// Bytes returns the record's memory as the kernel would write it.
func (r *Record) Bytes() []byte {
	b := make([]byte, RecordSize)
	copy(b, unsafe.Slice((*byte)(unsafe.Pointer(r)), RecordSize))
	return b
}

// Src returns the source address, unmapped for IPv4.
func (r *Record) Src() netip.Addr { return addr(r.SrcAddr, r.IPVersion) }

// Dst returns the destination address, unmapped for IPv4.
func (r *Record) Dst() netip.Addr { return addr(r.DstAddr, r.IPVersion) }

func addr(a [16]byte, version uint8) netip.Addr {
	ip := netip.AddrFrom16(a)
	if version == 4 {
		return ip.Unmap()
	}
	return ip
}

// SetAddrs stores src and dst the way the kernel does (IPv4 mapped) and sets IPVersion.
func (r *Record) SetAddrs(src, dst netip.Addr) {
	r.SrcAddr, r.DstAddr = src.As16(), dst.As16()
	r.IPVersion = 6
	if src.Is4() || src.Is4In6() {
		r.IPVersion = 4
	}
}

// Counter indexes the kernel's per-CPU counter array (enum fs_counter).
type Counter uint32

// Counters, in enum order. Every packet lands in exactly one of the outcome
// counters (CounterEmitted .. CounterTooDeep) and CounterSeen is their sum. A
// record waiting in a partial batch in the kernel (at most the flush
// interval) is in none of them yet.
const (
	CounterSeen Counter = iota
	CounterEmitted
	CounterRingbufFull
	CounterNonIP
	CounterTruncL2
	CounterTruncL3
	CounterBadL3
	CounterTooDeep
	CounterTruncL4
	CounterFragments
	CounterExtLimit
	NumCounters
)

var counterNames = [NumCounters]string{
	CounterSeen:        "seen",
	CounterEmitted:     "emitted",
	CounterRingbufFull: "ringbuf_full",
	CounterNonIP:       "non_ip",
	CounterTruncL2:     "truncated_l2",
	CounterTruncL3:     "truncated_l3",
	CounterBadL3:       "bad_l3",
	CounterTooDeep:     "too_deep",
	CounterTruncL4:     "truncated_l4",
	CounterFragments:   "fragments",
	CounterExtLimit:    "ipv6_ext_limit",
}

// String returns the counter's metric label.
func (c Counter) String() string {
	if c < NumCounters {
		return counterNames[c]
	}
	return fmt.Sprintf("counter(%d)", uint32(c))
}

// Counters holds one value per Counter, summed over CPUs.
type Counters [NumCounters]uint64

// Add adds o into c.
func (c *Counters) Add(o *Counters) {
	for i := range c {
		c[i] += o[i]
	}
}

// Unrecorded is the number of packets that did not become a record, for any
// reason: lost to a full ring buffer, not IP, or too malformed to parse.
func (c *Counters) Unrecorded() uint64 {
	return c[CounterRingbufFull] + c[CounterNonIP] + c[CounterTruncL2] + c[CounterTruncL3] +
		c[CounterBadL3] + c[CounterTooDeep]
}
