package capture

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// pcapReader reads classic pcap records straight out of the read buffer:
// no copy per packet, and the file offset of every record is known, so a
// damaged file is reported exactly where it breaks.
type pcapReader struct {
	br        *bufio.Reader
	order     binary.ByteOrder
	recordHdr int   // 16; 24 or 28 in the modified formats
	fracNs    int64 // nanoseconds per unit of the fraction field: 1000 (µs) or 1 (ns)
	snaplen   uint32
	linkType  LinkType
	big       []byte // for a record larger than the read buffer
}

const (
	pcapVersionMajor = 2
	// maxRecord bounds a record's captured length, as libpcap and Wireshark
	// bound it for the link types flowsensor reads (whatever the file's snap
	// length says: some writers exceed their own, dpkt does). A longer one is
	// a damaged header, not a packet.
	maxRecord = 256 << 10
)

func newPCAPReader(br *bufio.Reader) (*pcapReader, error) {
	h, err := br.Peek(pcapFileHeader)
	if err != nil {
		return nil, fmt.Errorf("pcap file header: %d of %d bytes", len(h), pcapFileHeader)
	}
	r := &pcapReader{br: br, order: binary.LittleEndian, recordHdr: pcapRecordHdr, fracNs: 1000}
	magic := binary.LittleEndian.Uint32(h)
	if magic != magicMicros && magic != magicNanos && magic != magicModified {
		r.order = binary.BigEndian
		magic = binary.BigEndian.Uint32(h)
	}
	if magic == magicNanos {
		r.fracNs = 1
	}
	if v := r.order.Uint16(h[4:]); v != pcapVersionMajor {
		return nil, fmt.Errorf("pcap file header: unknown major version %d", v)
	}
	r.snaplen = r.order.Uint32(h[16:])
	// The low 16 bits are the link type; the upper ones carry FCS flags.
	r.linkType = LinkType(r.order.Uint32(h[20:]) & 0xffff)
	_, _ = br.Discard(pcapFileHeader)
	if magic == magicModified {
		r.recordHdr = r.modifiedRecordHdr()
	}
	return r, nil
}

// modifiedRecordHdr tells the two formats with the modified magic apart, as
// Wireshark does, by which record header length makes the first records
// line up: 24 bytes (Kuznetzov's patch: interface index, protocol, packet
// type) or 28 (SuSE 6.3's, with two CPU bytes and padding).
func (r *pcapReader) modifiedRecordHdr() int {
	buf, _ := r.br.Peek(r.br.Size())
	for _, hdr := range []int{24, 28} {
		if r.recordsLineUp(buf, hdr) {
			return hdr
		}
	}
	return 24 // neither: the records are damaged, which reading will report
}

// recordsLineUp reports whether the first (up to) two records in buf make
// sense with record headers of hdr bytes.
func (r *pcapReader) recordsLineUp(buf []byte, hdr int) bool {
	off := 0
	for range 2 {
		if len(buf)-off < hdr {
			return off > 0 || len(buf) == 0
		}
		caplen, wirelen := r.order.Uint32(buf[off+8:]), r.order.Uint32(buf[off+12:])
		if caplen > wirelen || caplen > maxRecord {
			return false
		}
		off += hdr + int(caplen)
	}
	return off <= len(buf) || len(buf) == r.br.Size()
}

// next reads one record into p. Data points into the read buffer and is
// valid until the next call.
func (r *pcapReader) next(p *Packet) error {
	h, err := r.br.Peek(r.recordHdr)
	if len(h) == 0 && errors.Is(err, io.EOF) {
		return io.EOF
	}
	if len(h) < r.recordHdr {
		return shortRead(err, "a record header")
	}
	sec, frac := int64(r.order.Uint32(h)), int64(r.order.Uint32(h[4:]))
	caplen, wirelen := r.order.Uint32(h[8:]), r.order.Uint32(h[12:])
	if caplen > maxRecord {
		return fmt.Errorf("record claims %d captured bytes, more than the %d a packet can have", caplen, maxRecord)
	}
	// A captured length above the wire length is kept as written, as
	// Wireshark does: some writers record the length without a pseudo-header
	// they capture (pypacker's Linux SLL files); flows count the wire length.
	_, _ = r.br.Discard(r.recordHdr)
	data, err := readN(r.br, int(caplen), &r.big)
	if len(data) < int(caplen) {
		return shortRead(err, "a packet record")
	}
	*p = Packet{Ts: sec*1e9 + frac*r.fracNs, Data: data, WireLen: int(wirelen), LinkType: r.linkType}
	return nil
}
