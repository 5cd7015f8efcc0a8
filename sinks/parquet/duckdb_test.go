package parquet_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// duckdbQuery reads the sink's output the way the package documentation
// tells users to, with a decoy temporary file in place that the glob must
// skip.
const duckdbQuery = `
import duckdb, json, sys
src = "read_parquet('" + sys.argv[1] + "/flows/**/*.parquet', hive_partitioning = true, hive_types = {'hour': INTEGER})"
con = duckdb.connect()
def one(sql):
    return con.execute(sql.replace("SRC", src)).fetchone()
n, total_bytes, dates, hours = one("SELECT count(*), sum(bytes), count(DISTINCT dt), list(DISTINCT hour ORDER BY hour) FROM SRC")
start_type, dt_type, id_type = one("SELECT typeof(start_time), typeof(dt), typeof(flow_id) FROM SRC LIMIT 1")
start_ns, hex_id = one("SELECT epoch_ns(start_time), lower(to_hex(flow_id)) FROM SRC WHERE seq = 3")
print(json.dumps(dict(rows=n, bytes=int(total_bytes), dates=dates, hours=hours, start_type=start_type,
                      dt_type=dt_type, id_type=id_type, start_ns=start_ns, hex_id=hex_id)))
`

func TestDuckDB(t *testing.T) {
	if out, err := exec.Command("python3", "-c", "import duckdb").CombinedOutput(); err != nil {
		t.Skipf("skipping: DuckDB's Python module is not available (pip install duckdb): %v: %s", err, strings.TrimSpace(string(out)))
	}
	dir := t.TempDir()
	s := newSink(t, dir, newClock(t0), 0, 0)
	flows := sampleFlows()
	if err := s.Write(context.Background(), flows); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	decoy := filepath.Join(dir, "flows", "dt=2024-03-01", "hour=00", ".flows-half-written.parquet.tmp")
	if err := os.WriteFile(decoy, []byte("PAR1 not a whole file"), 0o644); err != nil {
		t.Fatal(err)
	}

	out, err := exec.Command("python3", "-c", duckdbQuery, dir).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("duckdb: %v\n%s", err, stderr)
	}
	var got struct {
		Rows      int
		Bytes     int64
		Dates     int
		Hours     []int
		StartType string `json:"start_type"`
		DtType    string `json:"dt_type"`
		IDType    string `json:"id_type"`
		StartNs   int64  `json:"start_ns"`
		HexID     string `json:"hex_id"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("duckdb output %q: %v", out, err)
	}
	var wantBytes int64
	for i := range flows {
		wantBytes += int64(flows[i].Bytes())
	}
	if got.Rows != len(flows) || got.Bytes != wantBytes {
		t.Errorf("duckdb counts %d rows, %d bytes; want %d, %d", got.Rows, got.Bytes, len(flows), wantBytes)
	}
	if got.Dates != 2 || len(got.Hours) != 2 || got.Hours[0] != 0 || got.Hours[1] != 23 {
		t.Errorf("duckdb partitions: %d dates, hours %v; want 2 dates, hours [0 23]", got.Dates, got.Hours)
	}
	// TIMESTAMP WITH TIME ZONE, TIMESTAMPTZ_NS or TIMESTAMP_NS depending
	// on the DuckDB version; never a bare integer.
	if !strings.HasPrefix(got.StartType, "TIMESTAMP") || got.DtType != "DATE" || got.IDType != "BIGINT" {
		t.Errorf("duckdb types: start_time %s, dt %s, flow_id %s", got.StartType, got.DtType, got.IDType)
	}
	// flows[1]: nanoseconds survive, and the unsigned ID reads back in hex.
	if got.StartNs != flows[1].Start.UnixNano() || got.HexID != "fedcba9876543210" {
		t.Errorf("duckdb start %d, id %s; want %d, fedcba9876543210", got.StartNs, got.HexID, flows[1].Start.UnixNano())
	}
}
