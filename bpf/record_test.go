package bpf

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// TestRecordGoldenBytes pins the memory layout of struct fs_record. If this
// fails, the C header and the Go mirror disagree, or someone moved a field.
func TestRecordGoldenBytes(t *testing.T) {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("golden bytes are written for little-endian hosts")
	}
	r := Record{
		Ts:          0x0102030405060708,
		Ifindex:     0x11121314,
		WireLen:     0x21222324,
		FragID:      0x31323334,
		SrcPort:     0x4142,
		DstPort:     0x5152,
		VLANID:      0x0061,
		InnerVLANID: 0x0071,
		Protocol:    0x81,
		IPVersion:   0x82,
		TCPFlags:    0x83,
		DSCP:        0x84,
		FragFlags:   0x85,
		Encap:       0x86,
		VLANDepth:   0x87,
		Flags:       0x88,
	}
	for i := range r.SrcAddr {
		r.SrcAddr[i] = 0xa0 + byte(i)
		r.DstAddr[i] = 0xc0 + byte(i)
	}
	golden := []byte{
		0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // 0 ts_ns
		0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, // 8 src_addr
		0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf,
		0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, // 24 dst_addr
		0xc8, 0xc9, 0xca, 0xcb, 0xcc, 0xcd, 0xce, 0xcf,
		0x14, 0x13, 0x12, 0x11, // 40 ifindex
		0x24, 0x23, 0x22, 0x21, // 44 wire_len
		0x34, 0x33, 0x32, 0x31, // 48 frag_id
		0x42, 0x41, // 52 src_port
		0x52, 0x51, // 54 dst_port
		0x61, 0x00, // 56 vlan_id
		0x71, 0x00, // 58 inner_vlan_id
		0x81,                   // 60 protocol
		0x82,                   // 61 ip_version
		0x83,                   // 62 tcp_flags
		0x84,                   // 63 dscp
		0x85,                   // 64 frag_flags
		0x86,                   // 65 encap
		0x87,                   // 66 vlan_depth
		0x88,                   // 67 flags
		0x00, 0x00, 0x00, 0x00, // 68 _pad
	}
	if got := r.Bytes(); !bytes.Equal(got, golden) {
		t.Fatalf("layout changed:\n got %x\nwant %x", got, golden)
	}
	var back Record
	if err := DecodeRecord(golden, &back); err != nil {
		t.Fatal(err)
	}
	if back != r {
		t.Fatalf("round trip: got %+v, want %+v", back, r)
	}
}

func TestDecodeRecordShort(t *testing.T) {
	var r Record
	if err := DecodeRecord(make([]byte, RecordSize-1), &r); err == nil {
		t.Fatal("short sample decoded without error")
	}
}

func TestRecordAddrs(t *testing.T) {
	var r Record
	r.SetAddrs(netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"))
	if r.IPVersion != 4 || r.Src().String() != "10.0.0.1" || r.Dst().String() != "10.0.0.2" {
		t.Fatalf("v4: %+v %v %v", r, r.Src(), r.Dst())
	}
	if r.SrcAddr[10] != 0xff || r.SrcAddr[11] != 0xff {
		t.Fatalf("v4 not mapped: %x", r.SrcAddr)
	}
	r.SetAddrs(netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("::ffff:1.2.3.4"))
	if r.IPVersion != 6 || r.Dst().String() != "::ffff:1.2.3.4" {
		t.Fatalf("v6: %+v %v", r, r.Dst())
	}
}

func TestCounterNames(t *testing.T) {
	seen := map[string]bool{}
	for c := Counter(0); c < NumCounters; c++ {
		n := c.String()
		if n == "" || seen[n] {
			t.Fatalf("counter %d: empty or duplicate name %q", c, n)
		}
		seen[n] = true
	}
	var c Counters
	c[CounterNonIP], c[CounterRingbufFull], c[CounterEmitted] = 2, 3, 5
	if c.Unrecorded() != 5 {
		t.Fatalf("Unrecorded = %d", c.Unrecorded())
	}
}

func BenchmarkDecodeRecord(b *testing.B) {
	sample := make([]byte, RecordSize)
	var r Record
	b.SetBytes(RecordSize)
	for b.Loop() {
		if err := DecodeRecord(sample, &r); err != nil {
			b.Fatal(err)
		}
	}
}
