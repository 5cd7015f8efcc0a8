package parquet_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	pq "github.com/parquet-go/parquet-go"

	"github.com/flowsensor/flowsensor/sinks/parquet"
)

// committed lists the visible Parquet files under dir/flows.
func committed(t *testing.T, dir string) []string {
	t.Helper()
	all, err := filepath.Glob(filepath.Join(dir, "flows", "dt=*", "hour=*", "*.parquet"))
	if err != nil {
		t.Fatal(err)
	}
	return all
}

func allRows(t *testing.T, dir string) []parquet.Row {
	t.Helper()
	var rows []parquet.Row
	for _, f := range committed(t, dir) {
		rs, err := pq.ReadFile[parquet.Row](f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		rows = append(rows, rs...)
	}
	slices.SortFunc(rows, func(a, b parquet.Row) int { return int(a.FlowID - b.FlowID) })
	return rows
}

// smallFiles writes n flows in files of 100 rows over two hours of 2020.
func smallFiles(t *testing.T, dir string, n int) {
	t.Helper()
	start := time.Date(2020, 1, 1, 10, 30, 0, 0, time.UTC)
	c := newClock(start)
	s := newSink(t, dir, c, 100, time.Hour)
	ctx := context.Background()
	for i := 0; i < n; i += 50 {
		flows := genFlows(50, start.Add(time.Duration(i)*time.Second*3), uint64(i))
		if err := s.Write(ctx, flows); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestCompactMergesClosedPartitions(t *testing.T) {
	dir := t.TempDir()
	smallFiles(t, dir, 2000)
	before := allRows(t, dir)
	nBefore := len(committed(t, dir))
	parts := map[string]bool{}
	for _, f := range committed(t, dir) {
		parts[filepath.Dir(f)] = true
	}
	// A file being written, in a partition being compacted.
	part := filepath.Dir(committed(t, dir)[0])
	hidden := filepath.Join(part, ".flows-inflight.parquet.tmp")
	if err := os.WriteFile(hidden, []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}

	st, err := parquet.Compact(dir, parquet.CompactOptions{})
	if err != nil {
		t.Fatal(err)
	}
	after := allRows(t, dir)
	files := committed(t, dir)
	if st.Partitions != len(parts) || len(files) != len(parts) || st.Merged != nBefore || st.Written != len(parts) || st.Rows != int64(len(before)) {
		t.Fatalf("stats %+v, %d files left (from %d)", st, len(files), nBefore)
	}
	if len(after) != len(before) {
		t.Fatalf("%d rows after, %d before", len(after), len(before))
	}
	for i := range before {
		if d := diffRow(after[i], before[i]); d != "" {
			t.Fatalf("row %d changed: %s", i, d)
		}
	}
	if b, err := os.ReadFile(hidden); err != nil || string(b) != "partial" {
		t.Fatalf("file being written was touched: %v", err)
	}
	// Nothing left to do: a second run changes nothing.
	if st, err := parquet.Compact(dir, parquet.CompactOptions{}); err != nil || st.Merged != 0 {
		t.Fatalf("second run: %+v %v", st, err)
	}
}

func TestCompactLeavesRecentAndLargeAlone(t *testing.T) {
	dir := t.TempDir()
	smallFiles(t, dir, 1000)
	n := len(committed(t, dir))
	// Partitions of 2020, 10:00 and 11:00: with "now" at 12:30 and a minimum
	// age of 2h, neither hour ended long enough ago.
	now := func() time.Time { return time.Date(2020, 1, 1, 12, 30, 0, 0, time.UTC) }
	if st, err := parquet.Compact(dir, parquet.CompactOptions{Now: now}); err != nil || st.Merged != 0 || len(committed(t, dir)) != n {
		t.Fatalf("recent partitions compacted: %+v %v", st, err)
	}
	// Files already at the target size stay as they are.
	if st, err := parquet.Compact(dir, parquet.CompactOptions{TargetBytes: 1}); err != nil || st.Merged != 0 {
		t.Fatalf("large files merged: %+v %v", st, err)
	}
	// A dry run says what it would do and does nothing.
	st, err := parquet.Compact(dir, parquet.CompactOptions{DryRun: true})
	if err != nil || st.Merged != n || len(committed(t, dir)) != n {
		t.Fatalf("dry run: %+v %v, %d files", st, err, len(committed(t, dir)))
	}
}

func TestCompactSkipsOtherSchemas(t *testing.T) {
	dir := t.TempDir()
	smallFiles(t, dir, 400)
	part := filepath.Dir(committed(t, dir)[0])
	type oldRow struct {
		FlowID int64 `parquet:"flow_id"`
	}
	old := filepath.Join(part, "flows-old-schema.parquet")
	if err := pq.WriteFile(old, []oldRow{{1}, {2}}); err != nil {
		t.Fatal(err)
	}
	st, err := parquet.Compact(dir, parquet.CompactOptions{})
	if err != nil || st.Skipped != 1 {
		t.Fatalf("%+v %v", st, err)
	}
	if _, err := os.Stat(old); err != nil {
		t.Fatalf("file of another schema removed: %v", err)
	}
}

// TestCompactRecoversFromCrash finishes a merge whose inputs were not yet
// removed, and abandons one whose output was never published.
func TestCompactRecoversFromCrash(t *testing.T) {
	dir := t.TempDir()
	smallFiles(t, dir, 400)
	files := committed(t, dir)
	part := filepath.Dir(files[0])
	var inPart []string
	for _, f := range files {
		if filepath.Dir(f) == part {
			inPart = append(inPart, filepath.Base(f))
		}
	}
	if len(inPart) < 3 {
		t.Fatalf("want at least 3 files in %s, have %v", part, inPart)
	}
	rowsBefore := len(allRows(t, dir))

	// Crash after publishing: "merged" is a copy of inputs[0] standing for
	// the merge of inputs[0] and inputs[1], both still present.
	data, _ := os.ReadFile(filepath.Join(part, inPart[0]))
	merged := "flows-compacted-crash.parquet"
	if err := os.WriteFile(filepath.Join(part, merged), data, 0o644); err != nil {
		t.Fatal(err)
	}
	journal := `{"output":"` + merged + `","inputs":["` + inPart[0] + `"]}`
	if err := os.WriteFile(filepath.Join(part, ".compact-journal.json"), []byte(journal), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := parquet.Compact(dir, parquet.CompactOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(part, inPart[0])); !os.IsNotExist(err) {
		t.Fatalf("input of a published merge still there: %v", err)
	}
	if n := len(allRows(t, dir)); n != rowsBefore {
		t.Fatalf("%d rows after recovery, %d before", n, rowsBefore)
	}

	// Crash before publishing: the journal names an output that does not exist.
	journal = `{"output":"flows-compacted-never.parquet","inputs":["x.parquet"]}`
	if err := os.WriteFile(filepath.Join(part, ".compact-journal.json"), []byte(journal), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := parquet.Compact(dir, parquet.CompactOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(part, ".compact-journal.json")); !os.IsNotExist(err) {
		t.Fatal("journal of an abandoned merge left behind")
	}
	if n := len(allRows(t, dir)); n != rowsBefore {
		t.Fatalf("%d rows, want %d", n, rowsBefore)
	}
	for _, f := range committed(t, dir) {
		if strings.Contains(f, "never") {
			t.Fatalf("unexpected %s", f)
		}
	}
}
