package elasticsearch

// Unit tests of the sink's routing (memory, spool, retry, dead letter) and
// accounting against a small fake of the _bulk API. They are fast and
// deterministic; es_test.go runs the same scenarios against a real
// Elasticsearch.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type fakeES struct {
	t        *testing.T
	mu       sync.Mutex
	down     bool // answer 503 to everything
	hangup   bool // drop connections without an answer
	template []byte
	tmplVer  int
	tmplPuts int
	ilm      bool              // answer the ILM API
	policy   []byte            // the ILM policy put
	docs     map[string][]byte // by index/_id
	attempts map[string]int
	requests int
	// status, if set, decides the answer for a document (by _id and
	// attempt number, from 1); 0 means the default behaviour.
	status func(id string, attempt int) int
}

func newFake(t *testing.T) (*fakeES, *httptest.Server) {
	f := &fakeES{t: t, docs: map[string][]byte{}, attempts: map[string]int{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakeES) set(fn func(*fakeES)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeES) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.docs)
}

func (f *fakeES) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hangup {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
		return
	}
	w.Header().Set("X-Elastic-Product", "Elasticsearch")
	w.Header().Set("Content-Type", "application/json")
	if f.down {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, `{"error":"down","status":503}`)
		return
	}
	switch {
	case strings.HasPrefix(r.URL.Path, "/_index_template/"):
		if r.Method == http.MethodPut {
			body := new(bytes.Buffer)
			body.ReadFrom(r.Body)
			f.template = body.Bytes()
			f.tmplPuts++
			fmt.Fprint(w, `{"acknowledged":true}`)
			return
		}
		if f.tmplVer == 0 && f.template == nil {
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"index_templates":[]}`)
			return
		}
		v := f.tmplVer
		if v == 0 {
			v = templateVersion
		}
		fmt.Fprintf(w, `{"index_templates":[{"name":"x","index_template":{"version":%d}}]}`, v)
	case r.URL.Path == "/_ilm/status" && f.ilm:
		fmt.Fprint(w, `{"operation_mode":"RUNNING"}`)
	case strings.HasPrefix(r.URL.Path, "/_ilm/policy/") && f.ilm && r.Method == http.MethodPut:
		body := new(bytes.Buffer)
		body.ReadFrom(r.Body)
		f.policy = body.Bytes()
		fmt.Fprint(w, `{"acknowledged":true}`)
	case strings.HasPrefix(r.URL.Path, "/_ilm/"):
		w.WriteHeader(http.StatusMethodNotAllowed)
		fmt.Fprint(w, `{"error":"no ilm","status":405}`)
	case r.URL.Path == "/_bulk":
		f.requests++
		f.bulk(w, r)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

func (f *fakeES) bulk(w http.ResponseWriter, r *http.Request) {
	sc := bufio.NewScanner(r.Body)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	var items []string
	for sc.Scan() {
		var action map[string]struct {
			Index string `json:"_index"`
			ID    string `json:"_id"`
		}
		if err := json.Unmarshal(sc.Bytes(), &action); err != nil {
			f.t.Errorf("fake: bad action line %q: %v", sc.Bytes(), err)
			return
		}
		meta, ok := action["create"]
		if !ok || !sc.Scan() {
			f.t.Errorf("fake: want create actions with a document: %v", action)
			return
		}
		doc := bytes.Clone(sc.Bytes())
		key := meta.Index + "/" + meta.ID
		f.attempts[key]++
		status := 0
		if f.status != nil {
			status = f.status(meta.ID, f.attempts[key])
		}
		if status == 0 {
			status = 201
			if _, dup := f.docs[key]; dup {
				status = 409
			}
		}
		if status == 201 {
			if !json.Valid(doc) {
				status = 400
			} else {
				f.docs[key] = doc
			}
		}
		item := fmt.Sprintf(`{"create":{"status":%d}}`, status)
		if status >= 300 {
			item = fmt.Sprintf(`{"create":{"status":%d,"error":{"type":"fake_%d","reason":"fake reason %d"}}}`, status, status, status)
		}
		items = append(items, item)
	}
	fmt.Fprintf(w, `{"items":[%s]}`, strings.Join(items, ","))
}

func fakeConfig(t *testing.T, url string) Config {
	c := DefaultConfig()
	c.URLs = []string{url}
	c.SetOutputDir(t.TempDir())
	c.FlushInterval = 10 * time.Millisecond
	c.MaxBackoff = 50 * time.Millisecond
	c.BulkBytes = 64 << 10
	c.Logger = quietLogger()
	c.ObserverHostname = "test"
	return c
}

func newSink(t *testing.T, cfg Config) *Sink {
	t.Helper()
	s, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestFakeHappyPath(t *testing.T) {
	f, srv := newFake(t)
	s := newSink(t, fakeConfig(t, srv.URL))
	flows := genFlows(1000, day1, 1) // crosses midnight: two indices
	for i := 0; i < len(flows); i += 37 {
		if err := s.Write(context.Background(), flows[i:min(i+37, len(flows))]); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, time.Minute, "1000 documents", func() bool { return f.count() == 1000 })
	if err := closeSink(t, s); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	checkInvariant(t, st)
	if st.Indexed != 1000 || st.Spooled != 0 || st.Retries != 0 || st.Duplicates != 0 || st.BulkRequests == 0 {
		t.Errorf("stats %+v", st)
	}
	if f.tmplPuts != 1 {
		t.Errorf("template put %d times", f.tmplPuts)
	}
	for i := range flows {
		key := "flowsensor-flows-" + indexDay(flows[i].Start) + "/" + docID(&flows[i])
		if _, ok := f.docs[key]; !ok {
			t.Fatalf("flow %d not stored as %s", i, key)
		}
	}
	if err := s.Write(context.Background(), flows[:1]); err == nil {
		t.Error("Write after Close succeeded")
	}
}

// TestFakeOutage: while the server fails, documents go to the spool; when
// it is back they are replayed, each stored once.
func TestFakeOutage(t *testing.T) {
	for _, mode := range []string{"503", "hangup"} {
		t.Run(mode, func(t *testing.T) {
			f, srv := newFake(t)
			s := newSink(t, fakeConfig(t, srv.URL))
			flows := genFlows(3000, day2, 2)
			if err := s.Write(context.Background(), flows[:1000]); err != nil {
				t.Fatal(err)
			}
			waitFor(t, time.Minute, "the first documents", func() bool { return f.count() > 0 })
			f.set(func(f *fakeES) { f.down, f.hangup = mode == "503", mode == "hangup" })
			for i := 1000; i < 3000; i += 100 {
				if err := s.Write(context.Background(), flows[i:i+100]); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, time.Minute, "documents in the spool", func() bool { return s.Stats().SpoolDocs > 0 })
			if st := s.Stats(); st.Queued > 1000 {
				t.Errorf("%d documents held in memory during the outage", st.Queued)
			}
			f.set(func(f *fakeES) { f.down, f.hangup = false, false })
			waitFor(t, time.Minute, "all documents", func() bool { return f.count() == 3000 })
			waitFor(t, time.Minute, "an empty spool", func() bool { return s.Stats().SpoolDocs == 0 })
			if err := closeSink(t, s); err != nil {
				t.Fatal(err)
			}
			st := s.Stats()
			checkInvariant(t, st)
			if st.Indexed+st.Duplicates != 3000 || st.Spooled == 0 || st.Replayed == 0 || st.Retries == 0 {
				t.Errorf("stats %+v", st)
			}
			if segs, _ := filepath.Glob(filepath.Join(s.cfg.SpoolDir, "*.seg")); len(segs) != 0 {
				t.Errorf("spool segments left: %v", segs)
			}
		})
	}
}

// TestFakeItemOutcomes: per-document answers in one bulk response.
func TestFakeItemOutcomes(t *testing.T) {
	f, srv := newFake(t)
	cfg := fakeConfig(t, srv.URL)
	s := newSink(t, cfg)
	flows := genFlows(700, day2, 3)
	outcome := map[string]string{}
	for i := range flows {
		id := docID(&flows[i])
		switch {
		case i%7 == 0:
			outcome[id] = "rejected"
		case i%10 == 0:
			outcome[id] = "throttled"
		case i%13 == 0:
			outcome[id] = "exists"
			f.docs["flowsensor-flows-"+indexDay(flows[i].Start)+"/"+id] = []byte("{}")
		}
	}
	f.set(func(f *fakeES) {
		f.status = func(id string, attempt int) int {
			switch outcome[id] {
			case "rejected":
				return 400
			case "throttled":
				if attempt <= 2 {
					return 429
				}
			}
			return 0
		}
	})
	if err := s.Write(context.Background(), flows); err != nil {
		t.Fatal(err)
	}
	rejected := 100 // i%7 == 0 for i < 700
	waitFor(t, time.Minute, "every document resolved", func() bool {
		st := s.Stats()
		return st.Indexed+st.Duplicates+st.DeadLettered == 700
	})
	if err := closeSink(t, s); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	checkInvariant(t, st)
	exists := 0
	for _, o := range outcome {
		if o == "exists" {
			exists++
		}
	}
	if st.DeadLettered != uint64(rejected) || st.Duplicates != uint64(exists) || st.Indexed != uint64(700-rejected-exists) || st.Retries < 2 {
		t.Errorf("stats %+v; want %d dead-lettered, %d duplicates", st, rejected, exists)
	}
	// The dead-letter file: one line per rejected document, with the reason.
	b, err := os.ReadFile(cfg.DeadLetterPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	if len(lines) != rejected {
		t.Fatalf("dead-letter file has %d lines, want %d", len(lines), rejected)
	}
	var dl struct {
		Index  string `json:"index"`
		ID     string `json:"id"`
		Status int    `json:"status"`
		Error  struct {
			Type   string `json:"type"`
			Reason string `json:"reason"`
		} `json:"error"`
		Document map[string]any `json:"document"`
	}
	if err := json.Unmarshal(lines[0], &dl); err != nil {
		t.Fatal(err)
	}
	if dl.ID != docID(&flows[0]) || dl.Status != 400 || dl.Error.Type != "fake_400" || dl.Document["flow"] == nil {
		t.Errorf("dead letter %+v", dl)
	}
	if st, _ := os.Stat(cfg.DeadLetterPath); st.Mode().Perm() != 0o600 {
		t.Errorf("dead-letter file mode %v", st.Mode())
	}
}

// TestFakeCloseSpoolsAndNextStartReplays: Close with the server down keeps
// everything in the spool; the next sink sends it.
func TestFakeCloseSpoolsAndNextStartReplays(t *testing.T) {
	f, srv := newFake(t)
	cfg := fakeConfig(t, srv.URL)
	s := newSink(t, cfg)
	f.set(func(f *fakeES) { f.down = true })
	flows := genFlows(2500, day2, 4)
	for i := 0; i < len(flows); i += 500 {
		if err := s.Write(context.Background(), flows[i:i+500]); err != nil {
			t.Fatal(err)
		}
	}
	if err := closeSink(t, s); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	checkInvariant(t, st)
	if st.SpoolDocs != 2500 || st.Indexed != 0 || st.Queued != 0 {
		t.Fatalf("after Close: %+v, want all 2500 in the spool", st)
	}

	f.set(func(f *fakeES) { f.down = false })
	s2 := newSink(t, cfg)
	if st := s2.Stats(); st.Recovered != 2500 {
		t.Fatalf("second sink recovered %d", st.Recovered)
	}
	waitFor(t, time.Minute, "replay", func() bool { return f.count() == 2500 })
	if err := closeSink(t, s2); err != nil {
		t.Fatal(err)
	}
	st = s2.Stats()
	checkInvariant(t, st)
	if st.Replayed != 2500 || st.Indexed != 2500 || st.SpoolDocs != 0 {
		t.Errorf("second sink: %+v", st)
	}
}

// TestFakeCloseDeadline: Close with a server that never answers gives up at
// its deadline and spools what was in flight.
func TestFakeCloseDeadline(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Elastic-Product", "Elasticsearch")
		if r.URL.Path == "/_bulk" {
			<-block
			return
		}
		if r.Method == http.MethodGet {
			w.WriteHeader(404)
		}
		fmt.Fprint(w, `{}`)
	}))
	defer srv.Close()
	defer close(block)
	s := newSink(t, fakeConfig(t, srv.URL))
	if err := s.Write(context.Background(), genFlows(300, day2, 5)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "a request in flight", func() bool { return s.Stats().BulkRequests > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	st := s.Stats()
	checkInvariant(t, st)
	if st.SpoolDocs != 300 {
		t.Errorf("after an aborted Close: %+v, want 300 in the spool", st)
	}
}

// TestFakeSpoolFull: what the spool cannot take is counted and reported.
func TestFakeSpoolFull(t *testing.T) {
	f, srv := newFake(t)
	f.set(func(f *fakeES) { f.down = true })
	cfg := fakeConfig(t, srv.URL)
	cfg.SpoolMaxBytes = 1 << 20
	s := newSink(t, cfg)
	flows := genFlows(4000, day2, 6) // about 3 MB of documents
	for i := 0; i < len(flows); i += 200 {
		if err := s.Write(context.Background(), flows[i:i+200]); err != nil {
			t.Fatal(err)
		}
	}
	err := closeSink(t, s)
	st := s.Stats()
	checkInvariant(t, st)
	if st.Refused == 0 || st.SpoolDocs == 0 || uint64(st.SpoolDocs)+st.Refused != 4000 {
		t.Fatalf("stats %+v", st)
	}
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%d documents lost", st.Refused)) {
		t.Fatalf("Close: %v, want the loss reported", err)
	}
}

func TestFakeTemplate(t *testing.T) {
	f, srv := newFake(t)
	f.set(func(f *fakeES) { f.tmplVer = templateVersion + 1 })
	s := newSink(t, fakeConfig(t, srv.URL))
	if err := closeSink(t, s); err != nil {
		t.Fatal(err)
	}
	if f.tmplPuts != 0 {
		t.Error("a newer installed template was replaced")
	}

	// A refusal is an error at start.
	deny := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":"unauthorized"}`)
	}))
	defer deny.Close()
	if _, err := New(context.Background(), fakeConfig(t, deny.URL)); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("New against a 401: %v", err)
	}
	// No answer is not: the sink starts and spools.
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	s, err := New(context.Background(), fakeConfig(t, gone.URL))
	if err != nil {
		t.Fatalf("New against a closed port: %v", err)
	}
	if err := s.Write(context.Background(), genFlows(10, day2, 8)); err != nil {
		t.Fatal(err)
	}
	if err := closeSink(t, s); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.SpoolDocs != 10 {
		t.Errorf("stats %+v", st)
	}
}

// TestFakeRetention: with ILM, retention installs a delete policy and the
// template names it; without, the template is installed without it.
func TestFakeRetention(t *testing.T) {
	for _, ilm := range []bool{true, false} {
		f, srv := newFake(t)
		f.set(func(f *fakeES) { f.ilm = ilm })
		cfg := fakeConfig(t, srv.URL)
		cfg.Retention = 30 * 24 * time.Hour
		s := newSink(t, cfg)
		if err := closeSink(t, s); err != nil {
			t.Fatal(err)
		}
		var tmpl struct {
			Template struct {
				Settings map[string]any `json:"settings"`
			} `json:"template"`
		}
		if err := json.Unmarshal(f.template, &tmpl); err != nil {
			t.Fatal(err)
		}
		policyName := tmpl.Template.Settings["index.lifecycle.name"]
		switch {
		case ilm && (policyName != cfg.IndexPrefix || !bytes.Contains(f.policy, []byte(`"delete":{"min_age":"2592000s"`))):
			t.Errorf("with ILM: template lifecycle %v, policy %s", policyName, f.policy)
		case !ilm && (policyName != nil || f.policy != nil):
			t.Errorf("without ILM: template lifecycle %v, policy %s", policyName, f.policy)
		}
	}
}
