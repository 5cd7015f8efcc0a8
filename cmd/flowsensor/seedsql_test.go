package main

import (
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flowsensor/flowsensor/internal/corpus"
	"github.com/flowsensor/flowsensor/internal/lab"
)

// readmeQueries returns the SQL blocks of README.md: the view, then the seed
// queries in order. The test runs what the README shows, word for word.
func readmeQueries(t *testing.T) (view string, queries []string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(corpus.RepoRoot(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile("(?s)```sql\n(.*?)```").FindAllStringSubmatch(string(b), -1) {
		q := strings.TrimSpace(m[1])
		switch {
		case strings.HasPrefix(q, "CREATE VIEW flows"):
			view = q
		case strings.HasPrefix(q, "-- seed query"):
			queries = append(queries, strings.TrimSuffix(q, ";"))
		}
	}
	if view == "" || len(queries) != 3 {
		t.Fatalf("README: view %q, %d seed queries; want the view and 3", view, len(queries))
	}
	return view, queries
}

// duckdb runs queries after view and returns each result as rows of strings
// (timestamps as UTC ISO text, numbers as DuckDB prints them).
func duckdb(t *testing.T, view string, queries []string) [][][]string {
	t.Helper()
	if exec.Command("python3", "-c", "import duckdb").Run() != nil {
		if os.Getenv(lab.RequireEnv) != "" {
			t.Fatal("DuckDB (python3 -m pip install duckdb) is required when " + lab.RequireEnv + " is set")
		}
		t.Skip("DuckDB python module not installed")
	}
	script := `import duckdb, json, sys
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
con.execute(sys.argv[1])
out = []
for q in json.loads(sys.argv[2]):
    rel = con.sql(q)
    cols = ", ".join('CAST("%s" AS VARCHAR)' % c for c in rel.columns)
    out.append([list(r) for r in con.sql("SELECT %s FROM (%s)" % (cols, q)).fetchall()])
print(json.dumps(out))
`
	qs, _ := json.Marshal(queries)
	b, err := exec.Command("python3", "-c", script, view, string(qs)).CombinedOutput()
	if err != nil {
		t.Fatalf("duckdb: %v\n%s", err, b)
	}
	var res [][][]string
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatalf("duckdb output %s: %v", b, err)
	}
	return res
}

// TestSeedQueries replays a capture, runs the README's seed queries in
// DuckDB over the Parquet output, and checks the answers against tshark's
// per-packet table of the same capture.
func TestSeedQueries(t *testing.T) {
	capture := filepath.Join(corpus.RepoRoot(), "testdata", "corpus", "tcp-dns-arp-http-google.pcap")
	if dir, ok := corpus.SharedDir(); ok {
		capture = filepath.Join(dir, "many-flows-cip-ics.pcap") // 26068 packets, 3017 conversations
	}
	view, queries := readmeQueries(t)
	cfg := DefaultConfig()
	cfg.Out = t.TempDir()
	rows, stderr, err := replayForTestIn(t, cfg.Out, capture)
	if err != nil {
		t.Fatalf("replay: %v\n%s", err, stderr)
	}
	view = strings.Replace(view, "flowdata/flows", cfg.Out+"/flows", 1)
	res := duckdb(t, view, queries)
	o := seedOracle(t, capture)

	// 1: reports, packets, latest packet.
	if got := res[0][0]; got[0] != strconv.Itoa(len(rows)) || got[1] != strconv.FormatInt(o.packets, 10) || !sameTime(got[2], o.latest) {
		t.Errorf("query 1: %v, want [%d %d %s]", got, len(rows), o.packets, o.latest.Format(time.RFC3339Nano))
	}
	// 2: per protocol.
	if len(res[1]) != len(o.protos) {
		t.Errorf("query 2: %d protocols, tshark %d: %v", len(res[1]), len(o.protos), res[1])
	}
	for _, r := range res[1] {
		p := o.protos[r[0]]
		avg, _ := strconv.ParseFloat(r[3], 64)
		want := math.Round(float64(p.bytes)/float64(p.packets)*100) / 100
		if r[1] != strconv.FormatInt(p.packets, 10) || r[2] != strconv.FormatInt(p.max, 10) || avg != want {
			t.Errorf("query 2, protocol %s: %v, tshark packets %d max %d avg %.2f", r[0], r[1:], p.packets, p.max, want)
		}
	}
	// 3: busiest milliseconds by conversations begun.
	if len(res[2]) != len(o.busiest) {
		t.Fatalf("query 3: %d rows, want %d", len(res[2]), len(o.busiest))
	}
	for i, r := range res[2] {
		if !sameTime(r[0], o.busiest[i].ms) || r[1] != strconv.Itoa(o.busiest[i].n) {
			t.Errorf("query 3 row %d: %v, tshark %s %d", i, r, o.busiest[i].ms.Format(time.RFC3339Nano), o.busiest[i].n)
		}
	}
}

func sameTime(s string, want time.Time) bool {
	got, err := time.Parse("2006-01-02 15:04:05.999999999-07", s)
	if err != nil {
		got, err = time.Parse("2006-01-02 15:04:05.999999999Z07", s)
	}
	return err == nil && got.Equal(want)
}

type seedAnswers struct {
	packets int64
	latest  time.Time
	protos  map[string]struct{ packets, bytes, max int64 }
	busiest []struct {
		ms time.Time
		n  int
	}
}

// seedOracle answers the three questions from tshark's per-packet table.
func seedOracle(t *testing.T, capture string) seedAnswers {
	t.Helper()
	rows, err := corpus.TSharkPackets(capture)
	if err != nil {
		t.Fatal(err)
	}
	a := seedAnswers{protos: map[string]struct{ packets, bytes, max int64 }{}}
	firstSeen := map[oracleKey]time.Time{}
	for _, r := range rows {
		if r["communityid"] == "" {
			continue // not IP
		}
		ns, _ := strconv.ParseInt(strings.Replace(r["frame.time_epoch"], ".", "", 1), 10, 64)
		ts := time.Unix(0, ns).UTC() // frame.time_epoch has nine decimals
		n, _ := strconv.ParseInt(r["frame.len"], 10, 64)
		a.packets++
		if ts.After(a.latest) {
			a.latest = ts
		}
		proto := first(r["ip.proto"])
		switch {
		case r["tcp.srcport"] != "":
			proto = "6"
		case r["udp.srcport"] != "":
			proto = "17"
		case r["icmpv6.type"] != "":
			proto = "58"
		}
		p := a.protos[proto]
		p.packets++
		p.bytes += n
		p.max = max(p.max, n)
		a.protos[proto] = p
		vlan, inner := vlanTags(r["vlan.id"])
		k := oracleKey{vlan, inner, r["communityid"]}
		if f, ok := firstSeen[k]; !ok || ts.Before(f) {
			firstSeen[k] = ts
		}
	}
	perMS := map[time.Time]int{}
	for _, ts := range firstSeen {
		perMS[ts.Truncate(time.Millisecond)]++
	}
	for ms, n := range perMS {
		a.busiest = append(a.busiest, struct {
			ms time.Time
			n  int
		}{ms, n})
	}
	sort.Slice(a.busiest, func(i, j int) bool {
		if a.busiest[i].n != a.busiest[j].n {
			return a.busiest[i].n > a.busiest[j].n
		}
		return a.busiest[i].ms.Before(a.busiest[j].ms)
	})
	a.busiest = a.busiest[:min(10, len(a.busiest))]
	if a.packets == 0 {
		t.Fatalf("no IP packet in %s", capture)
	}
	return a
}

// TestConversationQuery replays a capture with the default timeouts, so that
// quiet conversations are split into several flows, and checks that the
// README's per-conversation query gives tshark's counts for each.
func TestConversationQuery(t *testing.T) {
	capture := filepath.Join(corpus.RepoRoot(), "testdata", "corpus", "vlan11-dns-icmp-arp.pcap") // 85 s
	if dir, ok := corpus.SharedDir(); ok {
		capture = filepath.Join(dir, "many-flows-cip-ics.pcap") // 174 s
	}
	b, err := os.ReadFile(filepath.Join(corpus.RepoRoot(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var query string
	for _, m := range regexp.MustCompile("(?s)```sql\n(.*?)```").FindAllStringSubmatch(string(b), -1) {
		if q := strings.TrimSpace(m[1]); strings.HasPrefix(q, "SELECT vlan_id, inner_vlan_id, community_id") {
			query = strings.TrimSuffix(q, ";")
		}
	}
	if query == "" {
		t.Fatal("README has no per-conversation query")
	}
	cfg := DefaultConfig()
	cfg.Out = t.TempDir()
	var stderr strings.Builder
	if err := runReplay(t.Context(), cfg, []string{capture}, false, &stderr); err != nil {
		t.Fatalf("replay: %v\n%s", err, stderr.String())
	}
	query = strings.Replace(query, "flowdata/flows", cfg.Out+"/flows", 1)
	res := duckdb(t, "CREATE VIEW unused AS SELECT 1", []string{query})[0]

	rows, err := corpus.TSharkPackets(capture)
	if err != nil {
		t.Fatal(err)
	}
	want := tsharkFlows(t, capture, rows)
	got := map[oracleKey]counts{}
	for _, r := range res {
		vlan, _ := strconv.Atoi(r[0])
		inner, _ := strconv.Atoi(r[1])
		packets, _ := strconv.ParseInt(r[6], 10, 64)
		bytes, _ := strconv.ParseInt(r[7], 10, 64)
		got[oracleKey{int32(vlan), int32(inner), r[2]}] = counts{packets, bytes}
	}
	compareFlows(t, want, got)
	if reports := len(readRows(t, cfg.Out)); reports <= len(got) {
		t.Errorf("%d reports for %d conversations: nothing was split, the test shows nothing", reports, len(got))
	}
}
