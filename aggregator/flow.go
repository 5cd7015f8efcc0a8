package aggregator

import (
	"net/netip"
	"time"
)

// EndReason says why a flow report was emitted.
type EndReason uint8

const (
	EndIdle     EndReason = iota + 1 // no packet for the idle timeout
	EndActive                        // active timeout: the flow goes on, this is a periodic report (Final is false)
	EndTCPClose                      // FIN in both directions or RST, after the linger time
	EndShutdown                      // the sensor stopped or the input ended
	EndEvicted                       // the flow table was full (MaxFlows) and this flow was the least recently seen
	EndRestart                       // a new TCP connection (SYN) reused the tuple of a closed one
)

var endReasonNames = [...]string{"", "idle", "active", "tcp_close", "shutdown", "evicted", "restart"}

// String returns the reason's lower-case name as stored in sinks.
func (r EndReason) String() string {
	if int(r) < len(endReasonNames) && r != 0 {
		return endReasonNames[r]
	}
	return "unknown"
}

// Flow is one report of a bidirectional flow. Src is the endpoint that sent
// the first packet the sensor saw, by timestamp: records can arrive out of
// order, up to the kernel's batch flush interval apart. A long flow is
// reported every active timeout with Final false; each report carries only
// the counts since the previous report of the same flow, so summing a flow's
// reports gives exact totals. A
// Final report can carry no packets (Start = End = the last packet) when the
// flow went quiet right after an active report: it only records the end.
type Flow struct {
	ID          uint64    // stable over all reports of one flow: hash of the key and the first packet's time
	Seq         uint32    // report number within the flow, from 0
	Start       time.Time // first packet of this report
	End         time.Time // last packet of this report
	Src         netip.Addr
	Dst         netip.Addr
	SrcPort     uint16 // ICMP: type of the first packet
	DstPort     uint16 // ICMP: code of the first packet
	Protocol    uint8
	IPVersion   uint8
	VLANID      uint16
	InnerVLANID uint16
	Ifindex     uint32
	Interface   string
	SrcPackets  uint64
	SrcBytes    uint64 // wire length
	DstPackets  uint64
	DstBytes    uint64
	SrcTCPFlags uint8 // OR of the flags Src sent in this report
	DstTCPFlags uint8
	MaxPacket   uint32 // longest packet of this report, wire length
	Final       bool
	EndReason   EndReason
	// CommunityID is the flow's Community ID v1 (seed 0), to join with Zeek,
	// Suricata, Arkime and Elastic data (github.com/corelight/community-id-spec).
	CommunityID string
}

// Packets is the packet count of both directions.
func (f *Flow) Packets() uint64 { return f.SrcPackets + f.DstPackets }

// Bytes is the wire-length byte count of both directions.
func (f *Flow) Bytes() uint64 { return f.SrcBytes + f.DstBytes }
