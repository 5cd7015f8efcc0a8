package capture

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
)

// pcapngReader reads pcapng blocks straight out of the read buffer, like
// pcapReader: no copy per packet, and the offset of every block is known, so
// a damaged file is reported at the block where it breaks. It reads enhanced,
// simple and obsolete packet blocks from any number of sections, either byte
// order, with per-interface link types, time resolutions and offsets, and
// skips every other block type.
//
// It replaces gopacket's pcapgo.NgReader here because that package imports
// gopacket/layers, whose 5 MB of pointer tables cost every flowsensor process
// about 2 ms at start-up (`flowsensor version`: 5.5 → 3.8 ms without them) and
// every garbage collection a scan of them (BENCHMARKS.md). The tests read every corpus file with both readers
// and require the same packets.
type pcapngReader struct {
	br     *bufio.Reader
	order  binary.ByteOrder
	ifaces []ngInterface // of every section so far: Packet.Interface indexes it
	first  int           // index of the current section's first interface
	start  int64         // where the block being read starts
	offset int64         // where the next block starts
	lastTs int64         // for simple packet blocks, which carry no time
	big    []byte        // for a block larger than the read buffer
}

type ngInterface struct {
	Interface
	snaplen  uint32
	units    uint64 // timestamp units per second
	offsetNs int64  // if_tsoffset, in nanoseconds
}

const (
	ngSectionHeader  = 0x0a0d0d0a
	ngInterfaceDesc  = 1
	ngObsoletePacket = 2
	ngSimplePacket   = 3
	ngEnhancedPacket = 6
	ngByteOrderMagic = 0x1a2b3c4d

	ngOptEnd      = 0
	ngOptIfName   = 2
	ngOptTsResol  = 9
	ngOptTsOffset = 14

	// maxBlock bounds a block's length: larger is a damaged header. Packet
	// blocks are far smaller (maxRecord); name resolution and custom blocks
	// can be large but not this large.
	maxBlock = 16 << 20
)

func newPCAPNGReader(br *bufio.Reader) (*pcapngReader, error) {
	r := &pcapngReader{br: br, order: binary.LittleEndian}
	body, err := r.block()
	if err != nil {
		return nil, err
	}
	if err := r.section(body); err != nil {
		return nil, err
	}
	return r, nil
}

// blockError is a damaged block at a known offset.
type blockError struct {
	offset int64
	err    error
}

func (e *blockError) Error() string { return e.err.Error() }

func (r *pcapngReader) fail(format string, args ...any) error {
	return &blockError{offset: r.start, err: fmt.Errorf(format, args...)}
}

// next reads packet blocks until one yields a packet, handling the other
// blocks on the way. Data points into the read buffer and is valid until the
// next call.
func (r *pcapngReader) next(p *Packet) error {
	for {
		body, err := r.block()
		if err != nil {
			return err
		}
		// The section header's type reads the same in either byte order.
		if typ := r.order.Uint32(body); typ == ngSectionHeader {
			err = r.section(body)
		} else {
			var ok bool
			ok, err = r.packet(typ, body[8:len(body)-4], p)
			if ok {
				return nil
			}
		}
		if err != nil {
			return err
		}
	}
}

// block reads one whole block (header, body and trailer) and checks its
// framing.
func (r *pcapngReader) block() ([]byte, error) {
	r.start = r.offset
	h, err := r.br.Peek(12)
	if len(h) == 0 && errors.Is(err, io.EOF) {
		return nil, io.EOF
	}
	if len(h) < 12 {
		return nil, &blockError{offset: r.start, err: shortRead(err, "a block header")}
	}
	if binary.LittleEndian.Uint32(h) == ngSectionHeader {
		// A section header says its own byte order, and its section's.
		switch {
		case binary.LittleEndian.Uint32(h[8:]) == ngByteOrderMagic:
			r.order = binary.LittleEndian
		case binary.BigEndian.Uint32(h[8:]) == ngByteOrderMagic:
			r.order = binary.BigEndian
		default:
			return nil, r.fail("section header with an unknown byte-order magic %#x", h[8:12])
		}
	}
	typ, length := r.order.Uint32(h), r.order.Uint32(h[4:])
	switch {
	case length < 12 || length%4 != 0:
		return nil, r.fail("block of type %#x claims an invalid length %d", typ, length)
	case length > maxBlock:
		return nil, r.fail("block of type %#x claims %d bytes, more than any block can be", typ, length)
	}
	b, err := readN(r.br, int(length), &r.big)
	if len(b) < int(length) {
		return nil, &blockError{offset: r.start, err: shortRead(err, fmt.Sprintf("a block of %d bytes", length))}
	}
	if r.order.Uint32(b[length-4:]) != length {
		return nil, r.fail("block trailer disagrees with its header")
	}
	r.offset += int64(length)
	return b, nil
}

// section starts a new section: its interfaces are numbered after those of
// the previous sections, as Wireshark numbers them.
func (r *pcapngReader) section(b []byte) error {
	body := b[8 : len(b)-4]
	if len(body) < 16 {
		return r.fail("section header of %d bytes is too short", len(b))
	}
	if major, minor := r.order.Uint16(body[4:]), r.order.Uint16(body[6:]); major != 1 {
		return r.fail("section of pcapng version %d.%d, only 1.x is defined", major, minor)
	}
	if _, err := options(body[16:], r.order); err != nil {
		return r.fail("section header: %v", err)
	}
	r.first = len(r.ifaces)
	return nil
}

// packet handles a block inside a section; ok says that p holds a packet.
func (r *pcapngReader) packet(typ uint32, body []byte, p *Packet) (ok bool, err error) {
	switch typ {
	case ngInterfaceDesc:
		return false, r.iface(body)
	case ngEnhancedPacket, ngObsoletePacket:
		if len(body) < 20 {
			return false, r.fail("packet block of %d bytes is too short", len(body)+12)
		}
		var id int
		if typ == ngEnhancedPacket {
			id = int(r.order.Uint32(body))
		} else {
			id = int(r.order.Uint16(body)) // then a 16-bit drop count
		}
		ifc, err := r.ifaceOf(id)
		if err != nil {
			return false, err
		}
		ts := uint64(r.order.Uint32(body[4:]))<<32 | uint64(r.order.Uint32(body[8:]))
		caplen, wirelen := r.order.Uint32(body[12:]), r.order.Uint32(body[16:])
		if caplen > uint32(len(body)-20) {
			return false, r.fail("packet block claims %d captured bytes but holds %d", caplen, len(body)-20)
		}
		if caplen > maxRecord {
			return false, r.fail("packet block claims %d captured bytes, more than the %d a packet can have", caplen, maxRecord)
		}
		r.lastTs = ifc.nanos(ts)
		*p = Packet{Ts: r.lastTs, Data: body[20 : 20+caplen], WireLen: int(wirelen), Interface: r.first + id, LinkType: ifc.LinkType}
		return true, nil
	case ngSimplePacket:
		// Interface 0; the captured length is what the block holds, at most
		// the snap length; no time, so the previous packet's is used.
		if len(body) < 4 {
			return false, r.fail("simple packet block of %d bytes is too short", len(body)+12)
		}
		ifc, err := r.ifaceOf(0)
		if err != nil {
			return false, err
		}
		wirelen := r.order.Uint32(body)
		caplen := min(wirelen, uint32(len(body)-4))
		if ifc.snaplen > 0 {
			caplen = min(caplen, ifc.snaplen)
		}
		*p = Packet{Ts: r.lastTs, Data: body[4 : 4+caplen], WireLen: int(wirelen), Interface: r.first, LinkType: ifc.LinkType}
		return true, nil
	}
	return false, nil // statistics, name resolution, custom, ...: not needed
}

func (r *pcapngReader) ifaceOf(id int) (*ngInterface, error) {
	if id < 0 || id >= len(r.ifaces)-r.first {
		return nil, r.fail("packet of interface %d, but the section describes %d", id, len(r.ifaces)-r.first)
	}
	return &r.ifaces[r.first+id], nil
}

// iface reads an interface description block.
func (r *pcapngReader) iface(body []byte) error {
	if len(body) < 8 {
		return r.fail("interface block of %d bytes is too short", len(body)+12)
	}
	ifc := ngInterface{
		Interface: Interface{LinkType: LinkType(r.order.Uint16(body))},
		snaplen:   r.order.Uint32(body[4:]),
		units:     1e6, // default resolution: microseconds
	}
	opts, err := options(body[8:], r.order)
	if err != nil {
		return r.fail("interface block: %v", err)
	}
	for _, o := range opts {
		switch o.code {
		case ngOptIfName:
			ifc.Name = string(o.value)
		case ngOptTsResol:
			if len(o.value) != 1 {
				return r.fail("interface block: if_tsresol of %d bytes", len(o.value))
			}
			if ifc.units, err = tsUnits(o.value[0]); err != nil {
				return r.fail("interface block: %v", err)
			}
		case ngOptTsOffset:
			if len(o.value) != 8 {
				return r.fail("interface block: if_tsoffset of %d bytes", len(o.value))
			}
			ifc.offsetNs = int64(r.order.Uint64(o.value)) * 1e9
		}
	}
	r.ifaces = append(r.ifaces, ifc)
	return nil
}

// tsUnits decodes if_tsresol: a negative power of 10, or of 2 with the top
// bit set, giving the units per second.
func tsUnits(v byte) (uint64, error) {
	exp := uint(v & 0x7f)
	if v&0x80 != 0 {
		if exp > 63 {
			return 0, fmt.Errorf("time resolution 2^-%d is finer than flowsensor can count", exp)
		}
		return 1 << exp, nil
	}
	if exp > 19 {
		return 0, fmt.Errorf("time resolution 10^-%d is finer than flowsensor can count", exp)
	}
	u := uint64(1)
	for range exp {
		u *= 10
	}
	return u, nil
}

// nanos converts a timestamp in the interface's units to Unix nanoseconds.
func (ifc *ngInterface) nanos(ts uint64) int64 {
	var ns uint64
	switch ifc.units {
	case 1e6:
		ns = ts * 1e3
	case 1e9:
		ns = ts
	default:
		sec, frac := ts/ifc.units, ts%ifc.units
		hi, lo := bits.Mul64(frac, 1e9)
		fracNs, _ := bits.Div64(hi, lo, ifc.units) // hi < units, as frac < units
		ns = sec*1e9 + fracNs
	}
	return int64(ns) + ifc.offsetNs
}

type option struct {
	code  uint16
	value []byte
}

// options splits a block's options, checking that they stay inside it. The
// list may end with an end-of-options option or with the block.
func options(b []byte, order binary.ByteOrder) ([]option, error) {
	var out []option
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, errors.New("an option runs past the end of its block")
		}
		code, n := order.Uint16(b), int(order.Uint16(b[2:]))
		if code == ngOptEnd {
			break
		}
		padded := 4 + (n+3)&^3
		if padded > len(b) {
			return nil, fmt.Errorf("option %d runs past the end of its block", code)
		}
		out = append(out, option{code: code, value: b[4 : 4+n]})
		b = b[padded:]
	}
	return out, nil
}
