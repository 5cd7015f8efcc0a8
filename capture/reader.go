// Package capture reads packet capture files (classic pcap in every byte order
// and precision, pcapng with several interfaces and link types, either one
// gzip-compressed) and turns their packets into the records the XDP program
// would have produced, through bpf.Decode. It is the offline source of the
// pipeline: replay and watched folders.
package capture

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// Packet is one captured packet. Data is valid until the next call to Next.
type Packet struct {
	Ts        int64  // Unix nanoseconds
	Data      []byte // the captured bytes, starting with the link header
	WireLen   int    // length on the wire, which may exceed len(Data)
	Interface int    // the capture interface within the file
	LinkType  layers.LinkType
}

// Interface describes one capture interface of a file.
type Interface struct {
	Name     string // from the pcapng interface block; empty when the file has none
	LinkType layers.LinkType
}

// FormatError is a damaged or unreadable capture file. Packets before Offset
// were read and are valid.
type FormatError struct {
	Path    string
	Offset  int64 // byte offset of the damage in the file (of the decompressed stream for .gz)
	Packets int64 // packets read before it
	Err     error
}

func (e *FormatError) Error() string {
	unit := "packets"
	if e.Packets == 1 {
		unit = "packet"
	}
	return fmt.Sprintf("%s: byte offset %d (after %d %s): %v", e.Path, e.Offset, e.Packets, unit, e.Err)
}

func (e *FormatError) Unwrap() error { return e.Err }

// Reader reads one capture file.
type Reader struct {
	path    string
	closer  io.Closer
	counter *countingReader
	pcap    *pcapReader
	ng      *pcapgo.NgReader
	gzipped bool
	packets int64
	offset  int64 // classic pcap: where the next record starts
	ifaces  []Interface
}

const (
	magicMicros     = 0xa1b2c3d4
	magicNanos      = 0xa1b23c4d
	magicPCAPNG     = 0x0a0d0d0a
	pcapFileHeader  = 24
	pcapRecordHdr   = 16
	readBufferBytes = 1 << 20
)

// Open opens a capture file, classic pcap or pcapng, optionally gzipped.
func Open(path string) (*Reader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	r, err := NewReader(path, f)
	if err != nil {
		f.Close()
		return nil, err
	}
	r.closer = f
	return r, nil
}

// NewReader reads a capture from rd; name is used in errors.
func NewReader(name string, rd io.Reader) (*Reader, error) {
	r := &Reader{path: name, counter: &countingReader{r: rd}}
	br := bufio.NewReaderSize(r.counter, readBufferBytes)
	var src io.Reader = br
	if head, _ := br.Peek(2); len(head) == 2 && head[0] == 0x1f && head[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, &FormatError{Path: name, Err: fmt.Errorf("gzip: %w", err)}
		}
		r.gzipped = true
		src = bufio.NewReaderSize(zr, readBufferBytes)
	}
	b := src.(*bufio.Reader)
	head, err := b.Peek(4)
	if err != nil {
		return nil, &FormatError{Path: name, Err: fmt.Errorf("not a capture file: %d bytes", len(head))}
	}
	switch le, be := binary.LittleEndian.Uint32(head), binary.BigEndian.Uint32(head); {
	case le == magicPCAPNG:
		ng, err := pcapgo.NewNgReader(b, pcapgo.NgReaderOptions{WantMixedLinkType: true, SkipUnknownVersion: true})
		if err != nil {
			return nil, r.formatError(err)
		}
		r.ng = ng
	case le == magicMicros || le == magicNanos || be == magicMicros || be == magicNanos:
		pr, err := newPCAPReader(b)
		if err != nil {
			return nil, &FormatError{Path: name, Err: err}
		}
		r.pcap = pr
		r.offset = pcapFileHeader
		r.ifaces = []Interface{{LinkType: pr.linkType}}
	default:
		return nil, &FormatError{Path: name, Err: fmt.Errorf("not a pcap or pcapng file (magic %08x)", be)}
	}
	return r, nil
}

// Next reads the next packet into p. It returns io.EOF at the clean end of
// the file and a *FormatError when the file is damaged.
func (r *Reader) Next(p *Packet) error {
	if r.pcap != nil {
		if err := r.pcap.next(p); err != nil {
			if err == io.EOF {
				return io.EOF
			}
			return &FormatError{Path: r.path, Offset: r.offset, Packets: r.packets, Err: err}
		}
		r.offset += pcapRecordHdr + int64(len(p.Data))
		r.packets++
		return nil
	}
	data, ci, err := r.ng.ZeroCopyReadPacketData()
	if err != nil {
		if err == io.EOF {
			return io.EOF
		}
		return r.formatError(err)
	}
	r.packets++
	lt := r.ifaceLinkType(ci.InterfaceIndex)
	if len(ci.AncillaryData) > 0 {
		if t, ok := ci.AncillaryData[0].(layers.LinkType); ok {
			lt = t
		}
	}
	*p = Packet{Ts: ci.Timestamp.UnixNano(), Data: data, WireLen: ci.Length, Interface: ci.InterfaceIndex, LinkType: lt}
	return nil
}

func (r *Reader) ifaceLinkType(i int) layers.LinkType {
	if ifc, err := r.ng.Interface(i); err == nil {
		return ifc.LinkType
	}
	return layers.LinkTypeEthernet
}

// Interfaces lists the file's capture interfaces known so far (pcapng files
// may declare more as they go).
func (r *Reader) Interfaces() []Interface {
	if r.pcap != nil {
		return r.ifaces
	}
	out := make([]Interface, r.ng.NInterfaces())
	for i := range out {
		ifc, _ := r.ng.Interface(i)
		out[i] = Interface{Name: ifc.Name, LinkType: ifc.LinkType}
	}
	return out
}

// InterfaceName is the name of interface i from the file, or "".
func (r *Reader) InterfaceName(i int) string {
	if r.ng == nil {
		return ""
	}
	ifc, err := r.ng.Interface(i)
	if err != nil {
		return ""
	}
	return ifc.Name
}

// Packets is the number of packets read so far.
func (r *Reader) Packets() int64 { return r.packets }

// BytesRead is how much of the file (compressed, for .gz) has been consumed,
// for progress reports.
func (r *Reader) BytesRead() int64 { return r.counter.n }

// Close closes the file.
func (r *Reader) Close() error {
	if r.closer != nil {
		return r.closer.Close()
	}
	return nil
}

// formatError wraps a pcapng read error with the offset of the damaged block,
// found by walking the block headers from the start of the file, since the
// pcapng reader does not report positions.
func (r *Reader) formatError(err error) *FormatError {
	fe := &FormatError{Path: r.path, Packets: r.packets, Err: lowerErr(err)}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		fe.Err = errors.New("file ends inside a block (cut short)")
	}
	if !r.gzipped { // a path that is not a file (NewReader on a stream) finds nothing
		if off, why, ok := locatePCAPNGDamage(r.path); ok {
			fe.Offset, fe.Err = off, errors.New(why)
		}
	}
	return fe
}

// locatePCAPNGDamage returns the offset of the first block that is
// damaged: a header that is invalid, a block that runs past the end of the
// file, a trailer that disagrees with the header, or options that do not fit
// in their block.
func locatePCAPNGDamage(path string) (offset int64, why string, found bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, "", false
	}
	var order binary.ByteOrder = binary.LittleEndian
	for off := 0; off < len(data); {
		if len(data)-off < 12 {
			return int64(off), "file ends inside a block header (cut short)", true
		}
		typ := binary.LittleEndian.Uint32(data[off:])
		if typ == magicPCAPNG {
			// A section header says the byte order of its section.
			if binary.BigEndian.Uint32(data[off+8:]) == 0x1a2b3c4d {
				order = binary.BigEndian
			} else {
				order = binary.LittleEndian
			}
		} else {
			typ = order.Uint32(data[off:])
		}
		length := int(order.Uint32(data[off+4:]))
		switch {
		case length < 12 || length%4 != 0:
			return int64(off), fmt.Sprintf("block of type %#x claims an invalid length %d", typ, length), true
		case length > len(data)-off:
			return int64(off), fmt.Sprintf("block of %d bytes runs past the end of the file (cut short)", length), true
		case int(order.Uint32(data[off+length-4:])) != length:
			return int64(off), "block trailer disagrees with its header", true
		case !optionsFit(typ, data[off+8:off+length-4], order):
			return int64(off), fmt.Sprintf("an option runs past the end of its block (type %#x)", typ), true
		}
		off += length
	}
	return 0, "", false
}

// optionsFit checks that the options of a block body stay inside it.
func optionsFit(typ uint32, body []byte, order binary.ByteOrder) bool {
	var start int
	switch typ {
	case magicPCAPNG: // section header: byte-order magic, version, section length
		start = 16
	case 1: // interface description: link type, reserved, snap length
		start = 8
	case 5: // interface statistics: interface, timestamp
		start = 12
	case 6: // enhanced packet: interface, timestamp, captured and original length, data
		if len(body) < 20 {
			return false
		}
		start = 20 + (int(order.Uint32(body[12:]))+3)&^3
	default:
		return true
	}
	for pos := start; pos < len(body); {
		if pos < 0 || len(body)-pos < 4 {
			return pos == len(body)
		}
		code, n := order.Uint16(body[pos:]), int(order.Uint16(body[pos+2:]))
		if code == 0 { // end of options
			return true
		}
		pos += 4 + (n+3)&^3
		if pos > len(body) {
			return false
		}
	}
	return true
}

// InterfaceNameFromPath is the interface name replay uses for a file without
// one of its own: the file name without directory and extensions.
func InterfaceNameFromPath(path string) string {
	base := filepath.Base(path)
	for _, ext := range []string{".gz", ".pcapng", ".pcap", ".cap"} {
		base = strings.TrimSuffix(base, ext)
	}
	return base
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// lowerErr makes third-party error texts start in lower case, like ours.
func lowerErr(err error) error {
	s := err.Error()
	if s == "" || strings.ToLower(s[:1]) == s[:1] {
		return err
	}
	return errors.New(lower(err))
}

func lower(err error) string {
	s := err.Error()
	if s == "" {
		return s
	}
	return strings.ToLower(s[:1]) + s[1:]
}
