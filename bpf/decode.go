package bpf

import "encoding/binary"

// Ethertypes the parser follows.
const (
	EtherTypeIPv4   = 0x0800
	EtherTypeIPv6   = 0x86DD
	etherTypeVLAN   = 0x8100
	etherTypeQinQ   = 0x88A8
	etherType9100   = 0x9100
	etherTypePPPoE  = 0x8864
	etherTypeMPLSUC = 0x8847
	etherTypeMPLSMC = 0x8848
)

// Decode parses one Ethernet frame exactly as the XDP program does and fills
// r, except Ts and Ifindex; WireLen is len(frame). It returns the counter the
// program increments for the frame: CounterEmitted when r holds a record,
// otherwise the reason there is none. flowsensor.c and Decode are twins: the
// differential test in loader runs every corpus frame through both.
func Decode(frame []byte, r *Record) Counter {
	*r = Record{WireLen: uint32(len(frame))}
	if len(frame) < 14 {
		return CounterTruncL2
	}
	return parse(frame, 14, binary.BigEndian.Uint16(frame[12:]), r)
}

// DecodeEtherType parses a frame whose link header has already been removed,
// starting at a payload of the given ethertype (VLAN tags, PPPoE, MPLS and IP
// are all followed as after an Ethernet header). It is how captures of other
// link types (Linux SLL, NULL/loopback, raw IP) are read. WireLen is
// len(payload); callers set it to what the capture says.
func DecodeEtherType(etherType uint16, payload []byte, r *Record) Counter {
	*r = Record{WireLen: uint32(len(payload))}
	return parse(payload, 0, etherType, r)
}

func isVLAN(t uint16) bool { return t == etherTypeVLAN || t == etherTypeQinQ || t == etherType9100 }

// parse mirrors parse() in flowsensor.c step by step; keep them in sync.
func parse(b []byte, pos int, proto uint16, r *Record) Counter {
	n := len(b)
	for i := 0; i < MaxVLAN; i++ {
		if !isVLAN(proto) {
			break
		}
		if pos+4 > n {
			return CounterTruncL2
		}
		vid := binary.BigEndian.Uint16(b[pos:]) & 0x0fff
		if i == 0 {
			r.VLANID = vid
		} else if i == 1 {
			r.InnerVLANID = vid
		}
		r.VLANDepth = uint8(i + 1)
		proto = binary.BigEndian.Uint16(b[pos+2:])
		pos += 4
	}

	switch {
	case proto == EtherTypeIPv4:
		return parseIPv4(b, pos, r)
	case proto == EtherTypeIPv6:
		return parseIPv6(b, pos, r)
	case isVLAN(proto):
		return CounterTooDeep
	case proto == etherTypePPPoE:
		// PPPoE session header (6 bytes), then the 2-byte PPP protocol.
		if pos+8 > n {
			return CounterTruncL2
		}
		r.Encap |= EncapPPPoE
		ppp := binary.BigEndian.Uint16(b[pos+6:])
		pos += 8
		switch ppp {
		case 0x0021:
			return parseIPv4(b, pos, r)
		case 0x0057:
			return parseIPv6(b, pos, r)
		}
		return CounterNonIP
	case proto == etherTypeMPLSUC || proto == etherTypeMPLSMC:
		r.Encap |= EncapMPLS
		for i := 0; i < MaxMPLS; i++ {
			if pos+4 > n {
				return CounterTruncL2
			}
			bos := b[pos+2] & 1
			pos += 4
			if bos != 0 {
				// No payload type in MPLS: guess from the IP version nibble.
				if pos+1 > n {
					return CounterTruncL3
				}
				switch b[pos] >> 4 {
				case 4:
					return parseIPv4(b, pos, r)
				case 6:
					return parseIPv6(b, pos, r)
				}
				return CounterNonIP
			}
		}
		return CounterTooDeep
	}
	return CounterNonIP
}

func parseIPv4(b []byte, pos int, r *Record) Counter {
	n := len(b)
	if pos+20 > n {
		return CounterTruncL3
	}
	vihl := b[pos]
	ihl := int(vihl&0x0f) * 4
	if vihl>>4 != 4 || ihl < 20 {
		return CounterBadL3
	}
	r.IPVersion = 4
	r.DSCP = b[pos+1] >> 2
	nh := b[pos+9]
	r.SrcAddr[10], r.SrcAddr[11] = 0xff, 0xff
	copy(r.SrcAddr[12:], b[pos+12:pos+16])
	r.DstAddr[10], r.DstAddr[11] = 0xff, 0xff
	copy(r.DstAddr[12:], b[pos+16:pos+20])
	frag := binary.BigEndian.Uint16(b[pos+6:])
	if frag&0x3fff != 0 { // MF or a non-zero offset
		r.FragFlags = FragFragment
		if frag&0x2000 != 0 {
			r.FragFlags |= FragMore
		}
		r.FragID = uint32(binary.BigEndian.Uint16(b[pos+4:]))
		if frag&0x1fff != 0 {
			r.FragFlags |= FragNotFirst
			r.Protocol = nh
			return CounterEmitted
		}
	}
	if pos+ihl > n {
		r.Protocol = nh
		r.Flags |= RecL4Truncated
		return CounterEmitted
	}
	return parseL4(b, pos+ihl, nh, r)
}

func parseIPv6(b []byte, pos int, r *Record) Counter {
	n := len(b)
	if pos+40 > n {
		return CounterTruncL3
	}
	b0 := b[pos]
	if b0>>4 != 6 {
		return CounterBadL3
	}
	r.IPVersion = 6
	r.DSCP = ((b0&0x0f)<<4 | b[pos+1]>>4) >> 2
	nh := b[pos+6]
	copy(r.SrcAddr[:], b[pos+8:pos+24])
	copy(r.DstAddr[:], b[pos+24:pos+40])
	pos += 40

	extTruncated := func() Counter {
		r.Protocol = nh
		r.Flags |= RecL4Truncated
		return CounterEmitted
	}
	for i := 0; i < MaxIPv6Ext; i++ {
		var l int
		switch nh {
		case 0, 43, 60: // hop-by-hop, routing, destination options
			if pos+2 > n {
				return extTruncated()
			}
			l = (int(b[pos+1]) + 1) * 8
		case 51: // authentication header
			if pos+2 > n {
				return extTruncated()
			}
			l = (int(b[pos+1]) + 2) * 4
		case 44: // fragment
			if pos+8 > n {
				return extTruncated()
			}
			offM := binary.BigEndian.Uint16(b[pos+2:])
			r.FragFlags = FragFragment
			if offM&1 != 0 {
				r.FragFlags |= FragMore
			}
			r.FragID = binary.BigEndian.Uint32(b[pos+4:])
			nh = b[pos]
			pos += 8
			if offM&0xfff8 != 0 {
				r.FragFlags |= FragNotFirst
				r.Protocol = nh
				return CounterEmitted
			}
			continue
		default:
			return parseL4(b, pos, nh, r)
		}
		if pos+l > n {
			return extTruncated()
		}
		nh = b[pos]
		pos += l
	}
	switch nh {
	case 0, 43, 60, 51, 44:
		r.Protocol = nh
		r.Flags |= RecExtLimit
		return CounterEmitted
	}
	return parseL4(b, pos, nh, r)
}

func parseL4(b []byte, pos int, nh uint8, r *Record) Counter {
	n := len(b)
	r.Protocol = nh
	var need int // the protocol's fixed header size
	switch nh {
	case ProtoTCP:
		need = 20
	case ProtoUDP, 136: // UDP-Lite
		need = 8
	case ProtoSCTP, 33: // DCCP
		need = 12
	case ProtoICMP, ProtoICMPv6:
		// type and code go in the port fields
		if pos+2 <= n {
			r.SrcPort, r.DstPort = uint16(b[pos]), uint16(b[pos+1])
		}
		if pos+4 > n {
			r.Flags |= RecL4Truncated
		}
		return CounterEmitted
	default:
		return CounterEmitted
	}
	if pos+need > n {
		// Cut short: keep what is there, so the packet still joins its flow.
		r.Flags |= RecL4Truncated
	}
	if pos+4 <= n {
		r.SrcPort = binary.BigEndian.Uint16(b[pos:])
		r.DstPort = binary.BigEndian.Uint16(b[pos+2:])
	}
	if nh == ProtoTCP && pos+14 <= n {
		r.TCPFlags = b[pos+13]
	}
	return CounterEmitted
}

// Count adds one frame's outcome to c the way the XDP program counts it:
// CounterSeen, the outcome, and for a record its descriptive counters.
func (c *Counters) Count(outcome Counter, r *Record) {
	c[CounterSeen]++
	c[outcome]++
	if outcome != CounterEmitted {
		return
	}
	if r.Flags&RecL4Truncated != 0 {
		c[CounterTruncL4]++
	}
	if r.FragFlags != 0 {
		c[CounterFragments]++
	}
	if r.Flags&RecExtLimit != 0 {
		c[CounterExtLimit]++
	}
}
