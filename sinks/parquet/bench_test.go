package parquet_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/flowsensor/flowsensor/sinks/parquet"
)

// BenchmarkParquetWrite measures flows written per second, file commit
// (zstd, footer, fsync, rename) included, in files of 100,000 rows.
func BenchmarkParquetWrite(b *testing.B) {
	const perFile = 100_000
	ctx := context.Background()
	dir := b.TempDir()
	s, err := parquet.New(parquet.Config{Dir: dir, MaxRows: perFile, MaxAge: time.Hour, Host: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	flows := genFlows(perFile, day2, 0)
	var bytes int64
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Write(ctx, flows); err != nil {
			b.Fatal(err)
		}
		if err := s.Flush(ctx); err != nil { // due by MaxRows
			b.Fatal(err)
		}
		b.StopTimer()
		bytes += removeFiles(b, dir)
		b.StartTimer()
	}
	if st := s.Stats(); st.RowsBuffered != 0 || st.FilesWritten != uint64(b.N) {
		b.Fatalf("stats %+v after %d iterations", st, b.N)
	}
	b.ReportMetric(float64(b.N*perFile)/b.Elapsed().Seconds(), "flows/s")
	b.ReportMetric(float64(bytes)/float64(b.N*perFile), "B/flow-on-disk")
}

// removeFiles deletes the written files, so a long run does not fill the
// disk, and returns their total size.
func removeFiles(b *testing.B, dir string) int64 {
	matches, err := filepath.Glob(filepath.Join(dir, "flows", "*", "*", "*.parquet"))
	if err != nil {
		b.Fatal(err)
	}
	var n int64
	for _, m := range matches {
		st, err := os.Stat(m)
		if err != nil {
			b.Fatal(err)
		}
		n += st.Size()
		if err := os.Remove(m); err != nil {
			b.Fatal(err)
		}
	}
	return n
}

func BenchmarkRowFromFlow(b *testing.B) {
	flows := sampleFlows()
	var sink parquet.Row
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		sink = parquet.RowFromFlow(&flows[i%len(flows)])
		i++
	}
	_ = sink
}
