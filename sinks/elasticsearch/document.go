package elasticsearch

import (
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/flowsensor/flowsensor/aggregator"
)

// ecsVersion is the ECS release whose field definitions the documents follow.
const ecsVersion = "8.11.0"

// A flow report becomes one document, written by hand with strconv appends:
// no allocation, and 3x faster than encoding/json on a struct holding part
// of it (BenchmarkEncode).
// Every field it can contain is in mappings.json, checked by
// TestTemplateCoversDocuments. Fields, ECS unless under flowsensor.*:
//
//	@timestamp                         first packet of this report (= event.start), date_nanos
//	ecs.version
//	event.kind/category/type/dataset   "event", ["network"], ["connection"], "flowsensor.flow"
//	event.start, event.end             first and last packet of this report, date_nanos
//	event.duration                     end - start, nanoseconds
//	event.reason                       why the report was written: idle, active, tcp_close, shutdown, evicted, restart
//	flow.id                            16 hex digits, the same for every report of a flow (as Packetbeat's flow.id)
//	flow.final                         false for periodic reports of a flow that goes on
//	source.ip/port/packets/bytes       the endpoint that sent the first packet; ports for TCP, UDP and SCTP only
//	destination.ip/port/packets/bytes
//	network.type                       ipv4, ipv6
//	network.transport                  IANA keyword (tcp, udp, icmp, ipv6-icmp, sctp, gre, ...), else the number
//	network.iana_number                protocol number, as a string (ECS keyword)
//	network.packets, network.bytes     both directions
//	network.community_id               Community ID v1, when known
//	network.vlan.id                    outer 802.1Q/802.1ad tag, when tagged (ECS keyword)
//	network.inner.vlan.id              second tag (QinQ), when present
//	observer.hostname                  the sensor
//	observer.ingress.interface.name/id interface the packets arrived on, and its ifindex
//	related.ip                         both addresses, for "any flow involving X" searches
//	flowsensor.seq                     report number within the flow, from 0
//	flowsensor.source.tcp_flags        names of the TCP flags source sent: fin syn rst psh ack urg ece cwr
//	flowsensor.source.tcp_flags_value  the same flags as the byte from the TCP header (FIN=1 SYN=2 ...)
//	flowsensor.destination.tcp_flags(_value)
//	flowsensor.icmp.type, .code        ICMP/ICMPv6 type and code of the first packet
//
// Fields with nothing to say (no VLAN, no Community ID, no TCP flags) are
// left out rather than written empty.

// docID is the document _id: the flow ID and the report number. A retried
// or replayed report has the same _id, so Elasticsearch keeps one copy.
func docID(f *aggregator.Flow) string {
	b := make([]byte, 0, 28)
	b = appendHex16(b, f.ID)
	b = append(b, '-')
	b = strconv.AppendUint(b, uint64(f.Seq), 10)
	return string(b)
}

// indexDay is the UTC day of the flow's start, as in the index name.
func indexDay(t time.Time) string { return t.UTC().Format("2006.01.02") }

var tcpFlagNames = [8]string{"fin", "syn", "rst", "psh", "ack", "urg", "ece", "cwr"}

// transports are the IANA keywords (lower case, as ECS uses them) of the
// protocols a capture commonly holds.
var transports = [256]string{
	1: "icmp", 2: "igmp", 4: "ipv4", 6: "tcp", 17: "udp", 41: "ipv6", 47: "gre",
	50: "esp", 51: "ah", 58: "ipv6-icmp", 89: "ospf", 103: "pim", 112: "vrrp", 132: "sctp",
}

const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
	protoSCTP   = 132
)

// appendDocument appends the JSON document of f to b.
func appendDocument(b []byte, f *aggregator.Flow, observer string) []byte {
	b = append(b, `{"@timestamp":`...)
	ts := len(b)
	b = appendTime(b, f.Start)
	start := b[ts:] // the old array keeps these bytes if b grows
	b = append(b, `,"ecs":{"version":"`+ecsVersion+`"}`...)

	b = append(b, `,"event":{"kind":"event","category":["network"],"type":["connection"],"dataset":"flowsensor.flow","start":`...)
	b = append(b, start...)
	b = append(b, `,"end":`...)
	b = appendTime(b, f.End)
	b = append(b, `,"duration":`...)
	b = strconv.AppendInt(b, int64(f.End.Sub(f.Start)), 10)
	b = append(b, `,"reason":`...)
	b = appendString(b, f.EndReason.String())

	b = append(b, `},"flow":{"id":"`...)
	b = appendHex16(b, f.ID)
	b = append(b, `","final":`...)
	b = strconv.AppendBool(b, f.Final)

	ports := f.Protocol == protoTCP || f.Protocol == protoUDP || f.Protocol == protoSCTP
	b = append(b, `},"source":{`...)
	b = appendEndpoint(b, f.Src, f.SrcPort, ports, f.SrcPackets, f.SrcBytes)
	b = append(b, `},"destination":{`...)
	b = appendEndpoint(b, f.Dst, f.DstPort, ports, f.DstPackets, f.DstBytes)

	b = append(b, `},"network":{`...)
	switch f.IPVersion {
	case 4:
		b = append(b, `"type":"ipv4",`...)
	case 6:
		b = append(b, `"type":"ipv6",`...)
	}
	b = append(b, `"transport":"`...)
	if name := transports[f.Protocol]; name != "" {
		b = append(b, name...)
	} else {
		b = strconv.AppendUint(b, uint64(f.Protocol), 10)
	}
	b = append(b, `","iana_number":"`...)
	b = strconv.AppendUint(b, uint64(f.Protocol), 10)
	b = append(b, `","packets":`...)
	b = strconv.AppendUint(b, f.Packets(), 10)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendUint(b, f.Bytes(), 10)
	if f.CommunityID != "" {
		b = append(b, `,"community_id":`...)
		b = appendString(b, f.CommunityID)
	}
	if f.VLANID != 0 {
		b = append(b, `,"vlan":{"id":"`...)
		b = strconv.AppendUint(b, uint64(f.VLANID), 10)
		b = append(b, `"}`...)
	}
	if f.InnerVLANID != 0 {
		b = append(b, `,"inner":{"vlan":{"id":"`...)
		b = strconv.AppendUint(b, uint64(f.InnerVLANID), 10)
		b = append(b, `"}}`...)
	}

	b = append(b, `},"observer":{"hostname":`...)
	b = appendString(b, observer)
	if f.Interface != "" || f.Ifindex != 0 {
		b = append(b, `,"ingress":{"interface":{`...)
		if f.Interface != "" {
			b = append(b, `"name":`...)
			b = appendString(b, f.Interface)
			if f.Ifindex != 0 {
				b = append(b, ',')
			}
		}
		if f.Ifindex != 0 {
			b = append(b, `"id":"`...)
			b = strconv.AppendUint(b, uint64(f.Ifindex), 10)
			b = append(b, '"')
		}
		b = append(b, `}}`...)
	}
	b = append(b, '}')

	src, dst := f.Src.Unmap(), f.Dst.Unmap()
	if src.IsValid() || dst.IsValid() {
		b = append(b, `,"related":{"ip":[`...)
		if src.IsValid() {
			b = appendAddr(b, src)
		}
		if dst.IsValid() && dst != src {
			if src.IsValid() {
				b = append(b, ',')
			}
			b = appendAddr(b, dst)
		}
		b = append(b, `]}`...)
	}

	b = append(b, `,"flowsensor":{"seq":`...)
	b = strconv.AppendUint(b, uint64(f.Seq), 10)
	if f.Protocol == protoTCP {
		if f.SrcTCPFlags != 0 {
			b = append(b, `,"source":`...)
			b = appendFlags(b, f.SrcTCPFlags)
		}
		if f.DstTCPFlags != 0 {
			b = append(b, `,"destination":`...)
			b = appendFlags(b, f.DstTCPFlags)
		}
	}
	if f.Protocol == protoICMP || f.Protocol == protoICMPv6 {
		b = append(b, `,"icmp":{"type":`...)
		b = strconv.AppendUint(b, uint64(f.SrcPort), 10)
		b = append(b, `,"code":`...)
		b = strconv.AppendUint(b, uint64(f.DstPort), 10)
		b = append(b, '}')
	}
	return append(b, `}}`...)
}

func appendEndpoint(b []byte, ip netip.Addr, port uint16, withPort bool, packets, bytes uint64) []byte {
	if ip = ip.Unmap(); ip.IsValid() {
		b = append(b, `"ip":`...)
		b = appendAddr(b, ip)
		b = append(b, ',')
	}
	if withPort {
		b = append(b, `"port":`...)
		b = strconv.AppendUint(b, uint64(port), 10)
		b = append(b, ',')
	}
	b = append(b, `"packets":`...)
	b = strconv.AppendUint(b, packets, 10)
	b = append(b, `,"bytes":`...)
	return strconv.AppendUint(b, bytes, 10)
}

func appendFlags(b []byte, flags uint8) []byte {
	b = append(b, `{"tcp_flags":[`...)
	first := true
	for i, name := range tcpFlagNames {
		if flags&(1<<i) == 0 {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, '"')
		b = append(b, name...)
		b = append(b, '"')
	}
	b = append(b, `],"tcp_flags_value":`...)
	b = strconv.AppendUint(b, uint64(flags), 10)
	return append(b, '}')
}

// appendAddr writes IPv4 dotted (the kernel record carries IPv4 mapped into
// IPv6) and IPv6 without zone.
func appendAddr(b []byte, a netip.Addr) []byte {
	b = append(b, '"')
	b = a.WithZone("").AppendTo(b)
	return append(b, '"')
}

// appendTime writes RFC 3339 in UTC with all nine digits of nanoseconds,
// which date_nanos keeps.
func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, "2006-01-02T15:04:05.000000000Z")
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"

func appendHex16(b []byte, v uint64) []byte {
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, hexDigits[v>>uint(shift)&0xf])
	}
	return b
}

// appendString writes s as a JSON string. Interface and host names are
// plain ASCII in practice; anything else is escaped, and invalid UTF-8
// becomes U+FFFD, so the document is always valid JSON.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
