package parquet_test

import (
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	pq "github.com/parquet-go/parquet-go"

	"github.com/flowsensor/flowsensor/aggregator"
	"github.com/flowsensor/flowsensor/sinks/parquet"
)

// clock is a fake clock, safe for concurrent use.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *clock { return &clock{t: t} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var (
	// The last hour of a leap day and the first of the next day: two
	// partitions, two dates.
	day1 = time.Date(2024, 2, 29, 23, 59, 30, 123456789, time.UTC)
	day2 = time.Date(2024, 3, 1, 0, 0, 1, 1, time.UTC)
	// The sensor's wall clock when the tests start.
	t0 = time.Date(2024, 3, 1, 0, 5, 0, 0, time.UTC)
)

// sampleFlows covers the shapes a sensor reports.
func sampleFlows() []aggregator.Flow {
	cet := time.FixedZone("CET", 3600)
	return []aggregator.Flow{
		{ // IPv4 TCP, closed
			ID: 1, Start: day1, End: day1.Add(250 * time.Millisecond),
			Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("198.51.100.7"),
			SrcPort: 51234, DstPort: 443, Protocol: 6, IPVersion: 4,
			Ifindex: 2, Interface: "eth0",
			SrcPackets: 10, SrcBytes: 1500, DstPackets: 8, DstBytes: 9000,
			SrcTCPFlags: 0x1b, DstTCPFlags: 0x1a, Final: true, EndReason: aggregator.EndTCPClose,
		},
		{ // IPv6 UDP, periodic report of a long flow; ID above 2^63
			ID: 0xfedcba9876543210, Seq: 3, Start: day2, End: day2.Add(59 * time.Second),
			Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8::53"),
			SrcPort: 53000, DstPort: 53, Protocol: 17, IPVersion: 6,
			Ifindex: 3, Interface: "eth1",
			SrcPackets: 1 << 40, SrcBytes: 1 << 50, DstPackets: 1, DstBytes: 90,
			Final: false, EndReason: aggregator.EndActive,
		},
		{ // ICMP echo, addresses IPv4-mapped as in the kernel record
			ID: 3, Start: day1.Add(10 * time.Second), End: day1.Add(11 * time.Second),
			Src: netip.MustParseAddr("::ffff:203.0.113.9"), Dst: netip.MustParseAddr("::ffff:192.0.2.1"),
			SrcPort: 8, DstPort: 0, Protocol: 1, IPVersion: 4,
			Ifindex: 2, Interface: "eth0",
			SrcPackets: 2, SrcBytes: 196, DstPackets: 2, DstBytes: 196,
			Final: true, EndReason: aggregator.EndIdle,
		},
		{ // ICMPv6 echo, Start given in another zone: partitioned by UTC
			ID: 4, Start: day2.Add(15 * time.Minute).In(cet), End: day2.Add(16 * time.Minute).In(cet),
			Src: netip.MustParseAddr("fe80::1"), Dst: netip.MustParseAddr("ff02::1"),
			SrcPort: 128, Protocol: 58, IPVersion: 6,
			Interface:  "eth1",
			SrcPackets: 1, SrcBytes: 118,
			Final: true, EndReason: aggregator.EndShutdown,
		},
		{ // QinQ-tagged UDP
			ID: 5, Seq: 1, Start: day2.Add(time.Second), End: day2.Add(2 * time.Second),
			Src: netip.MustParseAddr("10.1.2.3"), Dst: netip.MustParseAddr("10.3.2.1"),
			SrcPort: 4789, DstPort: 4789, Protocol: 17, IPVersion: 4,
			VLANID: 100, InnerVLANID: 4094, Interface: "bond0.100",
			SrcPackets: 3, SrcBytes: 450,
			Final: true, EndReason: aggregator.EndEvicted,
		},
		{ // no reason set: stored as "unknown"
			ID: 6, Start: day1, End: day1,
			Src: netip.MustParseAddr("192.0.2.2"), Dst: netip.MustParseAddr("192.0.2.3"),
			Protocol: 47, IPVersion: 4, Interface: "eth0",
			SrcPackets: 1, SrcBytes: 60,
		},
	}
}

// genFlows returns n IPv4 TCP flows starting at start, one microsecond apart,
// with IDs from firstID.
func genFlows(n int, start time.Time, firstID uint64) []aggregator.Flow {
	flows := make([]aggregator.Flow, n)
	for i := range flows {
		s := start.Add(time.Duration(i) * time.Microsecond)
		flows[i] = aggregator.Flow{
			ID: firstID + uint64(i), Start: s, End: s.Add(time.Millisecond),
			Src:     netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}),
			Dst:     netip.AddrFrom4([4]byte{192, 0, 2, byte(i % 7)}),
			SrcPort: uint16(1024 + i%60000), DstPort: 443, Protocol: 6, IPVersion: 4,
			Interface:  "eth0",
			SrcPackets: uint64(i%13 + 1), SrcBytes: uint64(i%13+1) * 100,
			DstPackets: uint64(i % 5), DstBytes: uint64(i%5) * 1400,
			SrcTCPFlags: 0x02, Final: true, EndReason: aggregator.EndIdle,
		}
	}
	return flows
}

var fileName = regexp.MustCompile(`^flows/dt=\d{4}-\d{2}-\d{2}/hour=\d{2}/flows-\d{8}T\d{6}Z-[A-Za-z0-9._-]+-\d+-\d+\.parquet$`)

// files lists every regular file under dir, relative to it and sorted, and
// fails the test if one is not a finished Parquet file (a leftover temp or
// probe file).
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		if !fileName.MatchString(filepath.ToSlash(rel)) {
			t.Errorf("unexpected file %s", rel)
		}
		out = append(out, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// readRows reads every Parquet file under dir, in file name order.
func readRows(t *testing.T, dir string) []parquet.Row {
	t.Helper()
	var all []parquet.Row
	for _, f := range files(t, dir) {
		rows, err := pq.ReadFile[parquet.Row](filepath.Join(dir, f))
		if err != nil {
			t.Fatalf("read %s: %v", f, err)
		}
		all = append(all, rows...)
	}
	return all
}

// diffRow names the fields in which got differs from want. Times compare
// as instants: a file does not keep the time zone.
func diffRow(got, want parquet.Row) string {
	g, w := reflect.ValueOf(got), reflect.ValueOf(want)
	var diffs []string
	for i := range g.NumField() {
		gf, wf := g.Field(i).Interface(), w.Field(i).Interface()
		if gt, ok := gf.(time.Time); ok {
			if !gt.Equal(wf.(time.Time)) {
				diffs = append(diffs, g.Type().Field(i).Name)
			}
			continue
		}
		if gf != wf {
			diffs = append(diffs, g.Type().Field(i).Name)
		}
	}
	if diffs == nil {
		return ""
	}
	return strings.Join(diffs, ", ") + ":\n got  " + sprintRow(got) + "\n want " + sprintRow(want)
}

func sprintRow(r parquet.Row) string {
	r.StartTime, r.EndTime = r.StartTime.UTC(), r.EndTime.UTC()
	return fmt.Sprintf("%+v", r)
}

// ids returns the flow IDs of rows, in order.
func ids(rows []parquet.Row) []uint64 {
	out := make([]uint64, len(rows))
	for i, r := range rows {
		out[i] = uint64(r.FlowID)
	}
	return out
}

func seqIDs(first uint64, n int) []uint64 {
	out := make([]uint64, n)
	for i := range out {
		out[i] = first + uint64(i)
	}
	return out
}

func mustWriteFile(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("in the way"), 0o644); err != nil {
		t.Fatal(err)
	}
}
