// Package testframes builds crafted Ethernet frames with the record and
// outcome the flowsensor parser must produce for them. The kernel tests
// (loader, BPF_PROG_TEST_RUN) and the Go decoder tests share these cases, so
// both parsers are held to one table. Only tests import it.
package testframes

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/flowsensor/flowsensor/bpf"
)

// Case is one frame and what parsing it must give. Want's Ts, Ifindex and
// WireLen are not compared (the runner sets them); WireLen is len(Frame).
type Case struct {
	Name    string
	Frame   []byte
	Outcome bpf.Counter // CounterEmitted or the counter that explains the missing record
	Want    bpf.Record  // meaningful when Outcome == CounterEmitted
	// Offsets of the headers, for the truncation sweep: where L3 starts,
	// where each IPv6 extension header or IPv4 option area starts, and where
	// L4 starts (0 when there is none).
	L3, L4 int
	// Ext lists [start, end, protocol number] of the IPv6 extension headers.
	Ext [][3]int
	// IHL is the IPv4 header length (0 for IPv6).
	IHL int
}

var (
	srcMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	dstMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 2}

	V4A = netip.MustParseAddr("10.1.2.3")
	V4B = netip.MustParseAddr("192.0.2.77")
	V6A = netip.MustParseAddr("2001:db8::1")
	V6B = netip.MustParseAddr("2001:db8:ffff::abcd")
)

func serialize(ls ...gopacket.SerializableLayer) []byte {
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		panic(fmt.Sprintf("serialize: %v", err))
	}
	return append([]byte(nil), buf.Bytes()...)
}

func eth(t layers.EthernetType) *layers.Ethernet {
	return &layers.Ethernet{SrcMAC: srcMAC, DstMAC: dstMAC, EthernetType: t}
}

func ip4(proto layers.IPProtocol) *layers.IPv4 {
	return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, TOS: 0xb8, Id: 0x1234, Protocol: proto,
		SrcIP: V4A.AsSlice(), DstIP: V4B.AsSlice()}
}

func ip6(next layers.IPProtocol) *layers.IPv6 {
	return &layers.IPv6{Version: 6, TrafficClass: 0x28, HopLimit: 64, NextHeader: next,
		SrcIP: V6A.AsSlice(), DstIP: V6B.AsSlice()}
}

func tcp(ip gopacket.NetworkLayer, flags uint8) *layers.TCP {
	t := &layers.TCP{SrcPort: 40000, DstPort: 443, Seq: 1, Window: 1024,
		FIN: flags&bpf.TCPFin != 0, SYN: flags&bpf.TCPSyn != 0, RST: flags&bpf.TCPRst != 0,
		PSH: flags&bpf.TCPPsh != 0, ACK: flags&bpf.TCPAck != 0, URG: flags&bpf.TCPUrg != 0,
		ECE: flags&bpf.TCPEce != 0, CWR: flags&bpf.TCPCwr != 0}
	_ = t.SetNetworkLayerForChecksum(ip)
	return t
}

func udp(ip gopacket.NetworkLayer) *layers.UDP {
	u := &layers.UDP{SrcPort: 5353, DstPort: 53}
	_ = u.SetNetworkLayerForChecksum(ip)
	return u
}

func rec(src, dst netip.Addr, proto uint8, sport, dport uint16) bpf.Record {
	var r bpf.Record
	r.SetAddrs(src, dst)
	r.Protocol, r.SrcPort, r.DstPort = proto, sport, dport
	if r.IPVersion == 4 {
		r.DSCP = 0xb8 >> 2
	} else {
		r.DSCP = 0x28 >> 2
	}
	return r
}

// rawExt is an IPv6 extension header of the hop-by-hop layout (next header,
// length in 8-byte units after the first 8), padded with PadN.
func rawExt(next layers.IPProtocol, units int) []byte {
	b := make([]byte, (units+1)*8)
	b[0], b[1] = byte(next), byte(units)
	b[2], b[3] = 1, byte(len(b)-4) // PadN option filling the rest
	return b
}

func rawFrag(next layers.IPProtocol, offset8 uint16, more bool, id uint32) []byte {
	b := make([]byte, 8)
	b[0] = byte(next)
	v := offset8 << 3
	if more {
		v |= 1
	}
	binary.BigEndian.PutUint16(b[2:], v)
	binary.BigEndian.PutUint32(b[4:], id)
	return b
}

func concat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// Cases returns the crafted frames, freshly built.
func Cases() []Case {
	var cs []Case
	add := func(c Case) { cs = append(cs, c) }

	{ // IPv4 TCP SYN, the plainest case.
		ip := ip4(layers.IPProtocolTCP)
		w := rec(V4A, V4B, bpf.ProtoTCP, 40000, 443)
		w.TCPFlags = bpf.TCPSyn
		add(Case{Name: "ipv4-tcp-syn", Frame: serialize(eth(layers.EthernetTypeIPv4), ip, tcp(ip, bpf.TCPSyn), gopacket.Payload("hello")),
			Outcome: bpf.CounterEmitted, Want: w, L3: 14, IHL: 20, L4: 34})
	}
	{ // every TCP flag
		ip := ip4(layers.IPProtocolTCP)
		w := rec(V4A, V4B, bpf.ProtoTCP, 40000, 443)
		w.TCPFlags = 0xff
		add(Case{Name: "ipv4-tcp-all-flags", Frame: serialize(eth(layers.EthernetTypeIPv4), ip, tcp(ip, 0xff)),
			Outcome: bpf.CounterEmitted, Want: w, L3: 14, IHL: 20, L4: 34})
	}
	{ // 64-byte UDP frame (padded like on the wire)
		ip := ip4(layers.IPProtocolUDP)
		f := serialize(eth(layers.EthernetTypeIPv4), ip, udp(ip), gopacket.Payload(make([]byte, 18)))
		add(Case{Name: "ipv4-udp-64", Frame: f, Outcome: bpf.CounterEmitted,
			Want: rec(V4A, V4B, bpf.ProtoUDP, 5353, 53), L3: 14, IHL: 20, L4: 34})
	}
	{ // IPv4 options (router alert + padding: IHL 6)
		ip := ip4(layers.IPProtocolUDP)
		ip.Options = []layers.IPv4Option{{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}}}
		add(Case{Name: "ipv4-options-udp", Frame: serialize(eth(layers.EthernetTypeIPv4), ip, udp(ip), gopacket.Payload("x")),
			Outcome: bpf.CounterEmitted, Want: rec(V4A, V4B, bpf.ProtoUDP, 5353, 53), L3: 14, IHL: 24, L4: 38})
	}
	{ // ICMP echo request: type and code in the port fields
		ip := ip4(layers.IPProtocolICMPv4)
		icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: 7, Seq: 1}
		add(Case{Name: "ipv4-icmp-echo", Frame: serialize(eth(layers.EthernetTypeIPv4), ip, icmp, gopacket.Payload("ping")),
			Outcome: bpf.CounterEmitted, Want: rec(V4A, V4B, bpf.ProtoICMP, 8, 0), L3: 14, IHL: 20, L4: 34})
	}
	{ // ICMP destination unreachable, port unreachable
		ip := ip4(layers.IPProtocolICMPv4)
		icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 3)}
		add(Case{Name: "ipv4-icmp-unreach", Frame: serialize(eth(layers.EthernetTypeIPv4), ip, icmp, gopacket.Payload(make([]byte, 28))),
			Outcome: bpf.CounterEmitted, Want: rec(V4A, V4B, bpf.ProtoICMP, 3, 3), L3: 14, IHL: 20, L4: 34})
	}
	{ // IPv4 first fragment: ports parsed, fragment flags and id kept
		ip := ip4(layers.IPProtocolUDP)
		ip.Flags = layers.IPv4MoreFragments
		w := rec(V4A, V4B, bpf.ProtoUDP, 5353, 53)
		w.FragFlags, w.FragID = bpf.FragFragment|bpf.FragMore, 0x1234
		add(Case{Name: "ipv4-frag-first", Frame: serialize(eth(layers.EthernetTypeIPv4), ip, udp(ip), gopacket.Payload(make([]byte, 64))),
			Outcome: bpf.CounterEmitted, Want: w, L3: 14, IHL: 20, L4: 34})
	}
	{ // IPv4 last fragment: no L4 header
		ip := ip4(layers.IPProtocolUDP)
		ip.FragOffset = 185
		w := rec(V4A, V4B, bpf.ProtoUDP, 0, 0)
		w.FragFlags, w.FragID = bpf.FragFragment|bpf.FragNotFirst, 0x1234
		add(Case{Name: "ipv4-frag-last", Frame: serialize(eth(layers.EthernetTypeIPv4), ip, gopacket.Payload(make([]byte, 40))),
			Outcome: bpf.CounterEmitted, Want: w, L3: 14, IHL: 20})
	}
	{ // GRE: an IP protocol without ports
		ip := ip4(layers.IPProtocolGRE)
		add(Case{Name: "ipv4-gre", Frame: serialize(eth(layers.EthernetTypeIPv4), ip, gopacket.Payload(make([]byte, 24))),
			Outcome: bpf.CounterEmitted, Want: rec(V4A, V4B, 47, 0, 0), L3: 14, IHL: 20})
	}
	{ // SCTP
		ip := ip4(layers.IPProtocolSCTP)
		sctp := &layers.SCTP{SrcPort: 2905, DstPort: 2944, VerificationTag: 1}
		add(Case{Name: "ipv4-sctp", Frame: serialize(eth(layers.EthernetTypeIPv4), ip, sctp, gopacket.Payload(make([]byte, 16))),
			Outcome: bpf.CounterEmitted, Want: rec(V4A, V4B, bpf.ProtoSCTP, 2905, 2944), L3: 14, IHL: 20, L4: 34})
	}
	{ // IPv6 TCP
		ip := ip6(layers.IPProtocolTCP)
		w := rec(V6A, V6B, bpf.ProtoTCP, 40000, 443)
		w.TCPFlags = bpf.TCPAck | bpf.TCPPsh
		add(Case{Name: "ipv6-tcp", Frame: serialize(eth(layers.EthernetTypeIPv6), ip, tcp(ip, bpf.TCPAck|bpf.TCPPsh), gopacket.Payload("data")),
			Outcome: bpf.CounterEmitted, Want: w, L3: 14, L4: 54})
	}
	{ // IPv6 UDP
		ip := ip6(layers.IPProtocolUDP)
		add(Case{Name: "ipv6-udp", Frame: serialize(eth(layers.EthernetTypeIPv6), ip, udp(ip), gopacket.Payload("q")),
			Outcome: bpf.CounterEmitted, Want: rec(V6A, V6B, bpf.ProtoUDP, 5353, 53), L3: 14, L4: 54})
	}
	{ // ICMPv6 echo request
		ip := ip6(layers.IPProtocolICMPv6)
		icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(128, 0)}
		_ = icmp.SetNetworkLayerForChecksum(ip)
		add(Case{Name: "ipv6-icmpv6-echo", Frame: serialize(eth(layers.EthernetTypeIPv6), ip, icmp, gopacket.Payload(make([]byte, 8))),
			Outcome: bpf.CounterEmitted, Want: rec(V6A, V6B, bpf.ProtoICMPv6, 128, 0), L3: 14, L4: 54})
	}
	{ // IPv6 extension chain: hop-by-hop, routing, destination options, then UDP
		ip := ip6(layers.IPProtocolIPv6HopByHop)
		hbh := rawExt(layers.IPProtocolIPv6Routing, 0)
		rt := rawExt(layers.IPProtocolIPv6Destination, 2)
		do := rawExt(layers.IPProtocolUDP, 1)
		u := make([]byte, 8+4)
		binary.BigEndian.PutUint16(u[0:], 5353)
		binary.BigEndian.PutUint16(u[2:], 53)
		binary.BigEndian.PutUint16(u[4:], 12)
		f := serialize(eth(layers.EthernetTypeIPv6), ip, gopacket.Payload(concat(hbh, rt, do, u)))
		l4 := 54 + len(hbh) + len(rt) + len(do)
		add(Case{Name: "ipv6-ext-chain-udp", Frame: f, Outcome: bpf.CounterEmitted,
			Want: rec(V6A, V6B, bpf.ProtoUDP, 5353, 53), L3: 14, L4: l4,
			Ext: [][3]int{{54, 62, 0}, {62, 86, 43}, {86, 102, 60}}})
	}
	{ // IPv6 first fragment, then TCP
		ip := ip6(layers.IPProtocolIPv6Fragment)
		frag := rawFrag(layers.IPProtocolTCP, 0, true, 0xdeadbeef)
		t := make([]byte, 20)
		binary.BigEndian.PutUint16(t[0:], 40000)
		binary.BigEndian.PutUint16(t[2:], 443)
		t[12], t[13] = 5<<4, bpf.TCPAck
		w := rec(V6A, V6B, bpf.ProtoTCP, 40000, 443)
		w.TCPFlags, w.FragFlags, w.FragID = bpf.TCPAck, bpf.FragFragment|bpf.FragMore, 0xdeadbeef
		add(Case{Name: "ipv6-frag-first", Frame: serialize(eth(layers.EthernetTypeIPv6), ip, gopacket.Payload(concat(frag, t, make([]byte, 32)))),
			Outcome: bpf.CounterEmitted, Want: w, L3: 14, L4: 62, Ext: [][3]int{{54, 62, 44}}})
	}
	{ // IPv6 later fragment: no L4
		ip := ip6(layers.IPProtocolIPv6Fragment)
		frag := rawFrag(layers.IPProtocolUDP, 181, false, 77)
		w := rec(V6A, V6B, bpf.ProtoUDP, 0, 0)
		w.FragFlags, w.FragID = bpf.FragFragment|bpf.FragNotFirst, 77
		add(Case{Name: "ipv6-frag-last", Frame: serialize(eth(layers.EthernetTypeIPv6), ip, gopacket.Payload(concat(frag, make([]byte, 40)))),
			Outcome: bpf.CounterEmitted, Want: w, L3: 14, Ext: [][3]int{{54, 62, 44}}})
	}
	{ // more extension headers than the parser walks
		ip := ip6(layers.IPProtocolIPv6Destination)
		var chain []byte
		for i := 0; i < bpf.MaxIPv6Ext+1; i++ {
			chain = append(chain, rawExt(layers.IPProtocolIPv6Destination, 0)...)
		}
		w := rec(V6A, V6B, 60, 0, 0)
		w.Flags = bpf.RecExtLimit
		var ext [][3]int // the walked headers; the last one is never looked at
		for i := 0; i < bpf.MaxIPv6Ext; i++ {
			ext = append(ext, [3]int{54 + 8*i, 62 + 8*i, 60})
		}
		add(Case{Name: "ipv6-ext-limit", Frame: serialize(eth(layers.EthernetTypeIPv6), ip, gopacket.Payload(chain)),
			Outcome: bpf.CounterEmitted, Want: w, L3: 14, Ext: ext})
	}
	{ // 802.1Q with PCP and DEI set: the VID is masked to 12 bits
		ip := ip4(layers.IPProtocolUDP)
		q := &layers.Dot1Q{Priority: 7, DropEligible: true, VLANIdentifier: 100, Type: layers.EthernetTypeIPv4}
		w := rec(V4A, V4B, bpf.ProtoUDP, 5353, 53)
		w.VLANID, w.VLANDepth = 100, 1
		add(Case{Name: "vlan-udp", Frame: serialize(eth(layers.EthernetTypeDot1Q), q, ip, udp(ip)),
			Outcome: bpf.CounterEmitted, Want: w, L3: 18, IHL: 20, L4: 38})
	}
	{ // 802.1ad S-tag 30 + 802.1Q C-tag 100 (QinQ)
		ip := ip6(layers.IPProtocolTCP)
		s := &layers.Dot1Q{VLANIdentifier: 30, Type: layers.EthernetTypeDot1Q}
		c := &layers.Dot1Q{VLANIdentifier: 100, Type: layers.EthernetTypeIPv6}
		w := rec(V6A, V6B, bpf.ProtoTCP, 40000, 443)
		w.VLANID, w.InnerVLANID, w.VLANDepth, w.TCPFlags = 30, 100, 2, bpf.TCPFin|bpf.TCPAck
		add(Case{Name: "qinq-8021ad-tcp", Frame: serialize(eth(layers.EthernetTypeQinQ), s, c, ip, tcp(ip, bpf.TCPFin|bpf.TCPAck)),
			Outcome: bpf.CounterEmitted, Want: w, L3: 22, L4: 62})
	}
	{ // four tags: the most the parser walks
		ip := ip4(layers.IPProtocolICMPv4)
		ls := []gopacket.SerializableLayer{eth(layers.EthernetTypeQinQ)}
		for i, vid := range []uint16{10, 20, 30, 4095} {
			next := layers.EthernetTypeDot1Q
			if i == 3 {
				next = layers.EthernetTypeIPv4
			}
			ls = append(ls, &layers.Dot1Q{VLANIdentifier: vid, Type: next})
		}
		ls = append(ls, ip, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(0, 0)})
		w := rec(V4A, V4B, bpf.ProtoICMP, 0, 0)
		w.VLANID, w.InnerVLANID, w.VLANDepth = 10, 20, 4
		add(Case{Name: "vlan-4-tags", Frame: serialize(ls...), Outcome: bpf.CounterEmitted, Want: w, L3: 30, IHL: 20, L4: 50})
	}
	{ // five tags: too deep
		ls := []gopacket.SerializableLayer{eth(layers.EthernetTypeDot1Q)}
		for i := 0; i < 5; i++ {
			next := layers.EthernetTypeDot1Q
			if i == 4 {
				next = layers.EthernetTypeIPv4
			}
			ls = append(ls, &layers.Dot1Q{VLANIdentifier: uint16(i + 1), Type: next})
		}
		ip := ip4(layers.IPProtocolUDP)
		ls = append(ls, ip, udp(ip))
		add(Case{Name: "vlan-5-tags", Frame: serialize(ls...), Outcome: bpf.CounterTooDeep})
	}
	{ // PPPoE session carrying IPv4
		ip := ip4(layers.IPProtocolUDP)
		w := rec(V4A, V4B, bpf.ProtoUDP, 5353, 53)
		w.Encap = bpf.EncapPPPoE
		f := serialize(eth(layers.EthernetTypePPPoESession), &layers.PPPoE{Version: 1, Type: 1, Code: layers.PPPoECodeSession, SessionId: 0x11},
			&layers.PPP{PPPType: layers.PPPTypeIPv4}, ip, udp(ip))
		add(Case{Name: "pppoe-ipv4-udp", Frame: f, Outcome: bpf.CounterEmitted, Want: w, L3: 22, IHL: 20, L4: 42})
	}
	{ // PPPoE session carrying IPv6, behind an 802.1Q tag
		ip := ip6(layers.IPProtocolTCP)
		w := rec(V6A, V6B, bpf.ProtoTCP, 40000, 443)
		w.Encap, w.VLANID, w.VLANDepth, w.TCPFlags = bpf.EncapPPPoE, 7, 1, bpf.TCPRst
		f := serialize(eth(layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 7, Type: layers.EthernetTypePPPoESession},
			&layers.PPPoE{Version: 1, Type: 1, Code: layers.PPPoECodeSession, SessionId: 0x11},
			&layers.PPP{PPPType: layers.PPPTypeIPv6}, ip, tcp(ip, bpf.TCPRst))
		add(Case{Name: "vlan-pppoe-ipv6-tcp", Frame: f, Outcome: bpf.CounterEmitted, Want: w, L3: 26, L4: 66})
	}
	{ // PPPoE session carrying LCP: not IP
		f := serialize(eth(layers.EthernetTypePPPoESession), &layers.PPPoE{Version: 1, Type: 1, Code: layers.PPPoECodeSession, SessionId: 1},
			&layers.PPP{PPPType: 0xc021}, gopacket.Payload(make([]byte, 10)))
		add(Case{Name: "pppoe-lcp", Frame: f, Outcome: bpf.CounterNonIP})
	}
	{ // PPPoE discovery
		f := serialize(eth(layers.EthernetTypePPPoEDiscovery), gopacket.Payload(make([]byte, 30)))
		add(Case{Name: "pppoe-discovery", Frame: f, Outcome: bpf.CounterNonIP})
	}
	{ // MPLS: two labels then IPv4
		ip := ip4(layers.IPProtocolUDP)
		w := rec(V4A, V4B, bpf.ProtoUDP, 5353, 53)
		w.Encap = bpf.EncapMPLS
		f := serialize(eth(layers.EthernetTypeMPLSUnicast), &layers.MPLS{Label: 100, TTL: 64}, &layers.MPLS{Label: 200, StackBottom: true, TTL: 64}, ip, udp(ip))
		add(Case{Name: "mpls-2-ipv4-udp", Frame: f, Outcome: bpf.CounterEmitted, Want: w, L3: 22, IHL: 20, L4: 42})
	}
	{ // MPLS behind a VLAN, one label, IPv6
		ip := ip6(layers.IPProtocolUDP)
		w := rec(V6A, V6B, bpf.ProtoUDP, 5353, 53)
		w.Encap, w.VLANID, w.VLANDepth = bpf.EncapMPLS, 300, 1
		f := serialize(eth(layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 300, Type: layers.EthernetTypeMPLSUnicast},
			&layers.MPLS{Label: 16, StackBottom: true, TTL: 64}, ip, udp(ip))
		add(Case{Name: "vlan-mpls-ipv6-udp", Frame: f, Outcome: bpf.CounterEmitted, Want: w, L3: 22, L4: 62})
	}
	{ // MPLS pseudowire (control word 0): not IP
		f := serialize(eth(layers.EthernetTypeMPLSUnicast), &layers.MPLS{Label: 16, StackBottom: true, TTL: 64}, gopacket.Payload(make([]byte, 30)))
		add(Case{Name: "mpls-pw-control-word", Frame: f, Outcome: bpf.CounterNonIP})
	}
	{ // more labels than the parser walks
		ls := []gopacket.SerializableLayer{eth(layers.EthernetTypeMPLSUnicast)}
		for i := 0; i < bpf.MaxMPLS+1; i++ {
			ls = append(ls, &layers.MPLS{Label: uint32(i + 16), StackBottom: i == bpf.MaxMPLS, TTL: 1})
		}
		ip := ip4(layers.IPProtocolUDP)
		ls = append(ls, ip, udp(ip))
		add(Case{Name: "mpls-too-deep", Frame: serialize(ls...), Outcome: bpf.CounterTooDeep})
	}
	{ // ARP
		arp := &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: layers.ARPRequest, SourceHwAddress: srcMAC, SourceProtAddress: V4A.AsSlice(),
			DstHwAddress: make([]byte, 6), DstProtAddress: V4B.AsSlice()}
		add(Case{Name: "arp", Frame: serialize(eth(layers.EthernetTypeARP), arp), Outcome: bpf.CounterNonIP})
	}
	{ // LLDP-ish frame with an unknown ethertype
		add(Case{Name: "lldp", Frame: serialize(eth(0x88cc), gopacket.Payload(make([]byte, 46))), Outcome: bpf.CounterNonIP})
	}
	{ // ethertype IPv4 but version 6 inside
		ip := ip6(layers.IPProtocolUDP)
		add(Case{Name: "ipv4-ethertype-v6-packet", Frame: serialize(eth(layers.EthernetTypeIPv4), ip, udp(ip)), Outcome: bpf.CounterBadL3})
	}
	{ // IHL of 4 (16 bytes): invalid
		ip := ip4(layers.IPProtocolUDP)
		f := serialize(eth(layers.EthernetTypeIPv4), ip, udp(ip))
		f[14] = 0x44
		add(Case{Name: "ipv4-ihl-4", Frame: f, Outcome: bpf.CounterBadL3})
	}
	return cs
}

// Truncated returns the frame cut to n bytes and what parsing it must give.
// It derives the expectation from the header offsets of a complete case.
func (c Case) Truncated(n int) Case {
	t := c
	t.Name = fmt.Sprintf("%s/cut-%d", c.Name, n)
	t.Frame = c.Frame[:n]
	if n >= len(c.Frame) {
		return t
	}
	w := c.Want
	switch {
	case n < c.L3:
		t.Outcome = bpf.CounterTruncL2
		return t
	case c.IHL == 0 && n < c.L3+40, c.IHL != 0 && n < c.L3+20:
		t.Outcome = bpf.CounterTruncL3
		return t
	}
	// The fixed IP header is there: a record is always emitted from here on.
	truncL4 := func(proto uint8) {
		w.Protocol, w.SrcPort, w.DstPort, w.TCPFlags = proto, 0, 0, 0
		w.Flags = bpf.RecL4Truncated
	}
	if c.IHL > 20 && n < c.L3+c.IHL {
		truncL4(w.Protocol)
		t.Want = w
		return t
	}
	for _, e := range c.Ext {
		if n >= e[1] {
			continue
		}
		truncL4(uint8(e[2]))
		// Fragment fields come from a fragment header only once it is whole.
		w.FragFlags, w.FragID = 0, 0
		for _, prev := range c.Ext {
			if prev[1] <= n && prev[2] == 44 {
				w.FragFlags, w.FragID = c.Want.FragFlags, c.Want.FragID
			}
		}
		t.Want = w
		return t
	}
	if c.L4 == 0 || n >= c.L4+fixedL4(w.Protocol) {
		return t
	}
	w.Flags |= bpf.RecL4Truncated
	l4 := n - c.L4
	switch w.Protocol {
	case bpf.ProtoICMP, bpf.ProtoICMPv6:
		if l4 < 2 {
			w.SrcPort, w.DstPort = 0, 0
		}
	default:
		if l4 < 4 {
			w.SrcPort, w.DstPort = 0, 0
		}
		if l4 < 14 {
			w.TCPFlags = 0
		}
	}
	t.Want = w
	return t
}

// fixedL4 is the fixed header size below which an L4 header counts as cut short.
func fixedL4(proto uint8) int {
	switch proto {
	case bpf.ProtoTCP:
		return 20
	case bpf.ProtoUDP, 136:
		return 8
	case bpf.ProtoSCTP, 33:
		return 12
	case bpf.ProtoICMP, bpf.ProtoICMPv6:
		return 4
	}
	return 0
}

// BenchFrames returns the frames `make bench` times: a minimal UDP frame
// (64 bytes on the wire with FCS) and a full-MTU TCP frame (1514 bytes).
func BenchFrames() []struct {
	Name  string
	Frame []byte
} {
	ip := ip4(layers.IPProtocolUDP)
	udp64 := serialize(eth(layers.EthernetTypeIPv4), ip, udp(ip), gopacket.Payload(make([]byte, 18)))
	ip = ip4(layers.IPProtocolTCP)
	tcp1500 := serialize(eth(layers.EthernetTypeIPv4), ip, tcp(ip, bpf.TCPAck|bpf.TCPPsh), gopacket.Payload(make([]byte, 1460)))
	return []struct {
		Name  string
		Frame []byte
	}{{"udp64", udp64}, {"tcp1500", tcp1500}}
}
