package elasticsearch

// Tests against a real Elasticsearch, at FLOWSENSOR_ES_URL (start one with
// `make es`, or scripts/elasticsearch.sh start). Without it they skip, unless
// FLOWSENSOR_REQUIRE_PRIVILEGED is set (CI), where they fail. The outage test
// stops and restarts that Elasticsearch with scripts/elasticsearch.sh, so it
// runs only when the script manages the one at FLOWSENSOR_ES_URL.
//
// The oracle queries use plain net/http, not the client under test.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flowsensor/flowsensor/aggregator"
)

const esScript = "../../scripts/elasticsearch.sh"

// esURL returns the Elasticsearch to test against, or skips.
func esURL(t testing.TB) string {
	t.Helper()
	u := strings.TrimRight(os.Getenv("FLOWSENSOR_ES_URL"), "/")
	if u == "" {
		if os.Getenv("FLOWSENSOR_REQUIRE_PRIVILEGED") != "" {
			t.Fatal("FLOWSENSOR_ES_URL is not set but FLOWSENSOR_REQUIRE_PRIVILEGED is: CI must start Elasticsearch " +
				"(scripts/elasticsearch.sh start) and export FLOWSENSOR_ES_URL")
		}
		t.Skip("skipping: no Elasticsearch; run `make es` and export FLOWSENSOR_ES_URL=http://127.0.0.1:9200")
	}
	return u
}

// esPrefix returns an index prefix unique to this test run, and deletes
// its indices and template when the test ends.
func esPrefix(t testing.TB, url string) string {
	t.Helper()
	var r [4]byte
	rand.Read(r[:])
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	prefix := "fstest-" + name + "-" + hex.EncodeToString(r[:])
	t.Cleanup(func() { esDeleteAll(t, url, prefix) })
	return prefix
}

// esDeleteAll deletes the prefix's indices (by name: clusters refuse
// wildcard deletes by default) and its index template.
func esDeleteAll(t testing.TB, url, prefix string) {
	status, body := esDo(t, url, "GET", "/_cat/indices/"+prefix+"-*?h=index&expand_wildcards=all", "")
	if status == 200 {
		names := strings.Fields(string(body))
		if len(names) > 0 {
			esDo(t, url, "DELETE", "/"+strings.Join(names, ","), "")
		}
	}
	esDo(t, url, "DELETE", "/_index_template/"+prefix, "")
}

func esDo(t testing.TB, url, method, path, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, b
}

func esJSON(t testing.TB, url, method, path, body string, into any) {
	t.Helper()
	status, b := esDo(t, url, method, path, body)
	if status != 200 {
		t.Fatalf("%s %s: %d %s", method, path, status, b)
	}
	if into != nil {
		if err := json.Unmarshal(b, into); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
}

func esCount(t testing.TB, url, prefix, query string) int {
	t.Helper()
	esJSON(t, url, "POST", "/"+prefix+"-*/_refresh", "", nil)
	var r struct{ Count int }
	if query == "" {
		query = `{"query":{"match_all":{}}}`
	}
	esJSON(t, url, "POST", "/"+prefix+"-*/_count", query, &r)
	return r.Count
}

// esIDs returns index/_id of every document under prefix, counting repeats.
func esIDs(t testing.TB, url, prefix string) map[string]int {
	t.Helper()
	esJSON(t, url, "POST", "/"+prefix+"-*/_refresh", "", nil)
	ids := map[string]int{}
	var after []any
	for {
		q := map[string]any{"size": 5000, "_source": false, "sort": []any{map[string]any{"flow.id": "asc"}, map[string]any{"flowsensor.seq": "asc"}, map[string]any{"_doc": "asc"}}}
		if after != nil {
			q["search_after"] = after
		}
		body, _ := json.Marshal(q)
		var r struct {
			Hits struct {
				Hits []struct {
					Index string `json:"_index"`
					ID    string `json:"_id"`
					Sort  []any  `json:"sort"`
				} `json:"hits"`
			} `json:"hits"`
		}
		esJSON(t, url, "POST", "/"+prefix+"-*/_search", string(body), &r)
		if len(r.Hits.Hits) == 0 {
			return ids
		}
		for _, h := range r.Hits.Hits {
			ids[h.Index+"/"+h.ID]++
			after = h.Sort
		}
	}
}

func wantIDs(prefix string, flows []aggregator.Flow) map[string]int {
	ids := map[string]int{}
	for i := range flows {
		ids[prefix+"-"+indexDay(flows[i].Start)+"/"+docID(&flows[i])]++
	}
	return ids
}

func esConfig(t testing.TB, url, prefix string) Config {
	c := DefaultConfig()
	c.URLs = []string{url}
	c.IndexPrefix = prefix
	c.SetOutputDir(t.TempDir())
	c.FlushInterval = 50 * time.Millisecond
	c.MaxBackoff = time.Second
	c.BulkBytes = 256 << 10
	c.Logger = quietLogger()
	c.ObserverHostname = "sensor-test"
	return c
}

func writeAll(t testing.TB, s *Sink, flows []aggregator.Flow, chunk int) {
	t.Helper()
	for i := 0; i < len(flows); i += chunk {
		if err := s.Write(context.Background(), flows[i:min(i+chunk, len(flows))]); err != nil {
			t.Fatal(err)
		}
	}
}

// TestESIndex indexes a few thousand flows of every shape over two days and
// checks them in Elasticsearch: count, _ids, a terms aggregation and sums,
// the mapping, and nanosecond timestamps.
func TestESIndex(t *testing.T) {
	url := esURL(t)
	prefix := esPrefix(t, url)
	cfg := esConfig(t, url, prefix)
	// The integ-test distribution has no ILM: the sink must notice and
	// install the template without a lifecycle setting it would refuse.
	cfg.Retention = 720 * time.Hour
	s := newSink(t, cfg)
	// 23:59:58.5 plus 1ms per flow: the first 1500 on one day, the rest on the next.
	flows := append(sampleFlows(), genFlows(4000, time.Date(2024, 3, 1, 23, 59, 58, 500e6, time.UTC), 11)...)
	writeAll(t, s, flows, 250)
	if err := closeSink(t, s); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	checkInvariant(t, st)
	if st.Indexed != uint64(len(flows)) || st.Spooled != 0 || st.DeadLettered != 0 || st.Retries != 0 {
		t.Fatalf("stats %+v", st)
	}

	if n := esCount(t, url, prefix, ""); n != len(flows) {
		t.Fatalf("count %d, want %d", n, len(flows))
	}
	if got, want := esIDs(t, url, prefix), wantIDs(prefix, flows); !maps.Equal(got, want) {
		t.Fatalf("_ids differ: %d found, %d expected", len(got), len(want))
	}

	// Terms aggregation on network.transport, with packet and byte sums.
	type sums struct{ docs, packets, bytes float64 }
	want := map[string]sums{}
	var totalBytes float64
	for i := range flows {
		f := &flows[i]
		name := transports[f.Protocol]
		if name == "" {
			name = fmt.Sprint(f.Protocol)
		}
		w := want[name]
		w.docs++
		w.packets += float64(f.Packets())
		w.bytes += float64(f.Bytes())
		want[name] = w
		totalBytes += float64(f.Bytes())
	}
	var agg struct {
		Aggregations struct {
			Transport struct {
				Buckets []struct {
					Key      string
					DocCount float64 `json:"doc_count"`
					Packets  struct{ Value float64 }
					Bytes    struct{ Value float64 }
				}
			}
			Total struct{ Value float64 }
		}
	}
	esJSON(t, url, "POST", "/"+prefix+"-*/_search", `{"size":0,"aggs":{
		"transport":{"terms":{"field":"network.transport","size":50},"aggs":{"packets":{"sum":{"field":"network.packets"}},"bytes":{"sum":{"field":"network.bytes"}}}},
		"total":{"sum":{"field":"network.bytes"}}}}`, &agg)
	got := map[string]sums{}
	for _, b := range agg.Aggregations.Transport.Buckets {
		got[b.Key] = sums{b.DocCount, b.Packets.Value, b.Bytes.Value}
	}
	if !reflect.DeepEqual(got, want) || agg.Aggregations.Total.Value != totalBytes {
		t.Errorf("terms on network.transport:\n got %v\nwant %v (total bytes %v, want %v)", got, want, agg.Aggregations.Total.Value, totalBytes)
	}

	// The template made the mapping: exactly mappings.json in every index.
	var wantMapping map[string]any
	json.Unmarshal(mappingsJSON, &wantMapping)
	var mappings map[string]struct {
		Mappings map[string]any `json:"mappings"`
	}
	esJSON(t, url, "GET", "/"+prefix+"-*/_mapping", "", &mappings)
	if len(mappings) != 3 { // 2024.02.29, 03.01, 03.02
		t.Errorf("indices %v, want three days", slices.Collect(maps.Keys(mappings)))
	}
	for index, m := range mappings {
		if !reflect.DeepEqual(m.Mappings, wantMapping) {
			g, _ := json.Marshal(m.Mappings)
			t.Errorf("%s mapping differs from mappings.json:\n%s", index, g)
		}
	}

	// date_nanos keeps the nanoseconds: a range one nanosecond wide finds
	// exactly the flows that start on that nanosecond.
	q := `{"query":{"range":{"event.start":{"gt":"2024-02-29T23:59:30.123456788Z","lte":"2024-02-29T23:59:30.123456789Z"}}}}`
	if n := esCount(t, url, prefix, q); n != 2 { // sampleFlows 0 and 5
		t.Errorf("flows starting at 23:59:30.123456789: %d, want 2", n)
	}
	// An IPv4-mapped address is searchable as IPv4; VLAN and flags as keywords.
	related := 2 // sample flows 0 and 2
	for i := range flows[7:] {
		if flows[7+i].Dst.String() == "192.0.2.1" {
			related++
		}
	}
	for query, want := range map[string]int{
		`{"query":{"term":{"source.ip":"203.0.113.9"}}}`:                1,
		`{"query":{"term":{"related.ip":"192.0.2.1"}}}`:                 related,
		`{"query":{"term":{"network.inner.vlan.id":"4094"}}}`:           1,
		`{"query":{"term":{"flowsensor.destination.tcp_flags":"cwr"}}}`: 1,
	} {
		if n := esCount(t, url, prefix, query); n != want {
			t.Errorf("%s: %d documents, want %d", query, n, want)
		}
	}
}

// TestESDashboardAggregations runs the aggregations of the Kibana
// dashboard (deploy/kibana) on real documents: a date histogram on the
// date_nanos @timestamp split by transport, top sources by bytes with
// distinct peers, bytes by destination port, and flows by VLAN with the
// untagged ones as the missing bucket.
func TestESDashboardAggregations(t *testing.T) {
	url := esURL(t)
	prefix := esPrefix(t, url)
	s := newSink(t, esConfig(t, url, prefix))
	flows := genFlows(2000, day2, 71)
	writeAll(t, s, flows, 500)
	if err := closeSink(t, s); err != nil {
		t.Fatal(err)
	}
	esJSON(t, url, "POST", "/"+prefix+"-*/_refresh", "", nil)
	var r struct {
		Aggregations struct {
			Time struct {
				Buckets []struct {
					Proto struct{ Buckets []struct{ Key string } } `json:"proto"`
				}
			} `json:"time"`
			Talkers struct {
				Buckets []struct {
					Key   string
					Peers struct{ Value float64 }
				}
			} `json:"talkers"`
			Ports struct{ Buckets []struct{ Key float64 } } `json:"ports"`
			VLAN  struct {
				Buckets []struct {
					Key      string
					DocCount int `json:"doc_count"`
				}
			} `json:"vlan"`
		}
	}
	esJSON(t, url, "POST", "/"+prefix+"-*/_search", `{"size":0,"aggs":{
		"time":{"date_histogram":{"field":"@timestamp","fixed_interval":"1s"},"aggs":{"proto":{"terms":{"field":"network.transport"},"aggs":{"b":{"sum":{"field":"network.bytes"}}}}}},
		"talkers":{"terms":{"field":"source.ip","size":20,"order":{"b":"desc"}},"aggs":{"b":{"sum":{"field":"network.bytes"}},"p":{"sum":{"field":"network.packets"}},"peers":{"cardinality":{"field":"destination.ip"}}}},
		"ports":{"terms":{"field":"destination.port","size":20,"order":{"b":"desc"}},"aggs":{"b":{"sum":{"field":"network.bytes"}}}},
		"vlan":{"terms":{"field":"network.vlan.id","size":20,"missing":"untagged"}}}}`, &r)
	a := r.Aggregations
	if len(a.Time.Buckets) != 2 || len(a.Time.Buckets[0].Proto.Buckets) == 0 || len(a.Talkers.Buckets) != 20 ||
		a.Talkers.Buckets[0].Peers.Value != 1 || len(a.Ports.Buckets) != 3 {
		t.Errorf("aggregations %+v", a)
	}
	vlans := map[string]int{}
	for _, b := range a.VLAN.Buckets {
		vlans[b.Key] = b.DocCount
	}
	if !reflect.DeepEqual(vlans, map[string]int{"untagged": 1600, "100": 134, "101": 133, "102": 133}) {
		t.Errorf("flows by VLAN %v", vlans)
	}
}

// stopper controls the Elasticsearch at url with scripts/elasticsearch.sh,
// if that is the one the script manages.
func stopper(t *testing.T, url string) func(cmd string) {
	t.Helper()
	out, err := exec.Command(esScript, "url").Output()
	if err != nil || strings.TrimRight(strings.TrimSpace(string(out)), "/") != url || exec.Command(esScript, "status").Run() != nil {
		msg := fmt.Sprintf("%s does not manage the Elasticsearch at %s (it manages %q, %v): the outage test stops and starts it", esScript, url, strings.TrimSpace(string(out)), err)
		if os.Getenv("FLOWSENSOR_REQUIRE_PRIVILEGED") != "" {
			t.Fatal(msg)
		}
		t.Skip("skipping: " + msg)
	}
	run := func(cmd string) {
		c := exec.Command(esScript, cmd)
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", esScript, cmd, err, out)
		}
	}
	t.Cleanup(func() { run("start") }) // whatever happens, leave it running
	return run
}

// TestESOutage stops Elasticsearch in the middle of a stream of flows, keeps
// writing, starts it again, and checks that every flow is there exactly once
// and the spool is empty.
func TestESOutage(t *testing.T) {
	url := esURL(t)
	es := stopper(t, url)
	prefix := esPrefix(t, url)
	cfg := esConfig(t, url, prefix)
	cfg.BulkBytes = 128 << 10
	s := newSink(t, cfg)
	flows := genFlows(8000, day2, 21)

	// A steady stream, 50 flows every 20ms, from before the stop to after
	// the start, so that bulk requests are in flight when Elasticsearch goes.
	written := make(chan struct{})
	go func() {
		defer close(written)
		for i := 0; i < len(flows); i += 50 {
			if err := s.Write(context.Background(), flows[i:i+50]); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	waitFor(t, 2*time.Minute, "the first documents indexed", func() bool { return s.Stats().Indexed >= 1000 })
	es("stop")
	waitFor(t, 2*time.Minute, "documents in the spool", func() bool {
		st := s.Stats()
		return st.SpoolDocs > 0 && st.Queued == 0
	})
	mid := s.Stats()
	t.Logf("during the outage: %+v", mid)
	if segs, _ := filepath.Glob(filepath.Join(cfg.SpoolDir, "*.seg")); len(segs) == 0 {
		t.Fatal("no spool segment during the outage")
	}

	es("start")
	<-written
	waitFor(t, 5*time.Minute, "the spool to drain", func() bool {
		st := s.Stats()
		return st.SpoolDocs == 0 && st.Queued == 0 && st.Indexed+st.Duplicates == uint64(len(flows))
	})
	if err := closeSink(t, s); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	t.Logf("after: %+v", st)
	checkInvariant(t, st)
	if st.Spooled == 0 || st.Replayed == 0 || st.Retries == 0 || st.Lost() != 0 || st.DeadLettered != 0 {
		t.Errorf("stats %+v", st)
	}
	if n := esCount(t, url, prefix, ""); n != len(flows) {
		t.Errorf("count %d, want %d", n, len(flows))
	}
	got, want := esIDs(t, url, prefix), wantIDs(prefix, flows)
	if !maps.Equal(got, want) {
		missing, dup := 0, 0
		for id, n := range want {
			if got[id] == 0 {
				missing++
			}
			if got[id] > n {
				dup++
			}
		}
		t.Errorf("_ids: %d missing, %d duplicated, %d found in all", missing, dup, len(got))
	}
	if segs, _ := filepath.Glob(filepath.Join(cfg.SpoolDir, "*.seg")); len(segs) != 0 {
		t.Errorf("spool not empty: %v", segs)
	}
}

// TestESRejections: a read-only-allow-delete block answers 429, a write
// block 403: both are retried (and spooled) until the block is lifted. A
// document the strict mapping refuses goes to the dead-letter file.
func TestESRejections(t *testing.T) {
	url := esURL(t)
	for _, block := range []string{"index.blocks.read_only_allow_delete", "index.blocks.write"} {
		t.Run(block, func(t *testing.T) {
			prefix := esPrefix(t, url)
			cfg := esConfig(t, url, prefix)
			s := newSink(t, cfg)
			index := prefix + "-2024.03.01"
			esJSON(t, url, "PUT", "/"+index, "", nil) // created through the template
			esJSON(t, url, "PUT", "/"+index+"/_settings", `{"`+block+`":true}`, nil)
			flows := genFlows(600, day2, 31)
			writeAll(t, s, flows, 100)
			waitFor(t, 2*time.Minute, "retries and spooling", func() bool {
				st := s.Stats()
				return st.Retries >= 2 && st.SpoolDocs > 0
			})
			if st := s.Stats(); st.Indexed != 0 || st.DeadLettered != 0 {
				t.Fatalf("while blocked: %+v", st)
			}
			esJSON(t, url, "PUT", "/"+index+"/_settings", `{"`+block+`":null}`, nil)
			waitFor(t, 2*time.Minute, "indexing after the block", func() bool { return s.Stats().Indexed == 600 })
			if err := closeSink(t, s); err != nil {
				t.Fatal(err)
			}
			st := s.Stats()
			checkInvariant(t, st)
			if st.Replayed == 0 || st.SpoolDocs != 0 {
				t.Errorf("stats %+v", st)
			}
			if n := esCount(t, url, prefix, ""); n != 600 {
				t.Errorf("count %d", n)
			}
		})
	}

	t.Run("dead-letter", func(t *testing.T) {
		prefix := esPrefix(t, url)
		cfg := esConfig(t, url, prefix)
		s := newSink(t, cfg)
		// Test-only: every fifth document gets a field the strict mapping
		// refuses; and one flow starts before 1970, which date_nanos cannot hold.
		s.mutate = func(f *aggregator.Flow, body []byte) []byte {
			if f.ID%5 == 0 {
				return append(body[:len(body)-1], `,"bogus":1}`...)
			}
			return body
		}
		flows := genFlows(200, day2, 0)
		for i := range flows {
			flows[i].ID = uint64(i)
		}
		old := sampleFlows()[0]
		old.ID, old.Start, old.End = 1001, time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC), time.Date(1969, 12, 31, 0, 0, 1, 0, time.UTC)
		flows = append(flows, old)
		writeAll(t, s, flows, 50)
		if err := closeSink(t, s); err != nil {
			t.Fatal(err)
		}
		st := s.Stats()
		checkInvariant(t, st)
		if st.DeadLettered != 41 || st.Indexed != 160 || st.Retries != 0 {
			t.Fatalf("stats %+v, want 41 dead-lettered, 160 indexed", st)
		}
		if n := esCount(t, url, prefix, ""); n != 160 {
			t.Errorf("count %d, want 160", n)
		}
		f, err := os.Open(cfg.DeadLetterPath)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		types := map[string]int{}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var dl struct {
				Index, ID string
				Status    int
				Error     struct{ Type, Reason string }
				Document  map[string]any
			}
			if err := json.Unmarshal(sc.Bytes(), &dl); err != nil {
				t.Fatalf("dead-letter line %q: %v", sc.Bytes(), err)
			}
			if dl.Status != 400 || dl.Document == nil || dl.Error.Reason == "" || !strings.HasPrefix(dl.Index, prefix) {
				t.Errorf("dead letter %+v", dl)
			}
			types[dl.Error.Type]++
		}
		if types["strict_dynamic_mapping_exception"] != 40 || types["document_parsing_exception"] != 1 {
			t.Errorf("dead-letter error types %v", types)
		}
	})
}

// TestESRestart: the spool one sink leaves is replayed by the next, after a
// clean Close and after SIGKILL.
func TestESRestart(t *testing.T) {
	url := esURL(t)
	t.Run("close", func(t *testing.T) {
		prefix := esPrefix(t, url)
		cfg := esConfig(t, url, prefix)
		down := cfg
		down.URLs = []string{"http://127.0.0.1:1"} // nothing listens there
		s := newSink(t, down)
		flows := genFlows(3000, day2, 41)
		writeAll(t, s, flows, 300)
		if err := closeSink(t, s); err != nil {
			t.Fatal(err)
		}
		if st := s.Stats(); st.SpoolDocs != 3000 {
			t.Fatalf("first sink: %+v", st)
		}
		replay(t, cfg, url, prefix, flows)
	})

	t.Run("sigkill", func(t *testing.T) {
		prefix := esPrefix(t, url)
		cfg := esConfig(t, url, prefix)
		// A child process writes to a sink that cannot reach Elasticsearch
		// and says when the spool holds everything; it is then killed.
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "FLOWSENSOR_ES_CHILD_SPOOL="+cfg.SpoolDir, "FLOWSENSOR_ES_CHILD_PREFIX="+prefix)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		ready := false
		for sc.Scan() {
			if sc.Text() == "spooled 3000" {
				ready = true
				break
			}
		}
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		if !ready {
			t.Fatal("the child did not spool its flows")
		}
		replay(t, cfg, url, prefix, genFlows(3000, day2, 51))
	})
}

// TestMain runs the child process of TestESRestart/sigkill when asked to.
func TestMain(m *testing.M) {
	if dir := os.Getenv("FLOWSENSOR_ES_CHILD_SPOOL"); dir != "" {
		spoolChild(dir, os.Getenv("FLOWSENSOR_ES_CHILD_PREFIX"))
		return
	}
	os.Exit(m.Run())
}

// spoolChild writes flows to a sink that cannot reach Elasticsearch, says
// each time the spool holds all so far, and waits to be killed.
func spoolChild(dir, prefix string) {
	cfg := DefaultConfig()
	cfg.URLs, cfg.IndexPrefix, cfg.ObserverHostname = []string{"http://127.0.0.1:1"}, prefix, "sensor-test"
	cfg.SpoolDir, cfg.DeadLetterPath = dir, filepath.Join(dir, "dead-letter.ndjson")
	cfg.Logger = quietLogger()
	s, err := New(context.Background(), cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	flows := genFlows(3000, day2, 51)
	for i := 0; i < len(flows); i += 300 {
		if err := s.Write(context.Background(), flows[i:i+300]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for s.Stats().SpoolDocs != int64(i+300) {
			time.Sleep(10 * time.Millisecond)
		}
		fmt.Printf("spooled %d\n", i+300)
	}
	time.Sleep(time.Hour) // until killed
}

// replay opens a sink on cfg's spool and checks it sends exactly flows.
func replay(t *testing.T, cfg Config, url, prefix string, flows []aggregator.Flow) {
	t.Helper()
	s := newSink(t, cfg)
	if st := s.Stats(); st.Recovered != uint64(len(flows)) {
		t.Fatalf("recovered %d documents, want %d", st.Recovered, len(flows))
	}
	waitFor(t, 2*time.Minute, "the replay", func() bool { return s.Stats().SpoolDocs == 0 })
	if err := closeSink(t, s); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	checkInvariant(t, st)
	if st.Replayed != uint64(len(flows)) || st.Indexed != uint64(len(flows)) {
		t.Errorf("stats %+v", st)
	}
	if got, want := esIDs(t, url, prefix), wantIDs(prefix, flows); !maps.Equal(got, want) {
		t.Errorf("_ids: %d found, %d expected", len(got), len(want))
	}
	if segs, _ := filepath.Glob(filepath.Join(cfg.SpoolDir, "*.seg")); len(segs) != 0 {
		t.Errorf("spool not empty: %v", segs)
	}
}
