package parquet

import (
	"net/netip"
	"time"

	"github.com/flowsensor/flowsensor/aggregator"
)

// Row is one flow report as stored: one column per field, in this order.
//
// Integers are signed INT32/INT64 without unsigned annotations, because
// Spark, Trino/Athena, DuckDB and pandas all read those the same way. Every
// value fits losslessly except two, noted on the fields. Timestamps are
// TIMESTAMP(NANOS, isAdjustedToUTC=true): DuckDB reads them as TIMESTAMPTZ_NS.
// Add columns at the end, so that queries by position keep working.
type Row struct {
	// FlowID holds the bits of the uint64 flow ID, so IDs above 2^63 read as
	// negative numbers; equality and joins between files are unaffected.
	FlowID int64 `parquet:"flow_id"`
	// Seq wraps only after 2^31 reports of one flow, decades of active
	// timeouts.
	Seq         int32     `parquet:"seq"`
	StartTime   time.Time `parquet:"start_time,timestamp(nanosecond:utc)"`
	EndTime     time.Time `parquet:"end_time,timestamp(nanosecond:utc)"`
	SrcIP       string    `parquet:"src_ip"` // "192.0.2.1", "2001:db8::1"
	DstIP       string    `parquet:"dst_ip"`
	SrcPort     int32     `parquet:"src_port"` // ICMP: type
	DstPort     int32     `parquet:"dst_port"` // ICMP: code
	Protocol    int32     `parquet:"protocol"` // IANA protocol number
	IPVersion   int32     `parquet:"ip_version"`
	VLANID      int32     `parquet:"vlan_id"` // 0: untagged
	InnerVLANID int32     `parquet:"inner_vlan_id"`
	Interface   string    `parquet:"interface,dict"`
	SrcPackets  int64     `parquet:"src_packets"`
	SrcBytes    int64     `parquet:"src_bytes"`
	DstPackets  int64     `parquet:"dst_packets"`
	DstBytes    int64     `parquet:"dst_bytes"`
	Packets     int64     `parquet:"packets"`
	Bytes       int64     `parquet:"bytes"`
	SrcTCPFlags int32     `parquet:"src_tcp_flags"`
	DstTCPFlags int32     `parquet:"dst_tcp_flags"`
	MaxPacket   int32     `parquet:"max_packet_bytes"` // longest packet of the report
	Final       bool      `parquet:"final"`
	EndReason   string    `parquet:"end_reason,dict"` // aggregator.EndReason.String()
	CommunityID string    `parquet:"community_id"`    // Community ID v1, seed 0
}

// RowFromFlow converts one flow report to its stored form.
func RowFromFlow(f *aggregator.Flow) Row {
	return Row{
		FlowID:      int64(f.ID),
		Seq:         int32(f.Seq),
		StartTime:   f.Start,
		EndTime:     f.End,
		SrcIP:       addrString(f.Src),
		DstIP:       addrString(f.Dst),
		SrcPort:     int32(f.SrcPort),
		DstPort:     int32(f.DstPort),
		Protocol:    int32(f.Protocol),
		IPVersion:   int32(f.IPVersion),
		VLANID:      int32(f.VLANID),
		InnerVLANID: int32(f.InnerVLANID),
		Interface:   f.Interface,
		SrcPackets:  int64(f.SrcPackets),
		SrcBytes:    int64(f.SrcBytes),
		DstPackets:  int64(f.DstPackets),
		DstBytes:    int64(f.DstBytes),
		Packets:     int64(f.Packets()),
		Bytes:       int64(f.Bytes()),
		SrcTCPFlags: int32(f.SrcTCPFlags),
		DstTCPFlags: int32(f.DstTCPFlags),
		MaxPacket:   int32(f.MaxPacket),
		Final:       f.Final,
		EndReason:   f.EndReason.String(),
		CommunityID: f.CommunityID,
	}
}

// addrString writes IPv4 dotted even when it arrives IPv4-mapped (the kernel
// record carries every address in 16 bytes), and an absent address as "".
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.Unmap().String()
}
