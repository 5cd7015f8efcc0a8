package capture

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/gopacket/gopacket/pcapgo"

	"github.com/flowsensor/flowsensor/internal/corpus"
)

// TestPCAPNGMatchesPcapgo reads every corpus capture as pcapng with this
// package's reader and with gopacket's pcapgo, and requires the same packets:
// time, bytes, wire length, interface and link type. Classic pcap files are
// converted with editcap first, so every link type and the large captures
// are covered too; each converted file must also give exactly the packets of
// its original.
func TestPCAPNGMatchesPcapgo(t *testing.T) {
	corpus.EachCapture(t, func(t *testing.T, path string) {
		ng := path
		if !strings.HasSuffix(path, ".pcapng") {
			editcap := corpus.RequireTool(t, "editcap", "apt-get install tshark")
			ng = filepath.Join(t.TempDir(), filepath.Base(path)+"ng")
			if out, err := exec.Command(editcap, "-F", "pcapng", path, ng).CombinedOutput(); err != nil {
				t.Fatalf("editcap: %v: %s", err, out)
			}
		}
		ours := readAll(t, ng)
		theirs := readPcapgo(t, ng)
		comparePackets(t, "pcapgo", ours, theirs)
		if ng != path {
			comparePackets(t, "the classic pcap original", ours, readAll(t, path))
		}
	})
}

type packetCopy struct {
	Packet
	name string // of the interface
}

func readAll(t *testing.T, path string) []packetCopy {
	t.Helper()
	r, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out []packetCopy
	var p Packet
	for {
		err := r.Next(&p)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		c := packetCopy{Packet: p, name: r.InterfaceName(p.Interface)}
		c.Data = bytes.Clone(p.Data)
		out = append(out, c)
	}
}

func readPcapgo(t *testing.T, path string) []packetCopy {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewNgReader(f, pcapgo.NgReaderOptions{WantMixedLinkType: true})
	if err != nil {
		t.Fatal(err)
	}
	var out []packetCopy
	for {
		data, ci, err := r.ReadPacketData()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		ifc, err := r.Interface(ci.InterfaceIndex)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, packetCopy{
			Packet: Packet{Ts: ci.Timestamp.UnixNano(), Data: data, WireLen: ci.Length, Interface: ci.InterfaceIndex, LinkType: LinkType(ifc.LinkType)},
			name:   ifc.Name,
		})
	}
}

func comparePackets(t *testing.T, what string, ours, theirs []packetCopy) {
	t.Helper()
	if len(ours) != len(theirs) {
		t.Fatalf("%d packets, %s %d", len(ours), what, len(theirs))
	}
	for i := range ours {
		a, b := ours[i], theirs[i]
		if a.Ts != b.Ts || a.WireLen != b.WireLen || a.LinkType != b.LinkType || !bytes.Equal(a.Data, b.Data) {
			t.Fatalf("packet %d: ts %d len %d link %d caplen %d; %s: ts %d len %d link %d caplen %d",
				i+1, a.Ts, a.WireLen, a.LinkType, len(a.Data), what, b.Ts, b.WireLen, b.LinkType, len(b.Data))
		}
		if what == "pcapgo" && (a.Interface != b.Interface || a.name != b.name) {
			t.Fatalf("packet %d: interface %d %q, %s %d %q", i+1, a.Interface, a.name, what, b.Interface, b.name)
		}
	}
}

// ngWriter builds pcapng files block by block, in either byte order.
type ngWriter struct {
	order interface {
		binary.ByteOrder
		binary.AppendByteOrder
	}
	buf bytes.Buffer
}

func (w *ngWriter) block(typ uint32, body []byte) int {
	off := w.buf.Len()
	for len(body)%4 != 0 {
		body = append(body, 0)
	}
	n := uint32(12 + len(body))
	w.buf.Write(w.order.AppendUint32(w.order.AppendUint32(nil, typ), n))
	w.buf.Write(body)
	w.buf.Write(w.order.AppendUint32(nil, n))
	return off
}

func (w *ngWriter) section(major uint16) int {
	b := w.order.AppendUint32(nil, ngByteOrderMagic)
	b = w.order.AppendUint16(b, major)
	b = w.order.AppendUint16(b, 0)
	b = w.order.AppendUint64(b, ^uint64(0)) // section length unknown
	return w.block(ngSectionHeader, b)
}

func (w *ngWriter) option(b []byte, code uint16, value []byte) []byte {
	b = w.order.AppendUint16(w.order.AppendUint16(b, code), uint16(len(value)))
	b = append(b, value...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func (w *ngWriter) iface(lt LinkType, snaplen uint32, name string, tsresol byte, tsoffset int64) int {
	b := w.order.AppendUint16(nil, uint16(lt))
	b = w.order.AppendUint16(b, 0)
	b = w.order.AppendUint32(b, snaplen)
	b = w.option(b, ngOptIfName, []byte(name))
	if tsresol != 0 {
		b = w.option(b, ngOptTsResol, []byte{tsresol})
	}
	if tsoffset != 0 {
		b = w.option(b, ngOptTsOffset, w.order.AppendUint64(nil, uint64(tsoffset)))
	}
	b = w.option(b, ngOptEnd, nil)
	return w.block(ngInterfaceDesc, b)
}

func (w *ngWriter) packet(id uint32, ts uint64, data []byte, wirelen uint32) int {
	b := w.order.AppendUint32(nil, id)
	b = w.order.AppendUint32(b, uint32(ts>>32))
	b = w.order.AppendUint32(b, uint32(ts))
	b = w.order.AppendUint32(b, uint32(len(data)))
	b = w.order.AppendUint32(b, wirelen)
	return w.block(ngEnhancedPacket, append(b, data...))
}

func (w *ngWriter) obsolete(id uint16, ts uint64, data []byte) int {
	b := w.order.AppendUint16(nil, id)
	b = w.order.AppendUint16(b, 0) // drops
	b = w.order.AppendUint32(b, uint32(ts>>32))
	b = w.order.AppendUint32(b, uint32(ts))
	b = w.order.AppendUint32(b, uint32(len(data)))
	b = w.order.AppendUint32(b, uint32(len(data)))
	return w.block(ngObsoletePacket, append(b, data...))
}

func (w *ngWriter) simple(data []byte, wirelen uint32) int {
	return w.block(ngSimplePacket, append(w.order.AppendUint32(nil, wirelen), data...))
}

// TestPCAPNGBlocks covers what the corpus lacks: several sections in both
// byte orders, time resolutions and offsets, simple and obsolete packet
// blocks, and blocks the reader skips.
func TestPCAPNGBlocks(t *testing.T) {
	frame := []byte("0123456789abcdef0123")
	le := &ngWriter{order: binary.LittleEndian}
	le.section(1)
	le.iface(LinkTypeEthernet, 0, "eth0", 9, 0)                  // nanoseconds
	le.iface(LinkTypeLinuxSLL, 0, "any", 0x80|20, 1_700_000_000) // 2^-20 s, plus an offset in seconds
	le.packet(0, 1_700_000_000_123_456_789, frame, 60)
	le.block(5, make([]byte, 20)) // interface statistics: skipped
	le.packet(1, 3<<20|1<<19, frame[:8], 8)
	le.block(0x40000bad, []byte("custom, copied"))     // custom block: skipped
	le.simple(frame, 200)                              // interface 0, time of the previous packet
	le.packet(0, 1_700_000_001_000_000_000, frame, 10) // more captured than on the wire: kept as written

	be := &ngWriter{order: binary.BigEndian}
	be.section(1)
	be.iface(linkTypeRaw12, 10, "tun0", 0, 0) // microseconds, snap length 10
	be.obsolete(0, 1_600_000_000_000_001, frame)
	be.simple(frame, 20) // cut to the snap length

	data := append(le.buf.Bytes(), be.buf.Bytes()...)
	r, err := NewReader("blocks", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		ts      int64
		caplen  int
		wirelen int
		iface   int
		lt      LinkType
	}
	for i, w := range []want{
		{1_700_000_000_123_456_789, 20, 60, 0, LinkTypeEthernet},
		{1_700_000_003_500_000_000, 8, 8, 1, LinkTypeLinuxSLL},
		{1_700_000_003_500_000_000, 20, 200, 0, LinkTypeEthernet},
		{1_700_000_001_000_000_000, 20, 10, 0, LinkTypeEthernet},
		{1_600_000_000_000_001_000, 20, 20, 2, linkTypeRaw12},
		{1_600_000_000_000_001_000, 10, 20, 2, linkTypeRaw12},
	} {
		var p Packet
		if err := r.Next(&p); err != nil {
			t.Fatalf("packet %d: %v", i+1, err)
		}
		if got := (want{p.Ts, len(p.Data), p.WireLen, p.Interface, p.LinkType}); got != w {
			t.Errorf("packet %d: %+v, want %+v", i+1, got, w)
		}
	}
	var p Packet
	if err := r.Next(&p); err != io.EOF {
		t.Fatalf("after the last packet: %v", err)
	}
	names := []string{}
	for _, ifc := range r.Interfaces() {
		names = append(names, ifc.Name)
	}
	if strings.Join(names, ",") != "eth0,any,tun0" || r.InterfaceName(2) != "tun0" || r.InterfaceName(3) != "" {
		t.Errorf("interfaces %v", names)
	}
}

// TestPCAPNGLargeBlocks: a block larger than the read buffer is read and
// skipped; a damaged length that claims more than the file holds is reported
// without allocating it first.
func TestPCAPNGLargeBlocks(t *testing.T) {
	w := &ngWriter{order: binary.LittleEndian}
	w.section(1)
	w.iface(LinkTypeEthernet, 0, "eth0", 0, 0)
	w.block(0x40000bad, make([]byte, 3*readBufferBytes/2)) // a large custom block
	w.packet(0, 1e6, make([]byte, 60), 60)
	off := w.packet(0, 2e6, make([]byte, 60), 60)
	binary.LittleEndian.PutUint32(w.buf.Bytes()[off+4:], maxBlock) // claims 16 MiB
	r, err := NewReader("large", bytes.NewReader(w.buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var p Packet
	if err := r.Next(&p); err != nil || p.Ts != 1e9 {
		t.Fatalf("packet after the large block: ts %d, %v", p.Ts, err)
	}
	var ms1, ms2 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	err = r.Next(&p)
	runtime.ReadMemStats(&ms2)
	var fe *FormatError
	if !errors.As(err, &fe) || fe.Offset != int64(off) || !strings.Contains(err.Error(), "cut short") {
		t.Fatalf("got %v, want a cut-short block at byte offset %d", err, off)
	}
	if grew := ms2.TotalAlloc - ms1.TotalAlloc; grew > maxBlock/4 {
		t.Errorf("reading a block that claims %d bytes allocated %d", maxBlock, grew)
	}
}

// TestPCAPNGDamage: each kind of damage is reported at its block's offset,
// after the packets before it.
func TestPCAPNGDamage(t *testing.T) {
	frame := make([]byte, 20)
	for _, tc := range []struct {
		name   string
		build  func(w *ngWriter) int // returns the damaged block's offset
		reason string
	}{
		{"unknown interface", func(w *ngWriter) int { return w.packet(1, 0, frame, 20) }, "packet of interface 1, but the section describes 1"},
		{"version 2 section", func(w *ngWriter) int { return w.section(2) }, "pcapng version 2.0"},
		{"simple packet without interface", func(w *ngWriter) int { w.section(1); return w.simple(frame, 20) }, "packet of interface 0, but the section describes 0"},
		{"bad time resolution", func(w *ngWriter) int { return w.iface(LinkTypeEthernet, 0, "x", 20, 0) }, "time resolution 10^-20"},
		{"length not a multiple of 4", func(w *ngWriter) int {
			off := w.packet(0, 0, frame, 20)
			binary.LittleEndian.PutUint32(w.buf.Bytes()[off+4:], 30)
			return off
		}, "invalid length 30"},
		{"trailer", func(w *ngWriter) int {
			off := w.packet(0, 0, frame, 20)
			b := w.buf.Bytes()
			binary.LittleEndian.PutUint32(b[len(b)-4:], 12)
			return off
		}, "trailer disagrees"},
		{"cut short", func(w *ngWriter) int {
			off := w.packet(0, 0, frame, 20)
			w.buf.Truncate(w.buf.Len() - 3)
			return off
		}, "file ends inside a block of 52 bytes (cut short)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &ngWriter{order: binary.LittleEndian}
			w.section(1)
			w.iface(LinkTypeEthernet, 0, "eth0", 0, 0)
			w.packet(0, 1e6, frame, 20)
			off := tc.build(w)
			r, err := NewReader("damaged", bytes.NewReader(w.buf.Bytes()))
			if err != nil {
				t.Fatal(err)
			}
			var p Packet
			if err := r.Next(&p); err != nil {
				t.Fatalf("first packet: %v", err)
			}
			err = r.Next(&p)
			var fe *FormatError
			if !errors.As(err, &fe) || fe.Offset != int64(off) || fe.Packets != 1 || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("got %v, want %q at byte offset %d after 1 packet", err, tc.reason, off)
			}
		})
	}
}
