package elasticsearch

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/flowsensor/flowsensor/aggregator"
)

// BenchmarkESBulk indexes the same documents into the Elasticsearch at
// FLOWSENSOR_ES_URL twice per iteration: through the sink (encoding, queue,
// bulk indexer, per-document answers) and as a raw _bulk upload of the
// pre-encoded documents with plain net/http, with the same request size and
// concurrency, into indices made by the same template. The order alternates
// between iterations. It reports both rates and their ratio.
//
//	FLOWSENSOR_ES_URL=http://127.0.0.1:9200 go test -run '^$' -bench ESBulk -benchtime 3x ./sinks/elasticsearch/
func BenchmarkESBulk(b *testing.B) {
	url := esURL(b)
	const n = 100_000
	flows := genFlows(n, day2, 61)
	cfg := DefaultConfig()
	var sinkTime, rawTime time.Duration
	var ratios []float64
	iter := 0
	for b.Loop() {
		b.StopTimer()
		var st, rt time.Duration
		run := []func(){
			func() { st = benchSink(b, url, flows) },
			func() { rt = benchRaw(b, url, flows, cfg.BulkBytes, cfg.Workers) },
		}
		if iter%2 == 1 {
			run[0], run[1] = run[1], run[0]
		}
		b.StartTimer()
		run[0]()
		run[1]()
		b.Logf("iteration %d: sink %.0f docs/s, raw %.0f docs/s, ratio %.3f", iter, n/st.Seconds(), n/rt.Seconds(), rt.Seconds()/st.Seconds())
		sinkTime += st
		rawTime += rt
		ratios = append(ratios, rt.Seconds()/st.Seconds())
		iter++
	}
	// The median of the pairs' ratios: Elasticsearch's own speed drifts
	// (merges, GC, a busy machine) more than the two differ.
	slices.Sort(ratios)
	b.ReportMetric(float64(n*iter)/sinkTime.Seconds(), "sink-docs/s")
	b.ReportMetric(float64(n*iter)/rawTime.Seconds(), "raw-docs/s")
	b.ReportMetric(ratios[len(ratios)/2], "sink/raw")
}

// benchSink times flows through a sink, from the first Write to Close.
func benchSink(b *testing.B, url string, flows []aggregator.Flow) time.Duration {
	prefix := esPrefix(b, url)
	cfg := esConfig(b, url, prefix)
	d := DefaultConfig()
	cfg.BulkBytes, cfg.FlushInterval, cfg.MaxBackoff = d.BulkBytes, d.FlushInterval, d.MaxBackoff
	s, err := New(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	for i := 0; i < len(flows); i += 1000 {
		if err := s.Write(context.Background(), flows[i:min(i+1000, len(flows))]); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Close(context.Background()); err != nil {
		b.Fatal(err)
	}
	took := time.Since(start)
	// The writer outruns Elasticsearch: beyond QueueBytes the sink spools,
	// as it would for a burst on a sensor.
	if st := s.Stats(); st.Indexed != uint64(len(flows)) || st.Lost() != 0 {
		b.Fatalf("sink stats %+v", st)
	}
	if got := esCount(b, url, prefix, ""); got != len(flows) {
		b.Fatalf("sink run: count %d", got)
	}
	esDeleteAll(b, url, prefix)
	return took
}

// benchRaw times a plain _bulk upload of the same documents: bodies built
// beforehand, workers requests at a time, answers checked for "errors".
func benchRaw(b *testing.B, url string, flows []aggregator.Flow, bulkBytes, workers int) time.Duration {
	prefix := esPrefix(b, url)
	esJSON(b, url, "PUT", "/_index_template/"+prefix, string(templateBody(prefix, "")), nil)
	s := &Sink{cfg: Config{IndexPrefix: prefix}, host: "sensor-test"}
	docs, _ := s.encode(flows)
	var bodies [][]byte
	var body []byte
	for _, d := range docs {
		body = fmt.Appendf(body, `{"create":{"_index":%q,"_id":%q}}`+"\n", d.index, d.id)
		body = append(append(body, d.body...), '\n')
		if len(body) >= bulkBytes {
			bodies, body = append(bodies, body), nil
		}
	}
	if len(body) > 0 {
		bodies = append(bodies, body)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers + 2}}
	work := make(chan []byte)
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for body := range work {
				res, err := client.Post(url+"/_bulk?filter_path=errors", "application/x-ndjson", bytes.NewReader(body))
				if err != nil {
					b.Error(err)
					continue
				}
				var r struct{ Errors bool }
				err = json.NewDecoder(res.Body).Decode(&r)
				res.Body.Close()
				if err != nil || res.StatusCode != 200 || r.Errors {
					b.Errorf("raw bulk: status %d, errors %v, %v", res.StatusCode, r.Errors, err)
				}
			}
		}()
	}
	for _, body := range bodies {
		work <- body
	}
	close(work)
	wg.Wait()
	took := time.Since(start)
	if got := esCount(b, url, prefix, ""); got != len(flows) {
		b.Fatalf("raw run: count %d", got)
	}
	esDeleteAll(b, url, prefix)
	return took
}
