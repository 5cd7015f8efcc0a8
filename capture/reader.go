// Package capture reads packet capture files (classic pcap in every byte order
// and precision, pcapng with several interfaces and link types, either one
// gzip-compressed) and turns their packets into the records the XDP program
// would have produced, through bpf.Decode. It is the offline source of the
// pipeline: replay and watched folders.
package capture

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Packet is one captured packet. Data is valid until the next call to Next.
type Packet struct {
	Ts        int64  // Unix nanoseconds
	Data      []byte // the captured bytes, starting with the link header
	WireLen   int    // length on the wire as the file records it: usually at least len(Data), not always
	Interface int    // the capture interface within the file
	LinkType  LinkType
}

// Interface describes one capture interface of a file.
type Interface struct {
	Name     string // from the pcapng interface block; empty when the file has none
	LinkType LinkType
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
	ng      *pcapngReader
	gzipped bool
	packets int64
	offset  int64 // classic pcap: where the next record starts
	ifaces  []Interface
}

const (
	magicMicros     = 0xa1b2c3d4
	magicNanos      = 0xa1b23c4d
	magicModified   = 0xa1b2cd34 // Alexey Kuznetzov's patched libpcap: longer record headers
	magicPCAPNG     = 0x0a0d0d0a
	pcapFileHeader  = 24
	pcapRecordHdr   = 16
	readBufferBytes = 256 << 10
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
		ng, err := newPCAPNGReader(b)
		if err != nil {
			return nil, r.formatError(err)
		}
		r.ng = ng
	case le == magicMicros || le == magicNanos || le == magicModified ||
		be == magicMicros || be == magicNanos || be == magicModified:
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
		r.offset += int64(r.pcap.recordHdr + len(p.Data))
		r.packets++
		return nil
	}
	if err := r.ng.next(p); err != nil {
		if err == io.EOF {
			return io.EOF
		}
		return r.formatError(err)
	}
	r.packets++
	return nil
}

// Interfaces lists the file's capture interfaces known so far (pcapng files
// may declare more as they go).
func (r *Reader) Interfaces() []Interface {
	if r.pcap != nil {
		return r.ifaces
	}
	out := make([]Interface, len(r.ng.ifaces))
	for i, ifc := range r.ng.ifaces {
		out[i] = ifc.Interface
	}
	return out
}

// InterfaceName is the name of interface i from the file, or "".
func (r *Reader) InterfaceName(i int) string {
	if r.ng == nil || i < 0 || i >= len(r.ng.ifaces) {
		return ""
	}
	return r.ng.ifaces[i].Name
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

// formatError wraps a pcapng read error with the offset of its block.
func (r *Reader) formatError(err error) *FormatError {
	fe := &FormatError{Path: r.path, Packets: r.packets, Err: err}
	var be *blockError
	if errors.As(err, &be) {
		fe.Offset, fe.Err = be.offset, be.err
	}
	return fe
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

// readN returns the next n bytes of br: inside its buffer when they fit (no
// copy; valid until the next read), else read into *big, which grows with
// what arrives, so that a damaged length does not allocate what the file
// does not hold. Fewer than n bytes come back with the error that stopped
// the read.
func readN(br *bufio.Reader, n int, big *[]byte) ([]byte, error) {
	if n <= br.Size() {
		b, err := br.Peek(n)
		if err == nil {
			_, _ = br.Discard(n)
		}
		return b, err
	}
	buf := bytes.NewBuffer((*big)[:0])
	_, err := io.CopyN(buf, br, int64(n))
	*big = buf.Bytes()
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return *big, err
}

// shortRead explains a read that came up short: the error of the layer
// below (a damaged gzip stream, an I/O error) when there is one, else a file
// cut short inside what.
func shortRead(err error, what string) error {
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return err
	}
	return fmt.Errorf("file ends inside %s (cut short)", what)
}
