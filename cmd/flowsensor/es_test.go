package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/flowsensor/flowsensor/internal/corpus"
	"github.com/flowsensor/flowsensor/internal/lab"
)

// esURL is the Elasticsearch the tests may use (make test starts one).
func esURL(t *testing.T) string {
	t.Helper()
	u := os.Getenv("FLOWSENSOR_ES_URL")
	if u == "" {
		if os.Getenv(lab.RequireEnv) != "" {
			t.Fatal("FLOWSENSOR_ES_URL is not set: run the tests through `make test` (scripts/with-elasticsearch.sh)")
		}
		t.Skip("FLOWSENSOR_ES_URL not set: no Elasticsearch to test against (make test starts one)")
	}
	return u
}

func esDo(t *testing.T, method, url string, body any) map[string]any {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		t.Fatalf("%s %s: %s\n%s", method, url, resp.Status, b)
	}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%s %s: %v\n%s", method, url, err, b)
	}
	return out
}

// esDelete removes the indices and the template a test made under prefix.
func esDelete(url, prefix string) {
	for _, path := range []string{"/" + prefix + "-*", "/_index_template/" + prefix} {
		req, _ := http.NewRequest(http.MethodDelete, url+path, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}
}

// TestReplayIntoElasticsearch replays a corpus capture into Elasticsearch and
// into Parquet at once, and checks that both hold the same flows: the count,
// every flow ID, and per-protocol packet and byte sums from a terms
// aggregation.
func TestReplayIntoElasticsearch(t *testing.T) {
	url := esURL(t)
	capture := filepath.Join(corpus.LocalDir(), "vlan11-dns-icmp-arp.pcap")
	if dir, ok := corpus.SharedDir(); ok {
		capture = filepath.Join(dir, "many-flows-cip-ics.pcap") // about 3000 flows
	}
	prefix := fmt.Sprintf("fs-test-replay-%d", time.Now().UnixNano())
	t.Cleanup(func() { esDelete(url, prefix) })

	cfg := DefaultConfig()
	cfg.Out = t.TempDir()
	cfg.Elasticsearch.URLs = []string{url}
	cfg.Elasticsearch.IndexPrefix = prefix
	cfg.Elasticsearch.SetOutputDir(cfg.Out)
	var stderr bytes.Buffer
	if err := runReplay(context.Background(), cfg, []string{capture}, false, &stderr); err != nil {
		t.Fatalf("replay: %v\n%s", err, stderr.String())
	}
	rows := readRows(t, cfg.Out)
	if len(rows) == 0 {
		t.Fatal("no flows in Parquet")
	}

	esDo(t, http.MethodPost, url+"/"+prefix+"-*/_refresh", nil)
	if got := esDo(t, http.MethodGet, url+"/"+prefix+"-*/_count", nil)["count"].(float64); int(got) != len(rows) {
		t.Fatalf("%d documents in Elasticsearch, %d rows in Parquet\n%s", int(got), len(rows), stderr.String())
	}

	type sums struct{ flows, packets, bytes int64 }
	want := map[string]sums{}
	ids := map[string]bool{}
	for _, r := range rows {
		k := strconv.Itoa(int(r.Protocol))
		s := want[k]
		s.flows++
		s.packets += r.Packets
		s.bytes += r.Bytes
		want[k] = s
		ids[fmt.Sprintf("%016x-%d", uint64(r.FlowID), r.Seq)] = true
	}
	res := esDo(t, http.MethodPost, url+"/"+prefix+"-*/_search", map[string]any{
		"size": 0,
		"aggs": map[string]any{"proto": map[string]any{
			"terms": map[string]any{"field": "network.iana_number", "size": 256},
			"aggs": map[string]any{
				"packets": map[string]any{"sum": map[string]any{"field": "network.packets"}},
				"bytes":   map[string]any{"sum": map[string]any{"field": "network.bytes"}},
			},
		}},
	})
	got := map[string]sums{}
	for _, b := range res["aggregations"].(map[string]any)["proto"].(map[string]any)["buckets"].([]any) {
		b := b.(map[string]any)
		got[b["key"].(string)] = sums{
			flows:   int64(b["doc_count"].(float64)),
			packets: int64(b["packets"].(map[string]any)["value"].(float64)),
			bytes:   int64(b["bytes"].(map[string]any)["value"].(float64)),
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("per protocol (flows, packets, bytes): Elasticsearch %v, Parquet %v", got, want)
	}

	// Every document under the _id its Parquet row implies.
	seen := 0
	body := map[string]any{"size": 1000, "_source": false, "sort": []any{"_doc"}, "query": map[string]any{"match_all": map[string]any{}}}
	res = esDo(t, http.MethodPost, url+"/"+prefix+"-*/_search?scroll=1m", body)
	for {
		hits := res["hits"].(map[string]any)["hits"].([]any)
		if len(hits) == 0 {
			break
		}
		for _, h := range hits {
			id := h.(map[string]any)["_id"].(string)
			if !ids[id] {
				t.Fatalf("document %s matches no Parquet row", id)
			}
			seen++
		}
		res = esDo(t, http.MethodPost, url+"/_search/scroll", map[string]any{"scroll": "1m", "scroll_id": res["_scroll_id"]})
	}
	if seen != len(ids) {
		t.Errorf("%d documents, %d distinct Parquet reports", seen, len(ids))
	}
}
