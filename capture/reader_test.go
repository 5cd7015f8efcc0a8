package capture

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/flowsensor/flowsensor/bpf"
	"github.com/flowsensor/flowsensor/internal/corpus"
)

// TestReaderMatchesTShark reads every corpus capture and compares each
// packet's timestamp, wire length and captured length with tshark's table.
func TestReaderMatchesTShark(t *testing.T) {
	corpus.EachCapture(t, func(t *testing.T, path string) {
		rows, err := corpus.TSharkPackets(path)
		if err != nil {
			t.Skipf("no tshark table: %v", err)
		}
		r, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		var p Packet
		for i := 0; ; i++ {
			err := r.Next(&p)
			if err == io.EOF {
				if i != len(rows) {
					t.Fatalf("read %d packets, tshark %d", i, len(rows))
				}
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if i >= len(rows) {
				t.Fatalf("more packets than tshark's %d", len(rows))
			}
			row := rows[i]
			if strconv.Itoa(p.WireLen) != row["frame.len"] || strconv.Itoa(len(p.Data)) != row["frame.cap_len"] {
				t.Fatalf("packet %d: len %d caplen %d, tshark %s %s", i+1, p.WireLen, len(p.Data), row["frame.len"], row["frame.cap_len"])
			}
			if ts, _ := strconv.ParseFloat(row["frame.time_epoch"], 64); math.Abs(float64(p.Ts)/1e9-ts) > 1e-6 {
				t.Fatalf("packet %d: time %d, tshark %s", i+1, p.Ts, row["frame.time_epoch"])
			}
			if row["frame.interface_id"] != "" && row["frame.interface_id"] != strconv.Itoa(p.Interface) {
				t.Fatalf("packet %d: interface %d, tshark %s", i+1, p.Interface, row["frame.interface_id"])
			}
			if !Supported(p.LinkType) {
				t.Fatalf("packet %d: link type %v not supported", i+1, p.LinkType)
			}
		}
	})
}

func TestCorruptFiles(t *testing.T) {
	dir := filepath.Join(corpus.RepoRoot(), "testdata", "corpus")
	// Cut short 7 bytes into the second record header: one packet, then an
	// error at the second record (24-byte file header + 16 + 200).
	r, err := Open(filepath.Join(dir, "corrupt-cut-short.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	var p Packet
	if err := r.Next(&p); err != nil {
		t.Fatal(err)
	}
	err = r.Next(&p)
	var fe *FormatError
	if !errors.As(err, &fe) || fe.Offset != 240 || fe.Packets != 1 || !strings.Contains(err.Error(), "corrupt-cut-short.pcap: byte offset 240") {
		t.Fatalf("cut short: %v", err)
	}
	r.Close()

	_, err = Open(filepath.Join(dir, "corrupt-pcap-bad-version.pcap"))
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), "corrupt-pcap-bad-version.pcap: byte offset 0") || !strings.Contains(err.Error(), "major version 1") {
		t.Fatalf("bad version: %v", err)
	}

	_, err = NewReader("empty", bytes.NewReader(nil))
	if err == nil || !strings.Contains(err.Error(), "not a capture file") {
		t.Fatalf("empty: %v", err)
	}
	_, err = NewReader("text", strings.NewReader("hello, world"))
	if err == nil || !strings.Contains(err.Error(), "not a pcap or pcapng file") {
		t.Fatalf("text: %v", err)
	}
}

// TestPCAPNGDamageOffset cuts a pcapng file inside its third block and
// checks that the error names that block's offset.
func TestPCAPNGDamageOffset(t *testing.T) {
	src := filepath.Join(corpus.RepoRoot(), "testdata", "corpus", "qinq-8021ad.pcapng")
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	// Walk to the start of the last block (the single packet).
	var offs []int
	for off := 0; off < len(data); {
		offs = append(offs, off)
		off += int(uint32(data[off+4]) | uint32(data[off+5])<<8 | uint32(data[off+6])<<16 | uint32(data[off+7])<<24)
	}
	last := offs[len(offs)-1]
	cut := filepath.Join(t.TempDir(), "cut.pcapng")
	if err := os.WriteFile(cut, data[:last+20], 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := Open(cut)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var p Packet
	for err = r.Next(&p); err == nil; err = r.Next(&p) {
	}
	var fe *FormatError
	if !errors.As(err, &fe) || fe.Offset != int64(last) {
		t.Fatalf("error %v, want one at byte offset %d", err, last)
	}
}

// TestPCAPNGOptionTooLong damages an option length inside the interface
// block and checks the error points at that block.
func TestPCAPNGOptionTooLong(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(corpus.RepoRoot(), "testdata", "corpus", "qinq-8021ad.pcapng"))
	if err != nil {
		t.Fatal(err)
	}
	const idb = 0x88 // the section header is 0x88 bytes long
	if data[idb] != 1 || data[idb+0x10] != 2 {
		t.Fatalf("unexpected layout: % x", data[idb:idb+0x18])
	}
	data[idb+0x12] = 0xf0 // if_name length 0x39 -> 0xf0, past the block end
	path := filepath.Join(t.TempDir(), "option.pcapng")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	var fe *FormatError
	r, err := Open(path)
	if err == nil {
		defer r.Close()
		var p Packet
		for err = r.Next(&p); err == nil; err = r.Next(&p) {
		}
	}
	if !errors.As(err, &fe) || fe.Offset != idb {
		t.Fatalf("error %v, want one at byte offset %d", err, idb)
	}
}

func TestL3(t *testing.T) {
	ip4 := []byte{0x45, 0, 0, 20}
	ip6 := []byte{0x60, 0, 0, 0}
	for _, tc := range []struct {
		lt        LinkType
		data      []byte
		etherType uint16
		ok        bool
	}{
		{LinkTypeNull, append([]byte{2, 0, 0, 0}, ip4...), bpf.EtherTypeIPv4, true},  // little-endian host
		{LinkTypeNull, append([]byte{0, 0, 0, 2}, ip4...), bpf.EtherTypeIPv4, true},  // big-endian host
		{LinkTypeNull, append([]byte{30, 0, 0, 0}, ip6...), bpf.EtherTypeIPv6, true}, // Darwin
		{LinkTypeNull, append([]byte{28, 0, 0, 0}, ip6...), bpf.EtherTypeIPv6, true}, // FreeBSD
		{LinkTypeNull, append([]byte{24, 0, 0, 0}, ip6...), bpf.EtherTypeIPv6, true}, // OpenBSD
		{LinkTypeNull, append([]byte{10, 0, 0, 0}, ip6...), bpf.EtherTypeIPv6, true}, // Linux
		{LinkTypeNull, append([]byte{7, 0, 0, 0}, ip4...), 0, true},                  // OSI: not IP
		{linkTypeLoop, append([]byte{0, 0, 0, 24}, ip6...), bpf.EtherTypeIPv6, true},
		{LinkTypeNull, []byte{2, 0}, 0, false},
		{LinkTypeLinuxSLL, append(append(make([]byte, 14), 0x08, 0x00), ip4...), bpf.EtherTypeIPv4, true},
		{LinkTypeLinuxSLL, append(append(make([]byte, 14), 0x00, 0x04), ip4...), 0, true}, // 802.2 LLC
		{linkTypeSLL2, append(append([]byte{0x86, 0xdd}, make([]byte, 18)...), ip6...), bpf.EtherTypeIPv6, true},
		{linkTypeIPv4, ip4, bpf.EtherTypeIPv4, true},
		{LinkTypeRaw, ip6, bpf.EtherTypeIPv6, true},
		{linkTypeRaw14, ip4, bpf.EtherTypeIPv4, true},
		{linkTypePPP, append([]byte{0xff, 0x03, 0x00, 0x21}, ip4...), bpf.EtherTypeIPv4, true}, // HDLC-like framing
		{linkTypePPP, append([]byte{0x00, 0x57}, ip6...), bpf.EtherTypeIPv6, true},             // without
		{linkTypePPP, append([]byte{0x21}, ip4...), bpf.EtherTypeIPv4, true},                   // compressed protocol field
		{linkTypePPP, []byte{0xc0, 0x21, 1, 1}, 0, true},                                       // LCP
		{linkTypePPP, []byte{0xff, 0x03, 0x00}, 0, false},
		{linkTypePPPHDLC, append([]byte{0xff, 0x03, 0x02, 0x81}, 0, 0, 0x11, 0x40), 0x8847, true}, // MPLS
		{linkTypeCHDLC, append([]byte{0x0f, 0x00, 0x86, 0xdd}, ip6...), bpf.EtherTypeIPv6, true},
	} {
		et, _, ok, supported := L3(tc.lt, tc.data)
		if !supported || ok != tc.ok || et != tc.etherType {
			t.Errorf("%v % x: ethertype %#x ok %v supported %v, want %#x %v", tc.lt, tc.data, et, ok, supported, tc.etherType, tc.ok)
		}
	}
	if _, _, _, supported := L3(LinkType(105), nil); supported {
		t.Error("802.11 reported as supported")
	}
}

func TestInterfaceNameFromPath(t *testing.T) {
	for in, want := range map[string]string{"/x/eth0.pcap": "eth0", "eth1-0001.pcapng.gz": "eth1-0001", "cap": "cap"} {
		if got := InterfaceNameFromPath(in); got != want {
			t.Errorf("%s: %s, want %s", in, got, want)
		}
	}
}

// FuzzReader: no input makes the reader panic or loop; every packet it
// returns decodes. Seeded with the small corpus captures.
func FuzzReader(f *testing.F) {
	files, _ := corpus.Captures(filepath.Join(corpus.RepoRoot(), "testdata", "corpus"))
	for _, path := range files {
		if data, err := os.ReadFile(path); err == nil && len(data) < 64<<10 {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := NewReader("fuzz", bytes.NewReader(data))
		if err != nil {
			return
		}
		var p Packet
		var rec bpf.Record
		for i := 0; i <= len(data); i++ {
			err := r.Next(&p)
			if err != nil {
				if err != io.EOF && !strings.Contains(err.Error(), "fuzz") {
					t.Fatalf("error does not name the file: %v", err)
				}
				return
			}
			if len(p.Data) > len(data) {
				t.Fatalf("packet of %d bytes from %d bytes of input", len(p.Data), len(data))
			}
			Decode(&p, &rec)
		}
		t.Fatal(fmt.Sprintf("more packets than input bytes (%d)", len(data)))
	})
}

// TestPCAPVariants converts corpus captures with editcap to the other
// classic pcap flavours tshark reads (nanosecond, and the two "modified"
// formats with longer record headers) and requires the same packets as the
// original.
func TestPCAPVariants(t *testing.T) {
	editcap := corpus.RequireTool(t, "editcap", "apt-get install tshark")
	for _, name := range []string{"vlan11-dns-icmp-arp.pcap", "tcp-dns-arp-http-google.pcap", "ipv4-frags-rawip4-dns.pcap"} {
		orig := filepath.Join(corpus.LocalDir(), name)
		want := readAll(t, orig)
		for _, format := range []string{"nsecpcap", "modpcap", "suse6_3pcap"} {
			t.Run(name+"/"+format, func(t *testing.T) {
				conv := filepath.Join(t.TempDir(), name)
				if out, err := exec.Command(editcap, "-F", format, orig, conv).CombinedOutput(); err != nil {
					t.Fatalf("editcap: %v: %s", err, out)
				}
				comparePackets(t, "the original", readAll(t, conv), want)
			})
		}
	}
}

// TestPCAPCapturedBeyondWire: a record that claims more captured bytes than
// wire bytes (pypacker writes Linux SLL files so) is read as written, as
// Wireshark reads it.
func TestPCAPCapturedBeyondWire(t *testing.T) {
	le := binary.LittleEndian
	file := le.AppendUint32(nil, magicMicros)
	file = le.AppendUint16(file, 2)
	file = le.AppendUint16(file, 4)
	file = append(file, make([]byte, 8)...)
	file = le.AppendUint32(file, 65535)
	file = le.AppendUint32(file, uint32(LinkTypeLinuxSLL))
	file = le.AppendUint32(file, 1_700_000_000)
	file = le.AppendUint32(file, 5)
	file = le.AppendUint32(file, 40) // captured
	file = le.AppendUint32(file, 24) // on the wire
	file = append(file, make([]byte, 40)...)
	r, err := NewReader("beyond", bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	var p Packet
	if err := r.Next(&p); err != nil {
		t.Fatal(err)
	}
	if len(p.Data) != 40 || p.WireLen != 24 || p.Ts != 1_700_000_000_000_005_000 {
		t.Fatalf("caplen %d wirelen %d ts %d", len(p.Data), p.WireLen, p.Ts)
	}
	if err := r.Next(&p); err != io.EOF {
		t.Fatalf("after the record: %v", err)
	}
}

// TestPCAPRecordTooLarge: a record header claiming more than 256 KiB is
// damage at its offset, even under a larger snap length, and is reported
// without reading (or allocating) what it claims.
func TestPCAPRecordTooLarge(t *testing.T) {
	le := binary.LittleEndian
	file := le.AppendUint32(nil, magicMicros)
	file = le.AppendUint16(file, 2)
	file = le.AppendUint16(file, 4)
	file = append(file, make([]byte, 8)...)
	file = le.AppendUint32(file, 1<<30) // snap length
	file = le.AppendUint32(file, uint32(LinkTypeEthernet))
	file = append(file, make([]byte, 8)...)
	file = le.AppendUint32(file, 1<<30) // captured
	file = le.AppendUint32(file, 1<<30) // on the wire
	r, err := NewReader("huge", bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	var p Packet
	err = r.Next(&p)
	var fe *FormatError
	if !errors.As(err, &fe) || fe.Offset != 24 || !strings.Contains(err.Error(), "more than the 262144 a packet can have") {
		t.Fatalf("got %v, want damage at byte offset 24", err)
	}
}
