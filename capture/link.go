package capture

import (
	"encoding/binary"

	"github.com/flowsensor/flowsensor/bpf"
)

// LinkType is a capture file's link-layer header type, as numbered at
// tcpdump.org/linktypes.html.
type LinkType uint16

// The link types flowsensor reads.
const (
	LinkTypeNull     LinkType = 0 // 4-byte address family in the capturing host's byte order (BSD loopback)
	LinkTypeEthernet LinkType = 1
	LinkTypeRaw      LinkType = 101 // raw IPv4 or IPv6
	LinkTypeLinuxSLL LinkType = 113 // Linux "cooked" capture (tcpdump -i any)
	linkTypeLoop     LinkType = 108 // NULL with the address family in network order (OpenBSD)
	linkTypeRaw12    LinkType = 12  // DLT_RAW on most systems
	linkTypeRaw14    LinkType = 14  // DLT_RAW on OpenBSD
	linkTypeIPv4     LinkType = 228
	linkTypeIPv6     LinkType = 229
	linkTypeSLL2     LinkType = 276 // Linux cooked capture v2
	linkTypePPP      LinkType = 9   // PPP, with or without HDLC-like framing (RFC 1661/1662)
	linkTypePPPHDLC  LinkType = 50  // PPP in HDLC-like framing (PPP over SONET)
	linkTypeCHDLC    LinkType = 104 // Cisco HDLC: address, control, ethertype
)

// Supported reports whether packets of a link type can be decoded.
func Supported(lt LinkType) bool {
	switch lt {
	case LinkTypeEthernet, LinkTypeNull, linkTypeLoop, LinkTypeLinuxSLL, linkTypeSLL2,
		LinkTypeRaw, linkTypeRaw12, linkTypeRaw14, linkTypeIPv4, linkTypeIPv6,
		linkTypePPP, linkTypePPPHDLC, linkTypeCHDLC:
		return true
	}
	return false
}

// Decode turns a captured packet into the record the XDP program would emit
// for it, via bpf.Decode (Ethernet) or, for other link types, by removing the
// link header and decoding from its ethertype. It sets Ts and WireLen from the
// capture. The second result is false for a link type flowsensor cannot read.
func Decode(p *Packet, r *bpf.Record) (bpf.Counter, bool) {
	var out bpf.Counter
	if p.LinkType == LinkTypeEthernet {
		out = bpf.Decode(p.Data, r)
	} else {
		etherType, payload, ok, supported := L3(p.LinkType, p.Data)
		if !supported {
			return 0, false
		}
		if !ok {
			*r = bpf.Record{}
			out = bpf.CounterTruncL2
		} else {
			out = bpf.DecodeEtherType(etherType, payload, r)
		}
	}
	r.Ts = uint64(p.Ts)
	r.WireLen = uint32(p.WireLen)
	return out, true
}

// L3 removes the link header of a non-Ethernet frame and says which ethertype
// its payload is (0 for a payload that is not IP, VLAN, PPPoE or MPLS). ok is
// false when the link header itself is cut short; supported is false for a
// link type it does not know.
func L3(lt LinkType, data []byte) (etherType uint16, payload []byte, ok, supported bool) {
	switch lt {
	case LinkTypeNull, linkTypeLoop:
		// 4-byte address family, in the capturing host's byte order for NULL.
		if len(data) < 4 {
			return 0, nil, false, true
		}
		af := binary.BigEndian.Uint32(data)
		if lt == LinkTypeNull && af > 0xffff {
			af = binary.LittleEndian.Uint32(data)
		}
		switch af {
		case 2: // AF_INET everywhere
			return bpf.EtherTypeIPv4, data[4:], true, true
		case 10, 24, 28, 30: // AF_INET6: Linux, OpenBSD/NetBSD, FreeBSD, Darwin
			return bpf.EtherTypeIPv6, data[4:], true, true
		}
		return 0, data[4:], true, true
	case LinkTypeLinuxSLL:
		// packet type, ARPHRD type, address length, 8-byte address, protocol.
		if len(data) < 16 {
			return 0, nil, false, true
		}
		return sllProtocol(binary.BigEndian.Uint16(data[14:])), data[16:], true, true
	case linkTypeSLL2:
		// protocol, reserved, interface index, ARPHRD type, packet type, address length, 8-byte address.
		if len(data) < 20 {
			return 0, nil, false, true
		}
		return sllProtocol(binary.BigEndian.Uint16(data[0:])), data[20:], true, true
	case linkTypePPP, linkTypePPPHDLC:
		if len(data) >= 2 && data[0] == 0xff && data[1] == 0x03 {
			data = data[2:] // HDLC-like framing: address and control
		}
		if len(data) >= 1 && data[0]&1 == 1 {
			// A compressed (one-byte) protocol field: only protocols below 0x100.
			return pppProtocol(uint16(data[0])), data[1:], true, true
		}
		if len(data) < 2 {
			return 0, nil, false, true
		}
		return pppProtocol(binary.BigEndian.Uint16(data)), data[2:], true, true
	case linkTypeCHDLC:
		if len(data) < 4 {
			return 0, nil, false, true
		}
		return binary.BigEndian.Uint16(data[2:]), data[4:], true, true
	case LinkTypeRaw, linkTypeRaw12, linkTypeRaw14, linkTypeIPv4, linkTypeIPv6:
		if len(data) < 1 {
			return 0, nil, false, true
		}
		switch data[0] >> 4 {
		case 4:
			return bpf.EtherTypeIPv4, data, true, true
		case 6:
			return bpf.EtherTypeIPv6, data, true, true
		}
		// The version nibble decides, as for the kernel's raw IP devices; a
		// bad one is left to the IP parser to reject.
		if lt == linkTypeIPv6 {
			return bpf.EtherTypeIPv6, data, true, true
		}
		return bpf.EtherTypeIPv4, data, true, true
	}
	return 0, nil, false, false
}

// sllProtocol maps the SLL protocol field to an ethertype: values below
// 0x0600 are Linux pseudo-protocols (802.2 LLC, CAN, ...), never IP.
func sllProtocol(p uint16) uint16 {
	if p < 0x0600 {
		return 0
	}
	return p
}

// pppProtocol maps a PPP protocol number to the ethertype of its payload.
func pppProtocol(p uint16) uint16 {
	switch p {
	case 0x0021:
		return bpf.EtherTypeIPv4
	case 0x0057:
		return bpf.EtherTypeIPv6
	case 0x0281, 0x0283: // MPLS unicast, multicast
		return 0x8847 + p - 0x0281
	}
	return 0 // LCP, IPCP, CHAP, ...: not IP
}

// EthernetFrame wraps a non-Ethernet packet's payload in an Ethernet header
// with zero addresses, so that the XDP program can parse it in a test.
func EthernetFrame(etherType uint16, payload []byte) []byte {
	f := make([]byte, 14+len(payload))
	binary.BigEndian.PutUint16(f[12:], etherType)
	copy(f[14:], payload)
	return f
}
