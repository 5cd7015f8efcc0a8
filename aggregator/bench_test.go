package aggregator

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowsensor/flowsensor/bpf"
)

// benchRecords returns n records spread over nflows TCP flows, both
// directions, in random order.
func benchRecords(n, nflows int) []bpf.Record {
	rng := rand.New(rand.NewPCG(7, 7))
	recs := make([]bpf.Record, n)
	for i := range recs {
		f := rng.IntN(nflows)
		r := &recs[i]
		r.SetAddrs(netip.AddrFrom4([4]byte{10, byte(f >> 16), byte(f >> 8), byte(f)}), netip.MustParseAddr("192.168.0.1"))
		r.SrcPort, r.DstPort = uint16(32768+f%1000), 443
		if rng.IntN(2) == 0 {
			r.SrcAddr, r.DstAddr = r.DstAddr, r.SrcAddr
			r.SrcPort, r.DstPort = r.DstPort, r.SrcPort
		}
		r.Protocol, r.TCPFlags = bpf.ProtoTCP, bpf.TCPAck
		r.Ifindex, r.WireLen = 2, 1500
		r.Ts = uint64(t0.UnixNano()) + uint64(i)
	}
	return recs
}

func reportRate(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkTableAdd measures Add into a warm table of 10k flows.
func BenchmarkTableAdd(b *testing.B) {
	for _, nflows := range []int{10_000, 1_000_000} {
		b.Run(fmt.Sprintf("flows=%d", nflows), func(b *testing.B) {
			recs := benchRecords(1<<20, nflows)
			tb := NewTable(Config{})
			for i := range recs {
				tb.Add(&recs[i])
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				tb.Add(&recs[i&(len(recs)-1)])
			}
			reportRate(b)
		})
	}
}

// BenchmarkTableExpire measures creating and then idling out flows: the cost
// per flow of the whole life cycle, report included.
func BenchmarkTableExpire(b *testing.B) {
	recs := benchRecords(1<<16, 1<<16)
	tb := NewTable(Config{})
	var n int
	emit := func(Flow) { n++ }
	cycle := func() {
		for i := range recs {
			tb.Add(&recs[i])
		}
		tb.Expire(t0.Add(time.Hour), emit)
	}
	cycle() // warm: entries come from the free list from now on
	n = 0
	b.ReportAllocs()
	for b.Loop() {
		cycle()
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "flows/s")
}

// BenchmarkAggregator measures records end to end through writers and
// shards, including the final flush in Close.
func BenchmarkAggregator(b *testing.B) {
	recs := benchRecords(1<<20, 10_000)
	for _, writers := range []int{1, runtime.GOMAXPROCS(0)} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			var flows atomic.Int64
			a := New(Config{}, func(fs []Flow) { flows.Add(int64(len(fs))) })
			b.ReportAllocs()
			b.ResetTimer()
			done := make(chan struct{})
			per := b.N / writers
			for w := range writers {
				go func() {
					defer func() { done <- struct{}{} }()
					wr := a.NewWriter()
					n := per
					if w == 0 {
						n += b.N % writers
					}
					for i := range n {
						wr.Add(&recs[(w*per+i)&(len(recs)-1)])
					}
					wr.Flush()
				}()
			}
			for range writers {
				<-done
			}
			a.Close()
			reportRate(b)
		})
	}
}
