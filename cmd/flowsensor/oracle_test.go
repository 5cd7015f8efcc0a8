package main

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flowsensor/flowsensor/internal/corpus"
	"github.com/flowsensor/flowsensor/internal/lab"
	"github.com/flowsensor/flowsensor/sinks/parquet"
)

// replayForTest runs `flowsensor replay` in-process with timeouts long enough
// that no flow is split by time, and returns the rows it wrote.
func replayForTest(t *testing.T, paths ...string) ([]parquet.Row, string, error) {
	t.Helper()
	return replayForTestIn(t, t.TempDir(), paths...)
}

func replayForTestIn(t *testing.T, out string, paths ...string) ([]parquet.Row, string, error) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Out = out
	cfg.IdleTimeout, cfg.ActiveTimeout = 24*time.Hour, 24*time.Hour
	var stderr bytes.Buffer
	err := runReplay(context.Background(), cfg, paths, false, &stderr)
	return readRows(t, cfg.Out), stderr.String(), err
}

type oracleKey struct {
	vlan, inner int32
	cid         string
}

type counts struct{ packets, bytes int64 }

// TestOracleTShark: for every capture, the packets and wire bytes of every
// flow (VLAN tags + Community ID, i.e. the canonical 5-tuple) in our Parquet
// equal those computed from tshark's per-packet table, except the packets
// between tunnel endpoints, left out on both sides: flowsensor keys them by
// their outer headers, tshark's Community ID by the inner ones.
func TestOracleTShark(t *testing.T) {
	corpus.EachCapture(t, func(t *testing.T, path string) {
		rows, err := corpus.TSharkPackets(path)
		if err != nil {
			t.Fatalf("oracle table: %v", err)
		}
		compareWithTShark(t, path, rows, true)
	})
}

// TestOracleTSharkOwnCaptures runs the same comparison on captures of the
// user's: FLOWSENSOR_ORACLE_DIR=/some/pcaps go test -run OwnCaptures
// ./cmd/flowsensor/. tshark makes each table on the fly, as the stored ones
// were made. Captures tshark cannot read are reported and left out.
func TestOracleTSharkOwnCaptures(t *testing.T) {
	dir := os.Getenv("FLOWSENSOR_ORACLE_DIR")
	if dir == "" {
		t.Skip("set FLOWSENSOR_ORACLE_DIR to a folder of captures to compare with tshark")
	}
	compareDirWithTShark(t, dir, false)
}

// TestUnseenCaptures: the same on testdata/unseen, captures from other
// projects' test suites, where tshark must read every file and every flow
// must agree.
func TestUnseenCaptures(t *testing.T) {
	compareDirWithTShark(t, filepath.Join(corpus.RepoRoot(), "testdata", "unseen"), true)
}

// compareDirWithTShark compares every capture in dir with the table tshark
// makes of it. Without strict, a capture tshark cannot read is skipped.
func compareDirWithTShark(t *testing.T, dir string, strict bool) {
	corpus.RequireTool(t, "tshark", "apt-get install tshark")
	captures, err := corpus.Captures(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(captures) == 0 {
		t.Fatalf("no captures in %s", dir)
	}
	for _, path := range captures {
		t.Run(filepath.Base(path), func(t *testing.T) {
			tsv := filepath.Join(t.TempDir(), "packets.tsv")
			if err := corpus.WriteTSharkTable(path, tsv); err != nil {
				if strict {
					t.Fatal(err)
				}
				t.Skipf("tshark cannot read it: %v", err)
			}
			rows, err := corpus.ReadTSharkTable(tsv)
			if err != nil {
				t.Fatalf("tshark's table: %v", err)
			}
			compareWithTShark(t, path, rows, strict)
		})
	}
}

// compareWithTShark replays capture and compares its flows with tshark's
// table of it. With replayMustSucceed, a replay error fails the test;
// otherwise it is logged (a damaged file tshark read in part).
func compareWithTShark(t *testing.T, capture string, rows []corpus.TSharkRow, replayMustSucceed bool) {
	t.Helper()
	want := tsharkFlows(t, capture, rows)
	got, stderr, err := replayForTest(t, capture)
	if err != nil {
		if replayMustSucceed {
			t.Fatalf("replay: %v\n%s", err, stderr)
		}
		t.Logf("replay: %v\n%s", err, stderr)
	}
	flows := map[oracleKey]counts{}
	for _, r := range got {
		k := oracleKey{r.VLANID, r.InnerVLANID, r.CommunityID}
		c := flows[k]
		c.packets += r.Packets
		c.bytes += r.Bytes
		flows[k] = c
	}
	compareFlows(t, want, flows)
}

// tunnelledPacket: tshark's protocol path shows an IP packet inside another
// one (IP-in-IP, SRv6, GRE, VXLAN, ...), other than the quoted packet of an
// ICMP error, which both tools key by the outer header.
func tunnelledPacket(protocols string) bool {
	ips := 0
	for _, p := range strings.Split(protocols, ":") {
		switch p {
		case "icmp", "icmpv6":
			return false
		case "ip", "ipv6":
			if ips++; ips > 1 {
				return true
			}
		case "gre", "vxlan", "gtp", "l2tp", "teredo", "geneve", "erspan", "mpls":
			if ips > 0 {
				return true
			}
		}
	}
	return false
}

// outerCommunityID is the Community ID of a tunnelled packet by its outer
// IP header, which is how flowsensor keys it (it does not decapsulate):
// the outer addresses, the protocol that follows the outer header (and its
// extension headers), and its ports for UDP and TCP.
func outerCommunityID(t *testing.T, row corpus.TSharkRow) string {
	t.Helper()
	layers := strings.Split(row["frame.protocols"], ":")
	i := slices.IndexFunc(layers, func(l string) bool { return l == "ip" || l == "ipv6" })
	src, dst := first(row["ip.src"]), first(row["ip.dst"])
	if layers[i] == "ipv6" {
		src, dst = first(row["ipv6.src"]), first(row["ipv6.dst"])
	}
	next := i + 1
	for next < len(layers) && strings.HasPrefix(layers[next], "ipv6.") {
		next++ // extension headers: routing, hop-by-hop, ...
	}
	protos := map[string]uint8{"ip": 4, "ipv6": 41, "tcp": 6, "udp": 17, "gre": 47, "esp": 50, "sctp": 132}
	proto, ok := protos[layers[next]]
	if !ok {
		t.Fatalf("frame %s: no protocol number for %q after the outer IP header (%s)", row["frame.number"], layers[next], row["frame.protocols"])
	}
	var sport, dport string
	switch proto {
	case 6:
		sport, dport = first(row["tcp.srcport"]), first(row["tcp.dstport"])
	case 17:
		sport, dport = first(row["udp.srcport"]), first(row["udp.dstport"])
	}
	sp, _ := strconv.Atoi(sport)
	dp, _ := strconv.Atoi(dport)
	return communityID(netip.MustParseAddr(src), netip.MustParseAddr(dst), proto, uint16(sp), uint16(dp), sport != "")
}

// outerVLANTags are the VLAN tags in front of a tunnelled packet's outer IP
// header, without those of the packet inside.
func outerVLANTags(row corpus.TSharkRow) (int32, int32) {
	n := 0
	for _, l := range strings.Split(row["frame.protocols"], ":") {
		if l == "ip" || l == "ipv6" {
			break
		}
		if l == "vlan" {
			n++
		}
	}
	tags := strings.Split(row["vlan.id"], ",")
	return vlanTags(strings.Join(tags[:min(n, len(tags))], ","))
}

// communityID is Community ID v1 (seed 0), written from the spec for the
// test: endpoints ordered by address then port, ports only for protocols
// that have them.
func communityID(src, dst netip.Addr, proto uint8, sport, dport uint16, ports bool) string {
	a, b := src.AsSlice(), dst.AsSlice()
	if c := bytes.Compare(a, b); c > 0 || c == 0 && sport > dport {
		a, b, sport, dport = b, a, dport, sport
	}
	buf := []byte{0, 0}
	buf = append(buf, a...)
	buf = append(buf, b...)
	buf = append(buf, proto, 0)
	if ports {
		buf = binary.BigEndian.AppendUint16(buf, sport)
		buf = binary.BigEndian.AppendUint16(buf, dport)
	}
	sum := sha1.Sum(buf)
	return "1:" + base64.StdEncoding.EncodeToString(sum[:])
}

func compareFlows(t *testing.T, want, got map[oracleKey]counts) {
	t.Helper()
	var keys []oracleKey
	for k := range want {
		keys = append(keys, k)
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j]) })
	bad := 0
	for _, k := range keys {
		if want[k] != got[k] {
			bad++
			if bad <= 10 {
				t.Errorf("flow %+v: ours %d packets %d bytes, tshark %d packets %d bytes", k, got[k].packets, got[k].bytes, want[k].packets, want[k].bytes)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d flows differ", bad, len(keys))
	}
	t.Logf("%d flows compared", len(keys))
}

// tsharkFlows groups the rows of X.tshark-packets.tsv into flows keyed as
// flowsensor keys them: VLAN tags, and the Community ID tshark computed for
// the packet (its own implementation). A later IP fragment has no ports in
// tshark's view; like flowsensor, it is counted in the flow of its first
// fragment, found by fragment ID (asked of tshark, since the stored table
// lacks it), or in a flow of its addresses with ports 0 when the first
// fragment was not seen before it.
func tsharkFlows(t *testing.T, capture string, rows []corpus.TSharkRow) map[oracleKey]counts {
	t.Helper()
	var fragIDs, sTags map[string]string
	flows := map[oracleKey]counts{}
	type firstFrag struct {
		key oracleKey
		ts  float64
	}
	firsts := map[string]firstFrag{}
	for _, row := range rows {
		vlan, inner := vlanTags(row["vlan.id"])
		if strings.Contains(row["frame.protocols"], "ieee8021ad") {
			// The 802.1ad S-tag is dissected as ieee8021ad.id, not vlan.id.
			if sTags == nil {
				sTags = tsharkField(t, capture, "ieee8021ad.id")
			}
			s, _ := strconv.Atoi(first(sTags[row["frame.number"]]))
			vlan, inner = int32(s), vlan
		}
		wire, _ := strconv.ParseInt(row["frame.len"], 10, 64)
		ts, _ := strconv.ParseFloat(row["frame.time_epoch"], 64)
		v4 := row["ip.src"] != ""
		src, dst := first(row["ip.src"]), first(row["ip.dst"])
		if !v4 {
			src, dst = first(row["ipv6.src"]), first(row["ipv6.dst"])
		}
		if src == "" {
			continue // not IP
		}
		frag := first(row["ip.flags.mf"]) == "1" || first(row["ip.frag_offset"]) != "" && first(row["ip.frag_offset"]) != "0" ||
			strings.Contains(row["frame.protocols"], "ipv6.fraghdr")
		key := oracleKey{vlan, inner, row["communityid"]}
		if tunnelledPacket(row["frame.protocols"]) {
			// tshark's Community ID and VLAN tags include the inner packet's.
			key.cid = outerCommunityID(t, row)
			key.vlan, key.inner = outerVLANTags(row)
		}
		if frag {
			if fragIDs == nil {
				fragIDs = tsharkField(t, capture, "ip.id", "ipv6.fraghdr.ident")
			}
			id := src + ">" + dst + "#" + fragIDs[row["frame.number"]]
			later := first(row["ip.frag_offset"]) != "0" && first(row["ip.frag_offset"]) != "" || !strings.Contains(row["frame.protocols"], "fraghdr:udp") && !strings.Contains(row["frame.protocols"], "fraghdr:tcp") && !strings.Contains(row["frame.protocols"], "fraghdr:icmpv6") && !v4
			if !later {
				firsts[id] = firstFrag{key, ts}
			} else if f, ok := firsts[id]; ok && ts-f.ts < 30 {
				key = f.key
			} else {
				proto := first(row["ip.proto"])
				if !v4 {
					proto = "17" // the corpus' IPv6 fragments all carry UDP (DNS)
				}
				p, _ := strconv.Atoi(proto)
				key.cid = communityIDNoPorts(netip.MustParseAddr(src), netip.MustParseAddr(dst), uint8(p))
			}
		}
		if key.cid == "" {
			continue
		}
		c := flows[key]
		c.packets++
		c.bytes += wire
		flows[key] = c
	}
	return flows
}

func vlanTags(s string) (int32, int32) {
	var tags []int32
	for _, f := range strings.Split(s, ",") {
		if n, err := strconv.Atoi(f); err == nil {
			tags = append(tags, int32(n))
		}
	}
	tags = append(tags, 0, 0)
	return tags[0], tags[1]
}

func first(s string) string {
	if i := strings.IndexByte(s, ','); i >= 0 {
		return s[:i]
	}
	return s
}

// tsharkField asks tshark for fields the stored table lacks, by frame
// number; several fields are concatenated (use ones that exclude each other).
func tsharkField(t *testing.T, capture string, fields ...string) map[string]string {
	t.Helper()
	if _, err := exec.LookPath("tshark"); err != nil {
		if os.Getenv(lab.RequireEnv) != "" {
			t.Fatal("tshark is required (apt-get install tshark)")
		}
		t.Skip("tshark not installed: it is the oracle for fields the stored tables lack")
	}
	args := []string{"-n", "-r", capture, "-o", "ip.defragment:FALSE", "-o", "ipv6.defragment:FALSE", "-T", "fields", "-e", "frame.number"}
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	out, err := exec.Command("tshark", args...).Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	values := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Split(line, "\t")
		if len(f) == len(fields)+1 {
			values[f[0]] = strings.Join(f[1:], "")
		}
	}
	return values
}

// communityIDNoPorts is the Community ID of a flow keyed with ports 0: what
// flowsensor reports for later fragments whose first fragment it never saw.
func communityIDNoPorts(src, dst netip.Addr, proto uint8) string {
	a, b := src.AsSlice(), dst.AsSlice()
	if bytes.Compare(a, b) > 0 {
		a, b = b, a
	}
	buf := []byte{0, 0}
	buf = append(buf, a...)
	buf = append(buf, b...)
	buf = append(buf, proto, 0)
	buf = binary.BigEndian.AppendUint32(buf, 0)
	sum := sha1.Sum(buf)
	return "1:" + base64.StdEncoding.EncodeToString(sum[:])
}
