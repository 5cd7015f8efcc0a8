package loader

import (
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/flowsensor/flowsensor/bpf"
	"github.com/flowsensor/flowsensor/internal/testframes"
)

// benchRepeat is the BPF_PROG_TEST_RUN repeat count per measurement; a call
// has ~16 ms of fixed cost here, so fewer repeats would measure that instead.
const benchRepeat = 1_000_000

// BenchmarkXDP times the program in the kernel (BPF_PROG_TEST_RUN) beside an
// empty XDP_PASS program, alternating the two so both see the same machine
// state. The ring is large enough that no reserve fails, and it is drained
// between measurements. Reported: median ns/packet of each and their ratio.
//
//	go test -run='^$' -bench=XDP -benchtime=7x ./loader/
func BenchmarkXDP(b *testing.B) {
	p := loadTestProgram(b, Options{RingBytes: 128 << 20})
	empty, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.XDP,
		License:      "Dual MIT/GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, xdpPass), asm.Return()},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer empty.Close()

	for _, f := range testframes.BenchFrames() {
		b.Run(f.Name, func(b *testing.B) {
			var base, sensor []float64
			for b.Loop() {
				_, d, err := empty.Benchmark(f.Frame, benchRepeat, nil)
				if err != nil {
					b.Fatal(err)
				}
				base = append(base, float64(d.Nanoseconds()))
				before, _ := ReadCounters(p.objs.Counters)
				_, d, err = p.objs.Program.Benchmark(f.Frame, benchRepeat, nil)
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
// Probe.Run does (ReadInto, DecodeRecord, clock offset), in records/s. The
// ring is filled by the real program through BPF_PROG_TEST_RUN first.
func BenchmarkRingDrain(b *testing.B) {
	const perRound = 200_000
	p := loadTestProgram(b, Options{RingBytes: 32 << 20})
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
		for n = 0; ; n++ {
			err := p.reader.ReadInto(&raw)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			if err := bpf.DecodeRecord(raw.RawSample, &rec); err != nil {
				b.Fatal(err)
			}
			rec.Ts += 1
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
}
