package loader

import (
	"errors"
	"os"
	"reflect"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/flowsensor/flowsensor/bpf"
	"github.com/flowsensor/flowsensor/internal/lab"
	"github.com/flowsensor/flowsensor/internal/testframes"
)

const xdpPass = 2

// testProgram is the program loaded once, with a reader on its ring buffer.
type testProgram struct {
	objs   *Objects
	reader *ringbuf.Reader
}

func loadTestProgram(tb testing.TB, opts Options) *testProgram {
	tb.Helper()
	lab.RequirePrivileged(tb)
	opts.PinRoot = "-"
	objs, err := Load(opts)
	if err != nil {
		tb.Fatalf("%+v", err)
	}
	rd, err := ringbuf.NewReader(objs.Events)
	if err != nil {
		objs.Close()
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		rd.Close()
		objs.Close()
	})
	return &testProgram{objs: objs, reader: rd}
}

// xdpMd is struct xdp_md, the context BPF_PROG_TEST_RUN accepts.
type xdpMd struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

type runResult struct {
	verdict uint32
	records []bpf.Record
	delta   bpf.Counters
}

// run feeds one frame through the program as if it arrived on ifindex 1 (lo).
func (p *testProgram) run(tb testing.TB, frame []byte) runResult {
	tb.Helper()
	before, err := ReadCounters(p.objs.Counters)
	if err != nil {
		tb.Fatal(err)
	}
	ret, err := p.objs.Program.Run(&ebpf.RunOptions{
		Data:    frame,
		Context: xdpMd{DataEnd: uint32(len(frame)), IngressIfindex: 1},
	})
	if err != nil {
		tb.Fatalf("prog run: %v", err)
	}
	after, err := ReadCounters(p.objs.Counters)
	if err != nil {
		tb.Fatal(err)
	}
	res := runResult{verdict: ret}
	for i := range after {
		res.delta[i] = after[i] - before[i]
	}
	for _, s := range p.readSamples(tb) {
		res.records = append(res.records, s...)
	}
	return res
}

// readSamples reads every sample queued in the ring, each decoded into its
// records (one, or a batch).
func (p *testProgram) readSamples(tb testing.TB) [][]bpf.Record {
	tb.Helper()
	var samples [][]bpf.Record
	p.reader.SetDeadline(time.Now())
	for {
		raw, err := p.reader.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return samples
		}
		if err != nil {
			tb.Fatal(err)
		}
		if len(raw.RawSample) == 0 || len(raw.RawSample)%bpf.RecordSize != 0 {
			tb.Fatalf("sample of %d bytes: not a whole number of records", len(raw.RawSample))
		}
		var recs []bpf.Record
		for b := raw.RawSample; len(b) > 0; b = b[bpf.RecordSize:] {
			var r bpf.Record
			if err := bpf.DecodeRecord(b, &r); err != nil {
				tb.Fatal(err)
			}
			recs = append(recs, r)
		}
		samples = append(samples, recs)
	}
}

// check asserts verdict, counters and record for one case.
func check(t *testing.T, res runResult, c testframes.Case) {
	t.Helper()
	if res.verdict != xdpPass {
		t.Errorf("verdict %d, want XDP_PASS", res.verdict)
	}
	var want bpf.Counters
	want[bpf.CounterSeen] = 1
	want[c.Outcome] = 1
	if c.Outcome == bpf.CounterEmitted {
		if c.Want.Flags&bpf.RecL4Truncated != 0 {
			want[bpf.CounterTruncL4] = 1
		}
		if c.Want.FragFlags != 0 {
			want[bpf.CounterFragments] = 1
		}
		if c.Want.Flags&bpf.RecExtLimit != 0 {
			want[bpf.CounterExtLimit] = 1
		}
	}
	if res.delta != want {
		t.Errorf("counters changed by %v, want %v", nonZero(res.delta), nonZero(want))
	}
	if c.Outcome != bpf.CounterEmitted {
		if len(res.records) != 0 {
			t.Errorf("got %d records, want none", len(res.records))
		}
		return
	}
	if len(res.records) != 1 {
		t.Fatalf("got %d records, want 1", len(res.records))
	}
	got := res.records[0]
	if got.Ts == 0 {
		t.Error("timestamp not set")
	}
	if got.Ifindex != 1 {
		t.Errorf("ifindex %d, want 1", got.Ifindex)
	}
	if got.WireLen != uint32(len(c.Frame)) {
		t.Errorf("wire_len %d, want %d", got.WireLen, len(c.Frame))
	}
	want1 := c.Want
	want1.Ts, want1.Ifindex, want1.WireLen = got.Ts, got.Ifindex, got.WireLen
	if got != want1 {
		t.Errorf("record mismatch\n got %+v\nwant %+v", got, want1)
	}
}

func nonZero(c bpf.Counters) map[string]uint64 {
	m := map[string]uint64{}
	for i, v := range c {
		if v != 0 {
			m[bpf.Counter(i).String()] = v
		}
	}
	return m
}

// The exact per-frame tests run without batching (Batch 1): each frame's
// record and counters are complete when BPF_PROG_TEST_RUN returns.
// batch_test.go checks that batching changes nothing but timestamps.

func TestProgramCraftedFrames(t *testing.T) {
	p := loadTestProgram(t, Options{RingBytes: 1 << 20, Batch: 1})
	for _, c := range testframes.Cases() {
		t.Run(c.Name, func(t *testing.T) {
			check(t, p.run(t, c.Frame), c)
		})
	}
}

// TestProgramTruncatedFrames cuts every emitting case at every length from
// the Ethernet header on and checks which layer the parser blames.
func TestProgramTruncatedFrames(t *testing.T) {
	p := loadTestProgram(t, Options{RingBytes: 1 << 20, Batch: 1})
	n := 0
	for _, c := range testframes.Cases() {
		if c.Outcome != bpf.CounterEmitted {
			continue
		}
		// BPF_PROG_TEST_RUN needs at least an Ethernet header's worth of data.
		for cut := 14; cut < len(c.Frame); cut++ {
			tc := c.Truncated(cut)
			t.Run(tc.Name, func(t *testing.T) { check(t, p.run(t, tc.Frame), tc) })
			n++
		}
	}
	t.Logf("%d truncated frames", n)
}

// TestProgramWakeupModes checks that every wakeup policy still delivers records.
func TestProgramWakeupModes(t *testing.T) {
	c := testframes.Cases()[0]
	for _, wake := range []int{-1, 128, 1 << 18} {
		p := loadTestProgram(t, Options{RingBytes: 1 << 16, WakeupBytes: wake, Batch: 1})
		for i := 0; i < 3; i++ {
			if res := p.run(t, c.Frame); len(res.records) != 1 {
				t.Fatalf("wakeup %d: %d records", wake, len(res.records))
			}
		}
	}
}

// TestProgramRingFull fills a small ring without reading it: every record
// that does not fit is counted, and the verdict stays XDP_PASS.
func TestProgramRingFull(t *testing.T) {
	p := loadTestProgram(t, Options{RingBytes: 4096, Batch: 1})
	c := testframes.Cases()[0]
	slot := 8 + bpf.RecordSize
	fits := 4096 / slot
	const sent = 100
	ret, err := p.objs.Program.Run(&ebpf.RunOptions{Data: c.Frame, Repeat: sent})
	if err != nil || ret != xdpPass {
		t.Fatalf("run: %d %v", ret, err)
	}
	cnt, err := ReadCounters(p.objs.Counters)
	if err != nil {
		t.Fatal(err)
	}
	if cnt[bpf.CounterSeen] != sent || cnt[bpf.CounterEmitted] != uint64(fits) || cnt[bpf.CounterRingbufFull] != uint64(sent-fits) {
		t.Fatalf("counters %v, want seen %d emitted %d ringbuf_full %d", nonZero(cnt), sent, fits, sent-fits)
	}
}

// TestRecordLayoutMatchesBTF compares the Go mirror with the C struct as the
// compiler laid it out (from the object's BTF) and with bpf2go's copy.
func TestRecordLayoutMatchesBTF(t *testing.T) {
	spec, err := loadFlowsensor()
	if err != nil {
		t.Fatal(err)
	}
	var st *btf.Struct
	if err := spec.Types.TypeByName("fs_record", &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != bpf.RecordSize || unsafe.Sizeof(flowsensorFsRecord{}) != bpf.RecordSize {
		t.Fatalf("sizes: C %d, bpf2go %d, Go mirror %d", st.Size, unsafe.Sizeof(flowsensorFsRecord{}), bpf.RecordSize)
	}
	mirror := reflect.TypeOf(bpf.Record{})
	var goFields []reflect.StructField
	for i := 0; i < mirror.NumField(); i++ {
		if f := mirror.Field(i); f.Type.Size() > 0 { // skip structs.HostLayout
			goFields = append(goFields, f)
		}
	}
	if len(goFields) != len(st.Members) {
		t.Fatalf("C has %d members, Go mirror %d fields", len(st.Members), len(goFields))
	}
	for i, m := range st.Members {
		f := goFields[i]
		size, err := btf.Sizeof(m.Type)
		if err != nil {
			t.Fatal(err)
		}
		if uint32(f.Offset) != m.Offset.Bytes() || int(f.Type.Size()) != size {
			t.Errorf("%s: C offset %d size %d, Go %s offset %d size %d", m.Name, m.Offset.Bytes(), size, f.Name, f.Offset, f.Type.Size())
		}
	}
	var e *btf.Enum
	if err := spec.Types.TypeByName("fs_counter", &e); err != nil {
		t.Fatal(err)
	}
	for _, v := range e.Values {
		if v.Name == "FS_CNT_MAX" && v.Value != uint64(bpf.NumCounters) {
			t.Errorf("FS_CNT_MAX = %d, Go NumCounters = %d", v.Value, bpf.NumCounters)
		}
	}
}
