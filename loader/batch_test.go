package loader

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/flowsensor/flowsensor/bpf"
	"github.com/flowsensor/flowsensor/internal/lab"
	"github.com/flowsensor/flowsensor/internal/testframes"
)

// Tests of the batched path: each CPU stages records and writes them to the
// ring as one sample per batch; a CPU-pinned timer writes partial batches.

// kernelAtLeast reports whether the running kernel is at least major.minor.
func kernelAtLeast(t *testing.T, major, minor int) bool {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	rel := unix.ByteSliceToString(u.Release[:])
	parts := strings.SplitN(rel, ".", 3)
	if len(parts) < 2 {
		t.Fatalf("kernel release %q", rel)
	}
	maj, _ := strconv.Atoi(parts[0])
	min, _ := strconv.Atoi(strings.TrimFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	return maj > major || maj == major && min >= minor
}

// requireBatching skips (or, under FLOWSENSOR_REQUIRE_PRIVILEGED on a kernel
// that should batch, fails) when this kernel cannot pin a BPF timer.
func requireBatching(t *testing.T) {
	t.Helper()
	lab.RequirePrivileged(t)
	if ok, err := timerPinSupported(); !ok {
		if kernelAtLeast(t, 6, 7) {
			t.Fatalf("kernel >= 6.7 but the timer probe says no: %v", err)
		}
		t.Skipf("no batching on this kernel: %v", err)
	}
}

func TestTimerPinProbe(t *testing.T) {
	lab.RequirePrivileged(t)
	ok, err := timerPinSupported()
	if want := kernelAtLeast(t, 6, 7); ok != want {
		t.Fatalf("timer pin probe: %v (%v), want %v for this kernel", ok, err, want)
	}
}

// settle waits until every frame the program saw has its outcome counted,
// that is until the timers wrote every partial batch, and returns the
// counters. The bound is generous: a record waits FlushInterval at most.
func (p *testProgram) settle(t *testing.T, within time.Duration) bpf.Counters {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		n := p.staged(t)
		if n == 0 {
			c, err := ReadCounters(p.objs.Counters)
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d records still staged after %v", n, within)
		}
		time.Sleep(time.Millisecond)
	}
}

// staged is the number of records waiting in partial batches.
func (p *testProgram) staged(t testing.TB) uint64 {
	t.Helper()
	n, err := stagedRecords(p.objs.objs.FsStage)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func sub(a, b bpf.Counters) bpf.Counters {
	for i := range a {
		a[i] -= b[i]
	}
	return a
}

// withoutTs returns the records' bytes with the timestamp cleared, sorted,
// for comparing two runs as multisets (the batched records of different CPUs
// reach the ring in no fixed order).
func withoutTs(recs []bpf.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		r.Ts = 0
		out[i] = string(r.Bytes())
	}
	slices.Sort(out)
	return out
}

// craftedFrames is every crafted frame and every truncation of the emitting ones.
func craftedFrames() [][]byte {
	var frames [][]byte
	for _, c := range testframes.Cases() {
		frames = append(frames, c.Frame)
		if c.Outcome != bpf.CounterEmitted {
			continue
		}
		for cut := 14; cut < len(c.Frame); cut++ {
			frames = append(frames, c.Truncated(cut).Frame)
		}
	}
	return frames
}

// TestProgramBatchedMatchesUnbatched sends the whole corpus, one frame per
// BPF_PROG_TEST_RUN so that batches mix every kind of record, through the
// program with and without batching: the records (timestamps aside) and
// every counter must be the same.
func TestProgramBatchedMatchesUnbatched(t *testing.T) {
	requireBatching(t)
	frames := craftedFrames()
	runAll := func(p *testProgram) {
		for _, f := range frames {
			if _, err := p.objs.Program.Run(&ebpf.RunOptions{Data: f, Context: xdpMd{DataEnd: uint32(len(f)), IngressIfindex: 1}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	ref := loadTestProgram(t, Options{RingBytes: 1 << 22, Batch: 1})
	runAll(ref)
	refCnt, err := ReadCounters(ref.objs.Counters)
	if err != nil {
		t.Fatal(err)
	}
	var refRecs []bpf.Record
	for _, s := range ref.readSamples(t) {
		if len(s) != 1 {
			t.Fatalf("unbatched sample of %d records", len(s))
		}
		refRecs = append(refRecs, s...)
	}
	if uint64(len(refRecs)) != refCnt[bpf.CounterEmitted] || refCnt[bpf.CounterSeen] != uint64(len(frames)) {
		t.Fatalf("reference run: %d records, counters %v", len(refRecs), nonZero(refCnt))
	}

	for _, batch := range []int{2, 8, MaxBatch} {
		t.Run(fmt.Sprintf("batch=%d", batch), func(t *testing.T) {
			p := loadTestProgram(t, Options{RingBytes: 1 << 22, Batch: batch})
			runAll(p)
			cnt := p.settle(t, time.Second)
			if cnt != refCnt {
				t.Errorf("counters %v\nunbatched %v", nonZero(cnt), nonZero(refCnt))
			}
			var recs []bpf.Record
			full := 0
			for _, s := range p.readSamples(t) {
				if len(s) > batch {
					t.Errorf("sample of %d records, batch %d", len(s), batch)
				}
				if len(s) == batch {
					full++
				}
				for _, r := range s {
					if r.Ts == 0 {
						t.Errorf("record without timestamp: %+v", r)
					}
				}
				recs = append(recs, s...)
			}
			if full == 0 {
				t.Error("no full batch: nothing was batched")
			}
			if !slices.Equal(withoutTs(recs), withoutTs(refRecs)) {
				t.Errorf("batched records differ from the unbatched ones (%d vs %d records)", len(recs), len(refRecs))
			}
		})
	}
}

// TestProgramBatchRepeat runs each frame many times in one
// BPF_PROG_TEST_RUN (full batches, then a partial one the timer writes) and
// checks every record and counter.
func TestProgramBatchRepeat(t *testing.T) {
	requireBatching(t)
	var cases []testframes.Case
	for _, c := range testframes.Cases() {
		switch c.Name {
		case "ipv4-udp-64", "ipv6-ext-chain-udp", "ipv4-frag-first", "ipv6-ext-limit", "vlan-4-tags", "pppoe-lcp":
			cases = append(cases, c)
		}
	}
	cases = append(cases, testframes.Cases()[0].Truncated(40)) // L4 cut short
	for _, batch := range []int{2, 8, 16, 32, MaxBatch} {
		p := loadTestProgram(t, Options{RingBytes: 1 << 22, Batch: batch})
		for _, c := range cases {
			t.Run(fmt.Sprintf("batch=%d/%s", batch, c.Name), func(t *testing.T) {
				repeat := 3*batch + batch/2 + 1 // three full batches and a partial one
				before := p.settle(t, time.Second)
				ret, err := p.objs.Program.Run(&ebpf.RunOptions{
					Data:    c.Frame,
					Context: xdpMd{DataEnd: uint32(len(c.Frame)), IngressIfindex: 1},
					Repeat:  uint32(repeat),
				})
				if err != nil || ret != xdpPass {
					t.Fatalf("run: %d %v", ret, err)
				}
				delta := sub(p.settle(t, time.Second), before)

				n := uint64(repeat)
				var want bpf.Counters
				want[bpf.CounterSeen] = n
				want[c.Outcome] = n
				if c.Outcome == bpf.CounterEmitted {
					if c.Want.Flags&bpf.RecL4Truncated != 0 {
						want[bpf.CounterTruncL4] = n
					}
					if c.Want.FragFlags != 0 {
						want[bpf.CounterFragments] = n
					}
					if c.Want.Flags&bpf.RecExtLimit != 0 {
						want[bpf.CounterExtLimit] = n
					}
				}
				if delta != want {
					t.Errorf("counters changed by %v, want %v", nonZero(delta), nonZero(want))
				}

				samples := p.readSamples(t)
				if c.Outcome != bpf.CounterEmitted {
					if len(samples) != 0 {
						t.Errorf("%d samples, want none", len(samples))
					}
					return
				}
				got := 0
				for _, s := range samples {
					if len(s) > batch {
						t.Errorf("sample of %d records, batch %d", len(s), batch)
					}
					for i, r := range s {
						if i > 0 && r.Ts < s[i-1].Ts {
							t.Errorf("timestamps go back within a batch: %d then %d", s[i-1].Ts, r.Ts)
						}
						wantRec := c.Want
						wantRec.Ts, wantRec.Ifindex, wantRec.WireLen = r.Ts, 1, uint32(len(c.Frame))
						if r.Ts == 0 || r != wantRec {
							t.Fatalf("record %+v\nwant   %+v", r, wantRec)
						}
					}
					got += len(s)
				}
				if got != repeat || len(samples) < 4 {
					t.Errorf("%d records in %d samples, want %d in at least 4", got, len(samples), repeat)
				}
			})
		}
	}
}

// TestProgramBatchPartialFlush checks that a partial batch waits in the
// kernel and that the timer writes it within a bounded time.
func TestProgramBatchPartialFlush(t *testing.T) {
	requireBatching(t)
	frame := testframes.Cases()[0].Frame
	for _, flush := range []time.Duration{time.Millisecond, 200 * time.Millisecond} {
		t.Run(flush.String(), func(t *testing.T) {
			p := loadTestProgram(t, Options{RingBytes: 1 << 16, Batch: 16, FlushInterval: flush})
			const k = 5
			start := time.Now()
			for i := 0; i < k; i++ {
				// One call per frame: a call with Repeat > 1 spends ~16ms in
				// the kernel after the runs, which would hide the delay.
				if _, err := p.objs.Program.Run(&ebpf.RunOptions{Data: frame}); err != nil {
					t.Fatal(err)
				}
			}
			if c, err := ReadCounters(p.objs.Counters); err != nil {
				t.Fatal(err)
			} else if time.Since(start) < flush/2 {
				// Well before the timer: the records are staged, not written
				// nor counted.
				if c[bpf.CounterSeen] != 0 || c[bpf.CounterEmitted] != 0 || p.staged(t) != k {
					t.Errorf("before the flush: counters %v, %d staged; want none counted and %d staged", nonZero(c), p.staged(t), k)
				}
				if s := p.readSamples(t); len(s) != 0 {
					t.Errorf("before the flush: %d samples in the ring", len(s))
				}
			}
			bound := flush + 2*time.Second
			var got []bpf.Record
			var delay time.Duration // from staging (the record's timestamp) to the ring
			for len(got) < k && time.Since(start) < bound {
				for _, s := range p.readSamples(t) {
					var now unix.Timespec
					if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &now); err != nil {
						t.Fatal(err)
					}
					delay = max(delay, time.Duration(now.Nano()-int64(s[0].Ts)))
					got = append(got, s...)
				}
			}
			took := time.Since(start)
			if len(got) != k {
				t.Fatalf("%d of %d records after %v", len(got), k, took)
			}
			if took < flush {
				t.Errorf("partial batch written after %v, before the flush interval %v", took, flush)
			}
			if delay > flush+500*time.Millisecond {
				t.Errorf("a record reached the ring %v after it was staged (flush interval %v)", delay, flush)
			}
			c := p.settle(t, 0)
			if c[bpf.CounterSeen] != k || c[bpf.CounterEmitted] != k {
				t.Errorf("counters %v, want %d seen and emitted", nonZero(c), k)
			}
			t.Logf("%d records of a partial batch reached the ring at most %v after they were staged (flush interval %v)", k, delay, flush)
		})
	}
}

// TestProgramBatchRingFull fills a tiny ring: a batch that does not fit is
// counted whole as ringbuf_full, and every frame has exactly one outcome.
func TestProgramBatchRingFull(t *testing.T) {
	requireBatching(t)
	const ring, batch, sent = 4096, 8, 100
	// A long flush interval: the partial batch is written after the run,
	// never in the middle of it, so which batches fit is deterministic.
	p := loadTestProgram(t, Options{RingBytes: ring, Batch: batch, FlushInterval: 100 * time.Millisecond})
	frame := testframes.Cases()[0].Frame
	sample := 8 + batch*bpf.RecordSize // 584 bytes
	fits := ring / sample              // 7 full batches
	ret, err := p.objs.Program.Run(&ebpf.RunOptions{Data: frame, Repeat: sent})
	if err != nil || ret != xdpPass {
		t.Fatalf("run: %d %v", ret, err)
	}
	c := p.settle(t, 2*time.Second)
	// The partial batch (sent % batch records) does not fit either.
	wantEmitted := uint64(fits * batch)
	if c[bpf.CounterSeen] != sent || c[bpf.CounterEmitted] != wantEmitted || c[bpf.CounterRingbufFull] != sent-wantEmitted {
		t.Fatalf("counters %v, want seen %d emitted %d ringbuf_full %d", nonZero(c), sent, wantEmitted, sent-wantEmitted)
	}
	samples := p.readSamples(t)
	if len(samples) != fits {
		t.Fatalf("%d samples in the ring, want %d", len(samples), fits)
	}
	for _, s := range samples {
		if len(s) != batch {
			t.Fatalf("sample of %d records, want %d", len(s), batch)
		}
	}

	// Drained, the ring takes batches again.
	if _, err := p.objs.Program.Run(&ebpf.RunOptions{Data: frame, Repeat: batch}); err != nil {
		t.Fatal(err)
	}
	c2 := p.settle(t, 2*time.Second)
	if d := sub(c2, c); d[bpf.CounterEmitted] != batch || d[bpf.CounterRingbufFull] != 0 {
		t.Fatalf("after draining: counters changed by %v, want %d emitted", nonZero(d), batch)
	}
}

// TestProgramBatchFallback checks the path for kernels without
// BPF_F_TIMER_CPU_PIN: the loader sets batch_size to 1 and every record is
// written on its own, at once. The probe's answer is forced here.
func TestProgramBatchFallback(t *testing.T) {
	lab.RequirePrivileged(t)
	saved := timerPinSupported
	t.Cleanup(func() { timerPinSupported = saved })
	timerPinSupported = func() (bool, error) { return false, errors.New("forced by the test") }

	if _, err := LoadSpec(Options{Batch: 8}); err == nil {
		t.Error("batch 8 without a pinned timer: no error")
	}
	spec, err := LoadSpec(Options{})
	if err != nil {
		t.Fatal(err)
	}
	var batch uint32
	if err := spec.Variables[flowsensorVarBatchSize].Get(&batch); err != nil {
		t.Fatal(err)
	}
	if batch != 1 || spec.Maps[flowsensorMapFsStage].MaxEntries != 1 {
		t.Fatalf("batch_size %d, fs_stage entries %d: want 1 and 1", batch, spec.Maps[flowsensorMapFsStage].MaxEntries)
	}

	p := loadTestProgram(t, Options{RingBytes: 1 << 16})
	c := testframes.Cases()[0]
	for i := 0; i < 3; i++ {
		res := p.run(t, c.Frame) // counters and record complete when Run returns
		check(t, res, c)
	}
}

// TestProgramBatchBusySlot exercises the guard against invocations that
// interrupt one another on a CPU (which bottom halves being disabled around
// XDP rules out, see flowsensor.c): an invocation that finds its CPU's slot
// busy writes its record directly. The slots are marked busy from user space
// here.
func TestProgramBatchBusySlot(t *testing.T) {
	requireBatching(t)
	p := loadTestProgram(t, Options{RingBytes: 1 << 16, Batch: 8, FlushInterval: 200 * time.Millisecond})
	stage := p.objs.objs.FsStage
	var st *btf.Struct
	spec, err := loadFlowsensor()
	if err != nil {
		t.Fatal(err)
	}
	if err := spec.Types.TypeByName("fs_stage", &st); err != nil {
		t.Fatal(err)
	}
	busyOff := -1
	for _, m := range st.Members {
		if m.Name == "busy" {
			busyOff = int(m.Offset.Bytes())
		}
	}
	if busyOff < 0 {
		t.Fatal("no busy field in fs_stage")
	}
	setBusy := func(v byte) {
		// Writing a slot from user space cancels its timer; the zeroed
		// timer_ready and armed make the program set it up again.
		val := make([]byte, stage.ValueSize())
		val[busyOff] = v
		for cpu := uint32(0); cpu < stage.MaxEntries(); cpu++ {
			if err := stage.Update(cpu, val, ebpf.UpdateExist); err != nil {
				t.Fatal(err)
			}
		}
	}

	c := testframes.Cases()[0]
	setBusy(1)
	for i := 0; i < 3; i++ {
		check(t, p.run(t, c.Frame), c) // written at once, one record per sample
	}
	setBusy(0)
	before := p.settle(t, time.Second)
	start := time.Now()
	if _, err := p.objs.Program.Run(&ebpf.RunOptions{Data: c.Frame, Repeat: 3}); err != nil {
		t.Fatal(err)
	}
	if n := p.staged(t); n != 3 && time.Since(start) < 100*time.Millisecond {
		t.Errorf("slot no longer busy: %d records staged, want 3", n)
	}
	d := sub(p.settle(t, time.Second), before)
	if d[bpf.CounterEmitted] != 3 {
		t.Errorf("counters changed by %v, want 3 emitted", nonZero(d))
	}
	if s := p.readSamples(t); len(s) != 1 || len(s[0]) != 3 {
		t.Errorf("samples %v, want one of 3 records", len(s))
	}
}

// TestRunWritesStagedRecordsOnShutdown attaches to a veth, sends a few
// datagrams (fewer than a batch) and stops at once: Run must detach, wait for
// the timer to write the partial batch, and deliver every record.
func TestRunWritesStagedRecordsOnShutdown(t *testing.T) {
	requireBatching(t)
	id := lab.Unique("fsb")
	sender, sensor := lab.NewNetns(t, id+"-tx"), lab.NewNetns(t, id+"-rx")
	lab.Veth(t, sender, "tx0", sensor, id+"rx")
	sender.Run(t, "ip", "addr", "add", "10.197.0.1/24", "dev", "tx0")
	sensor.Run(t, "ip", "addr", "add", "10.197.0.2/24", "dev", id+"rx")

	const flush = 2 * time.Second // far longer than the test takes to stop
	var p *Probe
	sensor.Do(t, func() {
		var err error
		p, err = Attach(id+"rx", Options{Mode: ModeGeneric, Batch: 16, FlushInterval: flush, PinRoot: "-"})
		if err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { p.Close() })

	var srv, conn *net.UDPConn
	sensor.Do(t, func() { // a socket, so no port unreachable comes back
		var err error
		srv, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("10.197.0.2"), Port: 9998})
		if err != nil {
			t.Fatal(err)
		}
	})
	defer srv.Close()
	sender.Do(t, func() {
		var err error
		conn, err = net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP("10.197.0.1"), Port: 40002}, &net.UDPAddr{IP: net.ParseIP("10.197.0.2"), Port: 9998})
		if err != nil {
			t.Fatal(err)
		}
	})
	defer conn.Close()
	const datagrams = 5
	for i := 0; i < datagrams; i++ {
		if _, err := conn.Write([]byte("staged")); err != nil {
			t.Fatal(err)
		}
	}
	// Wait until the program has seen them (ARP first), staged not written.
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := p.staged()
		if err != nil {
			t.Fatal(err)
		}
		if n >= datagrams {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the program did not stage the datagrams: %d staged", n)
		}
		time.Sleep(time.Millisecond)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel() // stop at once
	got := 0
	start := time.Now()
	err := p.Run(ctx, func(r *bpf.Record) {
		if r.Protocol == bpf.ProtoUDP && r.DstPort == 9998 && r.SrcPort == 40002 {
			got++
		}
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if got != datagrams {
		t.Fatalf("Run delivered %d of %d staged records", got, datagrams)
	}
	c, err := p.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := p.staged(); n != 0 || c[bpf.CounterEmitted] < datagrams || c[bpf.CounterSeen] != c[bpf.CounterEmitted]+c.Unrecorded() {
		t.Fatalf("after Run: counters %v, %d staged", nonZero(c), n)
	}
	if took > flush+time.Second {
		t.Errorf("Run took %v to stop (flush interval %v)", took, flush)
	}
	t.Logf("Run stopped in %v, delivering %d records staged at shutdown", took, got)
}
