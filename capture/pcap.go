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
	br       *bufio.Reader
	order    binary.ByteOrder
	fracNs   int64 // nanoseconds per unit of the fraction field: 1000 (µs) or 1 (ns)
	snaplen  uint32
	linkType LinkType
	big      []byte // for a record larger than the read buffer
}

const (
	pcapVersionMajor = 2
	// maxRecord bounds a record's captured length, as libpcap does: a writer
	// may exceed its own snap length (dpkt does), but a length beyond this is
	// a damaged header, not a packet.
	maxRecord = 256 << 10
)

func newPCAPReader(br *bufio.Reader) (*pcapReader, error) {
	h, err := br.Peek(pcapFileHeader)
	if err != nil {
		return nil, fmt.Errorf("pcap file header: %d of %d bytes", len(h), pcapFileHeader)
	}
	r := &pcapReader{br: br, order: binary.LittleEndian, fracNs: 1000}
	switch magic := binary.LittleEndian.Uint32(h); magic {
	case magicMicros:
	case magicNanos:
		r.fracNs = 1
	default:
		r.order = binary.BigEndian
		if binary.BigEndian.Uint32(h) == magicNanos {
			r.fracNs = 1
		}
	}
	if v := r.order.Uint16(h[4:]); v != pcapVersionMajor {
		return nil, fmt.Errorf("pcap file header: unknown major version %d", v)
	}
	r.snaplen = r.order.Uint32(h[16:])
	// The low 16 bits are the link type; the upper ones carry FCS flags.
	r.linkType = LinkType(r.order.Uint32(h[20:]) & 0xffff)
	_, _ = br.Discard(pcapFileHeader)
	return r, nil
}

// next reads one record into p. Data points into the read buffer and is
// valid until the next call.
func (r *pcapReader) next(p *Packet) error {
	h, err := r.br.Peek(pcapRecordHdr)
	if len(h) == 0 && errors.Is(err, io.EOF) {
		return io.EOF
	}
	if len(h) < pcapRecordHdr {
		return shortRead(err, "a record header")
	}
	sec, frac := int64(r.order.Uint32(h)), int64(r.order.Uint32(h[4:]))
	caplen, wirelen := r.order.Uint32(h[8:]), r.order.Uint32(h[12:])
	if caplen > max(r.snaplen, maxRecord) {
		return fmt.Errorf("record claims %d captured bytes, more than the snap length %d allows", caplen, r.snaplen)
	}
	if caplen > wirelen {
		return fmt.Errorf("record claims %d captured bytes of a %d-byte packet", caplen, wirelen)
	}
	_, _ = r.br.Discard(pcapRecordHdr)
	var data []byte
	if int(caplen) <= r.br.Size() {
		data, err = r.br.Peek(int(caplen))
		if err == nil {
			_, _ = r.br.Discard(int(caplen))
		}
	} else {
		r.big = append(r.big[:0], make([]byte, caplen)...)
		var n int
		n, err = io.ReadFull(r.br, r.big)
		data = r.big[:n]
	}
	if len(data) < int(caplen) {
		return shortRead(err, "a packet record")
	}
	*p = Packet{Ts: sec*1e9 + frac*r.fracNs, Data: data, WireLen: int(wirelen), LinkType: r.linkType}
	return nil
}
