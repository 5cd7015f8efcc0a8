package loader

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/flowsensor/flowsensor/bpf"
	"github.com/flowsensor/flowsensor/internal/lab"
	"github.com/flowsensor/flowsensor/internal/testframes"
)

// benchRepeat is the BPF_PROG_TEST_RUN repeat count per measurement; a call
// has ~16 ms of fixed cost here, so fewer repeats would measure that instead.
const benchRepeat = 1_000_000

// BenchmarkXDP times the program in the kernel (BPF_PROG_TEST_RUN) beside an
// empty XDP_PASS program, alternating the two so both see the same machine
// state, for each batch size (1: a ring reservation per record). The ring is
// large enough that no write fails, and it is drained between measurements.
// Reported: median ns/packet of each and their ratio.
//
//	go test -run='^$' -bench=XDP -benchtime=7x ./loader/
//	go test -run='^$' -bench='XDP/batch=32/' -benchtime=7x ./loader/
func BenchmarkXDP(b *testing.B) {
	empty, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.XDP,
		License:      "Dual MIT/GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, xdpPass), asm.Return()},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer empty.Close()

	for _, batch := range benchBatches(b) {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			p := loadTestProgram(b, Options{RingBytes: 128 << 20, Batch: batch})
			for _, f := range testframes.BenchFrames() {
				b.Run(f.Name, func(b *testing.B) { benchXDP(b, p, empty, f.Frame) })
			}
		})
	}
}

// benchBatches are the batch sizes measured: 1 and the powers of two up to
// MaxBatch, or only 1 where the kernel cannot batch.
func benchBatches(b *testing.B) []int {
	lab.RequirePrivileged(b)
	if ok, err := timerPinSupported(); !ok {
		b.Logf("no batching on this kernel (%v): batch 1 only", err)
		return []int{1}
	}
	return []int{1, 8, 16, 32, 64}
}

func benchXDP(b *testing.B, p *testProgram, empty *ebpf.Program, frame []byte) {
	var base, sensor []float64
	for b.Loop() {
		_, d, err := empty.Benchmark(frame, benchRepeat, nil)
		if err != nil {
			b.Fatal(err)
		}
		base = append(base, float64(d.Nanoseconds()))
		before, _ := ReadCounters(p.objs.Counters)
		_, d, err = p.objs.Program.Benchmark(frame, benchRepeat, nil)
		if err != nil {
			b.Fatal(err)
		}
		sensor = append(sensor, float64(d.Nanoseconds()))
		after, _ := ReadCounters(p.objs.Counters)
		if lost := after[bpf.CounterRingbufFull] - before[bpf.CounterRingbufFull]; lost != 0 {
			b.Fatalf("%d records lost to a full ring: the measurement would be of the failure path", lost)
		}
		drain(b, p.reader)
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(median(base), "empty-ns/pkt")
	b.ReportMetric(median(sensor), "flowsensor-ns/pkt")
	b.ReportMetric(median(sensor)/median(base), "ratio")
}

// BenchmarkXDPAllCPUs runs the program on every CPU at once (one
// BPF_PROG_TEST_RUN per CPU, pinned), as a multi-queue NIC at full load does:
// the CPUs then share the ring buffer's lock and producer position. Reported:
// median ns/packet over the CPUs' runs, beside the empty program run the same
// way.
//
//	go test -run='^$' -bench=XDPAllCPUs -benchtime=7x ./loader/
func BenchmarkXDPAllCPUs(b *testing.B) {
	empty, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.XDP,
		License:      "Dual MIT/GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, xdpPass), asm.Return()},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer empty.Close()
	cpus := runtime.NumCPU()
	repeat := max(benchRepeat/cpus, 100_000)
	frame := testframes.BenchFrames()[0].Frame
	// allCPUs returns each CPU's ns/packet of one simultaneous run.
	allCPUs := func(prog *ebpf.Program) []float64 {
		ns := make([]float64, cpus)
		errs := make(chan error, cpus)
		for cpu := range cpus {
			go func() {
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				var set unix.CPUSet
				set.Set(cpu)
				if err := unix.SchedSetaffinity(0, &set); err != nil {
					errs <- err
					return
				}
				_, d, err := prog.Benchmark(frame, repeat, nil)
				ns[cpu] = float64(d.Nanoseconds())
				errs <- err
			}()
		}
		for range cpus {
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
		}
		return ns
	}
	for _, batch := range benchBatches(b) {
		if batch != 1 && batch != DefaultBatch {
			continue
		}
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			p := loadTestProgram(b, Options{RingBytes: 256 << 20, Batch: batch})
			var base, sensor []float64
			for b.Loop() {
				base = append(base, allCPUs(empty)...)
				before, _ := ReadCounters(p.objs.Counters)
				sensor = append(sensor, allCPUs(p.objs.Program)...)
				after, _ := ReadCounters(p.objs.Counters)
				if lost := after[bpf.CounterRingbufFull] - before[bpf.CounterRingbufFull]; lost != 0 {
					b.Fatalf("%d records lost to a full ring", lost)
				}
				drain(b, p.reader)
			}
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(float64(cpus), "cpus")
			b.ReportMetric(median(base), "empty-ns/pkt")
			b.ReportMetric(median(sensor), "flowsensor-ns/pkt")
			b.ReportMetric(median(sensor)/median(base), "ratio")
		})
	}
}

func drain(tb testing.TB, rd *ringbuf.Reader) {
	var rec ringbuf.Record
	rd.SetDeadline(time.Now())
	for {
		err := rd.ReadInto(&rec)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return
		}
		if err != nil {
			tb.Fatal(err)
		}
	}
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// BenchmarkRingDrain measures user space draining a full ring the way
// Probe.Run does (ReadInto, DecodeRecord per record of each sample, clock
// offset), in records/s, with one record per sample (batch=1) and with
// batches. The ring is filled by the real program through BPF_PROG_TEST_RUN
// first; perRound is a multiple of every batch size, so no record waits in a
// partial batch.
func BenchmarkRingDrain(b *testing.B) {
	const perRound = 200_000
	for _, batch := range benchBatches(b) {
		if batch != 1 && batch != DefaultBatch {
			continue
		}
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			p := loadTestProgram(b, Options{RingBytes: 32 << 20, Batch: batch})
			frame := testframes.BenchFrames()[0].Frame
			var raw ringbuf.Record
			var rec bpf.Record
			var n, total int
			var elapsed time.Duration
			for b.Loop() {
				if _, _, err := p.objs.Program.Benchmark(frame, perRound, nil); err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				p.reader.SetDeadline(time.Now())
				for n = 0; ; {
					err := p.reader.ReadInto(&raw)
					if errors.Is(err, os.ErrDeadlineExceeded) {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
					for s := raw.RawSample; len(s) > 0; s = s[bpf.RecordSize:] {
						if err := bpf.DecodeRecord(s, &rec); err != nil {
							b.Fatal(err)
						}
						rec.Ts += 1
						n++
					}
				}
				elapsed += time.Since(start)
				if n != perRound {
					b.Fatalf("drained %d records, want %d", n, perRound)
				}
				total += n
			}
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(float64(total)/elapsed.Seconds(), "records/s")
			b.ReportMetric(float64(elapsed.Nanoseconds())/float64(total), "ns/record")
		})
	}
}
