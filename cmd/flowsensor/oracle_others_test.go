package main

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/flowsensor/flowsensor/capture"
	"github.com/flowsensor/flowsensor/internal/corpus"
	"github.com/flowsensor/flowsensor/sinks/parquet"
)

// pairKey is a TCP/UDP conversation as argus and pmacct can be compared on:
// protocol and the unordered pair of endpoints (plus the outer VLAN for pmacct).
type pairKey struct {
	vlan   int32
	proto  int32
	lo, hi string // "addr:port", lo < hi
}

func newPairKey(vlan, proto int32, a string, ap int, b string, bp int) pairKey {
	x, y := endpoint(a, ap), endpoint(b, bp)
	if y < x {
		x, y = y, x
	}
	return pairKey{vlan, proto, x, y}
}

func endpoint(addr string, port int) string {
	if a, err := netip.ParseAddr(addr); err == nil {
		addr = a.Unmap().String()
	}
	return addr + ":" + strconv.Itoa(port)
}

// oracleDiff is a known, explained disagreement between flowsensor and
// another tool on one capture: how many TCP/UDP conversations differ, and why.
// The counts are exact so that any change is looked at again.
type oracleDiff struct {
	flows int
	cause string
}

// Differences with argus (racluster, bidirectional, frame bytes, VLAN not in
// the key) and pmacct (pmacctd, unidirectional, outer VLAN in the key, IP
// bytes, so only packets are compared), per capture. See README, "Checked
// against independent tools".
var (
	argusDiffs = map[string]oracleDiff{
		"dns-fragmented-v4-v6.pcap": {6, "IPv6 fragments: flowsensor counts a later fragment in its datagram's flow " +
			"(by fragment ID, like tshark's Community ID of the first fragment); argus keys it apart with port 0"},
		"gre-sample.pcap": {5, "argus decapsulates GRE and reports the inner conversations; flowsensor reports the " +
			"outer GRE flow (protocol 47), as tshark's conv,ip does"},
		"ipv4-frags-rawip4-dns.pcap":    {41, "argus cannot read link type IPv4 (228): no output"},
		"pcapng-multi-interface.pcapng": {15, "libpcap stops at the first interface of another link type: argus read no packet"},
	}
	pmacctDiffs = map[string]oracleDiff{
		"ipv4-frags-rawip4-dns.pcap":    {41, "pmacctd cannot read link type IPv4 (228): no output"},
		"pcapng-multi-interface.pcapng": {15, "libpcap stops at the first interface of another link type: pmacctd read no packet"},
		"null-loopback-v4v6.pcap":       {2, "pmacctd ignores IPv6 with address family 30 (Darwin) on link type NULL"},
	}
)

// TestOracleArgusPmacct compares per-conversation TCP/UDP packet (and for
// argus byte) counts with the stored argus and pmacct outputs; every
// difference must be one of the explained ones above.
func TestOracleArgusPmacct(t *testing.T) {
	corpus.EachCapture(t, func(t *testing.T, path string) {
		rows, stderr, err := replayForTest(t, path)
		if err != nil {
			t.Fatalf("replay: %v\n%s", err, stderr)
		}
		ours, oursByVLAN := conversations(rows)
		if argus, err := argusFlows(path + ".argus-flows.csv"); err == nil {
			checkDiff(t, "argus", argusDiffs[filepath.Base(path)], withoutLinkHeader(path, ours), argus, true)
		}
		if pm, err := pmacctFlows(path + ".pmacct-flows.csv"); err == nil {
			checkDiff(t, "pmacct", pmacctDiffs[filepath.Base(path)], oursByVLAN, pm, false)
		}
	})
}

// TestOracleArgusPmacctOwnCaptures does the same on a folder of the user's
// captures, with the outputs scripts/argus-pmacct.sh wrote beside them:
// FLOWSENSOR_ORACLE_DIR=/some/pcaps go test -run OwnCaptures ./cmd/flowsensor/.
// No difference is known there, so each one is listed for a person to
// explain.
func TestOracleArgusPmacctOwnCaptures(t *testing.T) {
	dir := os.Getenv("FLOWSENSOR_ORACLE_DIR")
	if dir == "" {
		t.Skip("set FLOWSENSOR_ORACLE_DIR to a folder of captures with argus and pmacct outputs beside them")
	}
	captures, err := corpus.Captures(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range captures {
		t.Run(filepath.Base(path), func(t *testing.T) {
			argus, argusErr := argusFlows(path + ".argus-flows.csv")
			pm, pmErr := pmacctFlows(path + ".pmacct-flows.csv")
			if argusErr != nil && pmErr != nil {
				t.Skip("no argus or pmacct output beside it (scripts/argus-pmacct.sh)")
			}
			rows, stderr, err := replayForTest(t, path)
			if err != nil {
				t.Logf("replay: %v\n%s", err, stderr)
			}
			ours, oursByVLAN := conversations(rows)
			if argusErr == nil {
				checkDiff(t, "argus", oracleDiff{}, withoutLinkHeader(path, ours), argus, true)
			}
			if pmErr == nil {
				checkDiff(t, "pmacct", oracleDiff{}, oursByVLAN, pm, false)
			}
		})
	}
}

func conversations(rows []parquet.Row) (noVLAN, byVLAN map[pairKey]counts) {
	noVLAN, byVLAN = map[pairKey]counts{}, map[pairKey]counts{}
	for _, r := range rows {
		if r.Protocol != 6 && r.Protocol != 17 {
			continue
		}
		for _, m := range []struct {
			m    map[pairKey]counts
			vlan int32
		}{{noVLAN, 0}, {byVLAN, r.VLANID}} {
			k := newPairKey(m.vlan, r.Protocol, r.SrcIP, int(r.SrcPort), r.DstIP, int(r.DstPort))
			c := m.m[k]
			c.packets += r.Packets
			c.bytes += r.Bytes
			m.m[k] = c
		}
	}
	return noVLAN, byVLAN
}

// withoutLinkHeader: argus counts bytes from the end of a non-Ethernet link
// header (Linux cooked, NULL, PPP); tshark and flowsensor count the whole
// captured frame.
func withoutLinkHeader(path string, flows map[pairKey]counts) map[pairKey]counts {
	if hdr := linkHeaderBytes(path); hdr > 0 {
		for k, c := range flows {
			c.bytes -= c.packets * hdr
			flows[k] = c
		}
	}
	return flows
}

func checkDiff(t *testing.T, tool string, known oracleDiff, ours, theirs map[pairKey]counts, compareBytes bool) {
	t.Helper()
	keys := map[pairKey]bool{}
	for k := range ours {
		keys[k] = true
	}
	for k := range theirs {
		keys[k] = true
	}
	var diffs []string
	for k := range keys {
		o, th := ours[k], theirs[k]
		if o.packets != th.packets || compareBytes && o.bytes != th.bytes {
			diffs = append(diffs, fmt.Sprintf("%v: ours %d pkts %d bytes, %s %d pkts %d bytes", k, o.packets, o.bytes, tool, th.packets, th.bytes))
		}
	}
	sort.Strings(diffs)
	t.Logf("%s: %d of %d TCP/UDP conversations agree", tool, len(keys)-len(diffs), len(keys))
	if len(diffs) != known.flows {
		t.Errorf("%s: %d conversations differ, %d explained (%q)", tool, len(diffs), known.flows, known.cause)
		for i, d := range diffs {
			if i == 10 {
				break
			}
			t.Log(d)
		}
	}
}

func argusFlows(path string) (map[pairKey]counts, error) {
	return readCSV(path, func(f []string) (pairKey, counts, bool) {
		// StartTime,LastTime,Proto,SrcAddr,Sport,Dir,DstAddr,Dport,SrcPkts,DstPkts,SrcBytes,DstBytes,State
		if len(f) < 13 || (f[2] != "6" && f[2] != "17") {
			return pairKey{}, counts{}, false
		}
		proto, _ := strconv.Atoi(f[2])
		sp, _ := strconv.Atoi(f[4])
		dp, _ := strconv.Atoi(f[7])
		n := func(s string) int64 { v, _ := strconv.ParseInt(s, 10, 64); return v }
		return newPairKey(0, int32(proto), f[3], sp, f[6], dp), counts{n(f[8]) + n(f[9]), n(f[10]) + n(f[11])}, true
	})
}

// pmacctFlows reads pmacctd's CSV by its header: it has no VLAN column
// when the link type cannot carry one (NULL, raw IP, PPP).
func pmacctFlows(path string) (map[pairKey]counts, error) {
	col := map[string]int{}
	return readCSV(path, func(f []string) (pairKey, counts, bool) {
		if len(col) == 0 {
			if len(f) < 2 || f[0] != "VLAN" && f[0] != "SRC_IP" {
				return pairKey{}, counts{}, false // comments, log lines
			}
			for i, name := range f {
				col[name] = i
			}
			return pairKey{}, counts{}, false
		}
		get := func(name string) string {
			if i, ok := col[name]; ok && i < len(f) {
				return f[i]
			}
			return ""
		}
		proto, ok := map[string]int32{"tcp": 6, "udp": 17}[get("PROTOCOL")]
		if !ok {
			return pairKey{}, counts{}, false
		}
		vlan, _ := strconv.Atoi(get("VLAN"))
		sp, _ := strconv.Atoi(get("SRC_PORT"))
		dp, _ := strconv.Atoi(get("DST_PORT"))
		pk, _ := strconv.ParseInt(get("PACKETS"), 10, 64)
		return newPairKey(int32(vlan), proto, get("SRC_IP"), sp, get("DST_IP"), dp), counts{packets: pk}, true
	})
}

func readCSV(path string, parse func([]string) (pairKey, counts, bool)) (map[pairKey]counts, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[pairKey]counts{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, c, ok := parse(strings.Split(sc.Text(), ","))
		if !ok {
			continue
		}
		s := m[k]
		s.packets += c.packets
		s.bytes += c.bytes
		m[k] = s
	}
	return m, sc.Err()
}

// linkHeaderBytes is the link header length of a non-Ethernet capture that
// argus leaves out of its byte counts, from its first packet (0 when it has
// none).
func linkHeaderBytes(path string) int64 {
	r, err := capture.Open(path)
	if err != nil {
		return 0
	}
	defer r.Close()
	var p capture.Packet
	if r.Next(&p) != nil {
		return 0
	}
	etherType, payload, ok, _ := capture.L3(p.LinkType, p.Data)
	if p.LinkType == capture.LinkTypeEthernet || !ok || etherType == 0 {
		return 0
	}
	return int64(len(p.Data) - len(payload))
}
