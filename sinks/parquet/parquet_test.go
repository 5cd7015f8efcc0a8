package parquet_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	pq "github.com/parquet-go/parquet-go"

	"github.com/flowsensor/flowsensor/aggregator"
	"github.com/flowsensor/flowsensor/sinks"
	"github.com/flowsensor/flowsensor/sinks/parquet"
)

var _ sinks.Sink = (*parquet.Sink)(nil)

func newSink(t *testing.T, dir string, c *clock, maxRows int, maxAge time.Duration) *parquet.Sink {
	t.Helper()
	s, err := parquet.New(parquet.Config{Dir: dir, MaxRows: maxRows, MaxAge: maxAge, Now: c.Now, Host: "sensor-1"})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func wantStats(t *testing.T, s *parquet.Sink, want parquet.Stats) {
	t.Helper()
	if got := s.Stats(); got != want {
		t.Fatalf("stats:\n got  %+v\n want %+v", got, want)
	}
}

func TestRoundTrip(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := newSink(t, dir, newClock(t0), 0, 0)
	flows := sampleFlows()
	if err := s.Write(ctx, flows[:2]); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, flows[2:]); err != nil {
		t.Fatal(err)
	}
	wantStats(t, s, parquet.Stats{RowsBuffered: len(flows)})
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	wantStats(t, s, parquet.Stats{RowsWritten: uint64(len(flows)), FilesWritten: 2})

	// One file per hour partition, oldest first, named by the clock.
	pid := os.Getpid()
	wantFiles := []string{
		fmt.Sprintf("flows/dt=2024-02-29/hour=23/flows-20240301T000500Z-sensor-1-%d-1.parquet", pid),
		fmt.Sprintf("flows/dt=2024-03-01/hour=00/flows-20240301T000500Z-sensor-1-%d-2.parquet", pid),
	}
	if got := files(t, dir); !slices.Equal(got, wantFiles) {
		t.Fatalf("files:\n got  %q\n want %q", got, wantFiles)
	}

	for _, name := range wantFiles {
		rows, err := pq.ReadFile[parquet.Row](filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		var want []parquet.Row
		for i := range flows {
			r := parquet.RowFromFlow(&flows[i])
			hour := r.StartTime.UTC().Format("dt=2006-01-02/hour=15")
			if strings.Contains(name, hour) {
				want = append(want, r)
			}
		}
		if len(rows) != len(want) {
			t.Fatalf("%s: %d rows, want %d", name, len(rows), len(want))
		}
		for i := range rows { // rows keep their write order within a file
			if d := diffRow(rows[i], want[i]); d != "" {
				t.Errorf("%s row %d: %s", name, i, d)
			}
		}
	}
}

// TestSchema pins the column names, order and types that queries rely on.
func TestSchema(t *testing.T) {
	dir := t.TempDir()
	s := newSink(t, dir, newClock(t0), 0, 0)
	if err := s.Write(context.Background(), sampleFlows()[:1]); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	name := files(t, dir)[0]
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	pf, err := pq.OpenFile(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"required int64 flow_id (INT(64,true));",
		"required int32 seq (INT(32,true));",
		"required int64 start_time (TIMESTAMP(isAdjustedToUTC=true,unit=NANOS));",
		"required int64 end_time (TIMESTAMP(isAdjustedToUTC=true,unit=NANOS));",
		"required binary src_ip (STRING);",
		"required binary dst_ip (STRING);",
		"required int32 src_port (INT(32,true));",
		"required int32 dst_port (INT(32,true));",
		"required int32 protocol (INT(32,true));",
		"required int32 ip_version (INT(32,true));",
		"required int32 vlan_id (INT(32,true));",
		"required int32 inner_vlan_id (INT(32,true));",
		"required binary interface (STRING);",
		"required int64 src_packets (INT(64,true));",
		"required int64 src_bytes (INT(64,true));",
		"required int64 dst_packets (INT(64,true));",
		"required int64 dst_bytes (INT(64,true));",
		"required int64 packets (INT(64,true));",
		"required int64 bytes (INT(64,true));",
		"required int32 src_tcp_flags (INT(32,true));",
		"required int32 dst_tcp_flags (INT(32,true));",
		"required int32 max_packet_bytes (INT(32,true));",
		"required boolean final;",
		"required binary end_reason (STRING);",
		"required binary community_id (STRING);",
	}
	lines := strings.Split(strings.TrimSpace(pf.Schema().String()), "\n")
	var got []string
	for _, l := range lines[1 : len(lines)-1] { // inside "message … {" and "}"
		got = append(got, strings.TrimSpace(l))
	}
	if !slices.Equal(got, want) {
		t.Errorf("schema:\n%s\nwant columns:\n%s", pf.Schema(), strings.Join(want, "\n"))
	}
	for _, rg := range pf.Metadata().RowGroups {
		for _, c := range rg.Columns {
			if got := c.MetaData.Codec.String(); got != "ZSTD" {
				t.Errorf("column %v: codec %s, want ZSTD", c.MetaData.PathInSchema, got)
			}
		}
	}
}

func TestRollByMaxRows(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := newSink(t, dir, newClock(t0), 10, time.Hour)

	if err := s.Write(ctx, genFlows(25, day2, 0)); err != nil {
		t.Fatal(err)
	}
	// Files are cut at the start of the next call, so that Write either
	// buffers a batch or fails without keeping it.
	wantStats(t, s, parquet.Stats{RowsBuffered: 25})
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	wantStats(t, s, parquet.Stats{RowsWritten: 20, FilesWritten: 2, RowsBuffered: 5})

	if err := s.Write(ctx, genFlows(5, day2, 25)); err != nil {
		t.Fatal(err)
	}
	wantStats(t, s, parquet.Stats{RowsWritten: 20, FilesWritten: 2, RowsBuffered: 10})
	if err := s.Write(ctx, genFlows(1, day2, 30)); err != nil {
		t.Fatal(err)
	}
	wantStats(t, s, parquet.Stats{RowsWritten: 30, FilesWritten: 3, RowsBuffered: 1})
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	wantStats(t, s, parquet.Stats{RowsWritten: 31, FilesWritten: 4})

	var sizes []int
	var all []parquet.Row
	for _, f := range files(t, dir) {
		rows, err := pq.ReadFile[parquet.Row](filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, len(rows))
		all = append(all, rows...)
	}
	got := ids(all)
	slices.Sort(got)
	if want := seqIDs(0, 31); !slices.Equal(got, want) {
		t.Errorf("ids %v, want each of %v once", got, want)
	}
	slices.Sort(sizes)
	if want := []int{1, 10, 10, 10}; !slices.Equal(sizes, want) {
		t.Errorf("rows per file %v, want %v", sizes, want)
	}
}

func TestRollByMaxAge(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := newClock(t0)
	s := newSink(t, dir, c, 1000, time.Minute)

	if err := s.Write(ctx, genFlows(3, day2, 0)); err != nil {
		t.Fatal(err)
	}
	c.Advance(time.Minute - time.Nanosecond)
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	wantStats(t, s, parquet.Stats{RowsBuffered: 3})
	c.Advance(time.Nanosecond)
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	wantStats(t, s, parquet.Stats{RowsWritten: 3, FilesWritten: 1})

	// The age counts from the oldest buffered row, not the latest.
	if err := s.Write(ctx, genFlows(2, day2, 3)); err != nil {
		t.Fatal(err)
	}
	c.Advance(30 * time.Second)
	if err := s.Write(ctx, genFlows(1, day2, 5)); err != nil {
		t.Fatal(err)
	}
	wantStats(t, s, parquet.Stats{RowsWritten: 3, FilesWritten: 1, RowsBuffered: 3})
	c.Advance(30 * time.Second)
	if err := s.Write(ctx, genFlows(1, day2, 6)); err != nil {
		t.Fatal(err)
	}
	wantStats(t, s, parquet.Stats{RowsWritten: 6, FilesWritten: 2, RowsBuffered: 1})

	// Each partition has its own age.
	if err := s.Write(ctx, genFlows(1, day1, 7)); err != nil {
		t.Fatal(err)
	}
	c.Advance(time.Minute)
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	wantStats(t, s, parquet.Stats{RowsWritten: 8, FilesWritten: 4})
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(files(t, dir)); n != 4 {
		t.Errorf("%d files, want 4", n)
	}
}

// TestRemainderKeepsAge checks that rows left after a MaxRows cut are still
// written MaxAge after the oldest of them arrived.
func TestRemainderKeepsAge(t *testing.T) {
	ctx := context.Background()
	c := newClock(t0)
	s := newSink(t, t.TempDir(), c, 2, time.Minute)
	if err := s.Write(ctx, genFlows(3, day2, 0)); err != nil {
		t.Fatal(err)
	}
	c.Advance(10 * time.Second)
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	wantStats(t, s, parquet.Stats{RowsWritten: 2, FilesWritten: 1, RowsBuffered: 1})
	c.Advance(50 * time.Second)
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	wantStats(t, s, parquet.Stats{RowsWritten: 3, FilesWritten: 2})
}

// TestPartitionDirBlocked puts a regular file where a partition directory
// must go (chmod does not stop root), then removes it.
func TestPartitionDirBlocked(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := newClock(t0)
	s := newSink(t, dir, c, 0, time.Minute)
	blocker := filepath.Join(dir, "flows", "dt=2024-03-01")
	mustWriteFile(t, blocker)

	if err := s.Write(ctx, genFlows(4, day2, 0)); err != nil { // blocked partition
		t.Fatal(err)
	}
	if err := s.Write(ctx, genFlows(2, day1, 4)); err != nil { // healthy partition
		t.Fatal(err)
	}
	c.Advance(time.Minute)
	err := s.Flush(ctx)
	wantPath := "write " + filepath.Join(dir, "flows", "dt=2024-03-01", "hour=00", "flows-20240301T000600Z-sensor-1-")
	if err == nil || !strings.Contains(err.Error(), wantPath) || !errors.Is(err, syscall.ENOTDIR) {
		t.Fatalf("Flush error %v, want one containing %q and ENOTDIR", err, wantPath)
	}
	// The healthy partition is written regardless; the blocked rows stay.
	wantStats(t, s, parquet.Stats{RowsWritten: 2, FilesWritten: 1, WriteErrors: 1, RowsBuffered: 4})

	// While a due file fails, Write refuses new flows rather than buffer
	// them, so that a retry of the same batch cannot duplicate it.
	retry := genFlows(3, day2, 6)
	if err := s.Write(ctx, retry); !errors.Is(err, syscall.ENOTDIR) {
		t.Fatalf("Write error %v, want ENOTDIR", err)
	}
	wantStats(t, s, parquet.Stats{RowsWritten: 2, FilesWritten: 1, WriteErrors: 2, RowsBuffered: 4})

	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	wantStats(t, s, parquet.Stats{RowsWritten: 6, FilesWritten: 2, WriteErrors: 2})
	if err := s.Write(ctx, retry); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	wantStats(t, s, parquet.Stats{RowsWritten: 9, FilesWritten: 3, WriteErrors: 2})

	got := ids(readRows(t, dir))
	slices.Sort(got)
	if want := seqIDs(0, 9); !slices.Equal(got, want) {
		t.Errorf("ids %v, want each of %v once", got, want)
	}
}

// TestNameTaken gives the first file's name to another file, as a second
// sensor with the same host name and PID would: the sink must not replace
// it, must remove its temporary file, and must keep the rows.
func TestNameTaken(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := newSink(t, dir, newClock(t0), 0, time.Minute)
	partDir := filepath.Join(dir, "flows", "dt=2024-03-01", "hour=00")
	taken := filepath.Join(partDir, fmt.Sprintf("flows-20240301T000500Z-sensor-1-%d-1.parquet", os.Getpid()))
	mustWriteFile(t, taken)

	if err := s.Write(ctx, genFlows(5, day2, 0)); err != nil {
		t.Fatal(err)
	}
	err := s.Close(ctx)
	if err == nil || !strings.Contains(err.Error(), "write "+taken+": ") || !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Close error %v, want one naming %s and ErrExist", err, taken)
	}
	if !strings.Contains(err.Error(), "5 rows not written") {
		t.Errorf("Close error %v, want the count of rows lost", err)
	}
	wantStats(t, s, parquet.Stats{WriteErrors: 1, RowsDropped: 5})
	if b, err := os.ReadFile(taken); err != nil || string(b) != "in the way" {
		t.Errorf("the existing file was replaced: %q, %v", b, err)
	}
	entries, err := os.ReadDir(partDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("partition dir holds %v, want only the existing file", entries)
	}
}

// TestRetryAfterNameTaken: the retry takes the next sequence number, and
// every row arrives once.
func TestRetryAfterNameTaken(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := newClock(t0)
	s := newSink(t, dir, c, 0, time.Minute)
	partDir := filepath.Join(dir, "flows", "dt=2024-03-01", "hour=00")
	taken := filepath.Join(partDir, fmt.Sprintf("flows-20240301T000600Z-sensor-1-%d-1.parquet", os.Getpid()))
	mustWriteFile(t, taken)

	if err := s.Write(ctx, genFlows(5, day2, 0)); err != nil {
		t.Fatal(err)
	}
	c.Advance(time.Minute)
	if err := s.Flush(ctx); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Flush error %v, want ErrExist", err)
	}
	wantStats(t, s, parquet.Stats{WriteErrors: 1, RowsBuffered: 5})
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	wantStats(t, s, parquet.Stats{RowsWritten: 5, FilesWritten: 1, WriteErrors: 1})
	if err := os.Remove(taken); err != nil {
		t.Fatal(err)
	}
	if got := ids(readRows(t, dir)); !slices.Equal(got, seqIDs(0, 5)) {
		t.Errorf("ids %v", got)
	}
}

func TestCloseCancelled(t *testing.T) {
	dir := t.TempDir()
	s := newSink(t, dir, newClock(t0), 0, 0)
	if err := s.Write(context.Background(), genFlows(3, day2, 0)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := s.Close(ctx)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "3 rows not written") {
		t.Fatalf("Close error %v, want context.Canceled and 3 rows not written", err)
	}
	wantStats(t, s, parquet.Stats{RowsDropped: 3})
	if got := files(t, dir); len(got) != 0 {
		t.Errorf("files %v, want none", got)
	}
}

func TestClosed(t *testing.T) {
	ctx := context.Background()
	s := newSink(t, t.TempDir(), newClock(t0), 0, 0)
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, genFlows(1, day2, 0)); !errors.Is(err, sinks.ErrClosed) {
		t.Errorf("Write after Close: %v", err)
	}
	if err := s.Flush(ctx); !errors.Is(err, sinks.ErrClosed) {
		t.Errorf("Flush after Close: %v", err)
	}
	if err := s.Close(ctx); !errors.Is(err, sinks.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
}

func TestNewChecksDir(t *testing.T) {
	tmp := t.TempDir()
	file := filepath.Join(tmp, "file")
	mustWriteFile(t, file)

	for _, dir := range []string{file, filepath.Join(file, "out")} {
		_, err := parquet.New(parquet.Config{Dir: dir})
		if err == nil || !strings.HasPrefix(err.Error(), "parquet output dir "+dir+": ") || !errors.Is(err, syscall.ENOTDIR) {
			t.Errorf("New(%s): %v, want a parquet output dir error with ENOTDIR", dir, err)
		}
	}
	if _, err := parquet.New(parquet.Config{}); err == nil {
		t.Error("New without Dir: no error")
	}

	// A good directory is left with only the empty flows directory.
	out := filepath.Join(tmp, "out")
	if _, err := parquet.New(parquet.Config{Dir: out}); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(filepath.Join(out, "flows"))
	if err != nil || len(entries) != 0 {
		t.Errorf("flows dir: %v, %v; want it empty", entries, err)
	}
}

func TestHostSanitized(t *testing.T) {
	dir := t.TempDir()
	s, err := parquet.New(parquet.Config{Dir: dir, Now: newClock(t0).Now, Host: "../evil host/"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Write(context.Background(), genFlows(1, day2, 0)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := files(t, dir)
	want := fmt.Sprintf("flows/dt=2024-03-01/hour=00/flows-20240301T000500Z-.._evil_host_-%d-1.parquet", os.Getpid())
	if len(got) != 1 || got[0] != want {
		t.Errorf("files %q, want [%q]", got, want)
	}
}

// TestConcurrent runs writers, periodic flushes and the clock together under
// the race detector and checks that every row lands exactly once.
func TestConcurrent(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := newClock(t0)
	s := newSink(t, dir, c, 64, time.Second)
	const writers, batches, batchLen = 4, 25, 10

	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for b := range batches {
				id := uint64((w*batches + b) * batchLen)
				start := day1.Add(time.Duration(id) * time.Minute) // spread over hours
				if err := s.Write(ctx, genFlows(batchLen, start, id)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			c.Advance(100 * time.Millisecond)
			if err := s.Flush(ctx); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	const total = writers * batches * batchLen
	st := s.Stats()
	if st.RowsWritten != total || st.RowsBuffered != 0 {
		t.Errorf("stats %+v, want %d rows written", st, total)
	}
	rows := readRows(t, dir)
	got := ids(rows)
	slices.Sort(got)
	if !slices.Equal(got, seqIDs(0, total)) {
		t.Errorf("got %d rows, want ids 0..%d once each", len(got), total-1)
	}
	for _, r := range rows {
		if r.Packets != r.SrcPackets+r.DstPackets {
			t.Fatalf("row %d: packets %d", r.FlowID, r.Packets)
		}
	}
}

func TestRowFromFlow(t *testing.T) {
	flows := sampleFlows()
	tests := []struct {
		flow int
		want parquet.Row
	}{
		{0, parquet.Row{
			FlowID: 1, StartTime: day1, EndTime: day1.Add(250 * time.Millisecond),
			SrcIP: "192.0.2.1", DstIP: "198.51.100.7", SrcPort: 51234, DstPort: 443,
			Protocol: 6, IPVersion: 4, Interface: "eth0",
			SrcPackets: 10, SrcBytes: 1500, DstPackets: 8, DstBytes: 9000, Packets: 18, Bytes: 10500,
			SrcTCPFlags: 0x1b, DstTCPFlags: 0x1a, Final: true, EndReason: "tcp_close",
		}},
		{1, parquet.Row{
			FlowID: -0x0123456789abcdf0, Seq: 3, StartTime: day2, EndTime: day2.Add(59 * time.Second),
			SrcIP: "2001:db8::1", DstIP: "2001:db8::53", SrcPort: 53000, DstPort: 53,
			Protocol: 17, IPVersion: 6, Interface: "eth1",
			SrcPackets: 1 << 40, SrcBytes: 1 << 50, DstPackets: 1, DstBytes: 90,
			Packets: 1<<40 + 1, Bytes: 1<<50 + 90, EndReason: "active",
		}},
		{2, parquet.Row{
			FlowID: 3, StartTime: day1.Add(10 * time.Second), EndTime: day1.Add(11 * time.Second),
			SrcIP: "203.0.113.9", DstIP: "192.0.2.1", SrcPort: 8, Protocol: 1, IPVersion: 4, Interface: "eth0",
			SrcPackets: 2, SrcBytes: 196, DstPackets: 2, DstBytes: 196, Packets: 4, Bytes: 392,
			Final: true, EndReason: "idle",
		}},
		{4, parquet.Row{
			FlowID: 5, Seq: 1, StartTime: day2.Add(time.Second), EndTime: day2.Add(2 * time.Second),
			SrcIP: "10.1.2.3", DstIP: "10.3.2.1", SrcPort: 4789, DstPort: 4789, Protocol: 17, IPVersion: 4,
			VLANID: 100, InnerVLANID: 4094, Interface: "bond0.100",
			SrcPackets: 3, SrcBytes: 450, Packets: 3, Bytes: 450, Final: true, EndReason: "evicted",
		}},
		{5, parquet.Row{
			FlowID: 6, StartTime: day1, EndTime: day1, SrcIP: "192.0.2.2", DstIP: "192.0.2.3",
			Protocol: 47, IPVersion: 4, Interface: "eth0", SrcPackets: 1, SrcBytes: 60, Packets: 1, Bytes: 60,
			EndReason: "unknown",
		}},
	}
	for _, tt := range tests {
		if d := diffRow(parquet.RowFromFlow(&flows[tt.flow]), tt.want); d != "" {
			t.Errorf("flow %d: %s", tt.flow, d)
		}
	}
	if r := parquet.RowFromFlow(&aggregator.Flow{}); r.SrcIP != "" || r.DstIP != "" {
		t.Errorf("absent addresses stored as %q, %q; want empty", r.SrcIP, r.DstIP)
	}
}
