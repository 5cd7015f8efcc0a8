package aggregator

import (
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/flowsensor/flowsensor/bpf"
	"github.com/flowsensor/flowsensor/internal/corpus"
)

// TestCommunityIDMatchesTShark computes the Community ID of every packet that
// tshark gave one in the corpus oracle tables, from the same tuple, and
// requires the same string: tshark's implementation is independent of ours.
func TestCommunityIDMatchesTShark(t *testing.T) {
	dir, _ := corpus.Dir()
	captures, err := corpus.Captures(dir)
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, c := range captures {
		rows, err := corpus.TSharkPackets(c)
		if err != nil {
			continue // no table: a corrupt capture tshark could not read
		}
		for _, row := range rows {
			want := row["communityid"]
			r, ok := tupleOf(row)
			if want == "" || !ok {
				continue
			}
			k, _ := keyOf(&r)
			if got := communityID(&k); got != want {
				t.Errorf("%s frame %s (%s): community id %s, tshark %s", filepath.Base(c), row["frame.number"], row["frame.protocols"], got, want)
			}
			checked++
		}
	}
	if checked == 0 {
		t.Fatal("no packet with a Community ID found in the corpus tables")
	}
	t.Logf("%d packets checked", checked)
}

// tupleOf builds a record from the innermost IP layer of a tshark row.
func tupleOf(row corpus.TSharkRow) (bpf.Record, bool) {
	var r bpf.Record
	protos := strings.Split(row["frame.protocols"], ":")
	inner, layers := "", 0
	for _, p := range protos {
		if p == "ip" || p == "ipv6" {
			inner = p
			layers++
		}
	}
	// Tunnels (GTP, L2TP, VXLAN, GRE): tshark hashes one of the inner tuples,
	// which differs between dissectors; flowsensor's flows are the outer ones.
	if layers != 1 {
		return r, false
	}
	// Non-first fragments, and ICMP errors quoting another packet, are left out.
	if row.Last("ip.frag_offset") != "" && row.Last("ip.frag_offset") != "0" || strings.Contains(row["frame.protocols"], "icmp:ip") ||
		strings.Contains(row["frame.protocols"], "icmpv6:ipv6") || strings.Contains(row["frame.protocols"], "ipv6.fraghdr") {
		return r, false
	}
	var src, dst string
	var proto int
	switch inner {
	case "ip":
		src, dst = row.Last("ip.src"), row.Last("ip.dst")
		proto, _ = strconv.Atoi(row.Last("ip.proto"))
	case "ipv6":
		src, dst = row.Last("ipv6.src"), row.Last("ipv6.dst")
		proto, _ = strconv.Atoi(row.Last("ipv6.nxt"))
	default:
		return r, false
	}
	s, err1 := netip.ParseAddr(src)
	d, err2 := netip.ParseAddr(dst)
	if err1 != nil || err2 != nil {
		return r, false
	}
	r.SetAddrs(s, d)
	num := func(f string) uint16 { n, _ := strconv.Atoi(row.Last(f)); return uint16(n) }
	switch {
	case row["tcp.srcport"] != "":
		proto, r.SrcPort, r.DstPort = bpf.ProtoTCP, num("tcp.srcport"), num("tcp.dstport")
	case row["udp.srcport"] != "":
		proto, r.SrcPort, r.DstPort = bpf.ProtoUDP, num("udp.srcport"), num("udp.dstport")
	case row["icmp.type"] != "":
		proto, r.SrcPort, r.DstPort = bpf.ProtoICMP, num("icmp.type"), num("icmp.code")
	case row["icmpv6.type"] != "":
		proto, r.SrcPort, r.DstPort = bpf.ProtoICMPv6, num("icmpv6.type"), num("icmpv6.code")
	case proto == 0 || proto == 43 || proto == 44 || proto == 60:
		return r, false // the upper protocol is behind IPv6 extension headers
	}
	r.Protocol = uint8(proto)
	return r, true
}
