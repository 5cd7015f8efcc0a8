package aggregator

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/flowsensor/flowsensor/bpf"
)

// collector is an emit func that keeps everything, safe for concurrent use.
type collector struct {
	mu    sync.Mutex
	calls int
	flows []Flow
}

func (c *collector) emit(fs []Flow) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	c.flows = append(c.flows, fs...)
}

func (c *collector) snapshot() (calls int, flows []Flow) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls, append([]Flow(nil), c.flows...)
}

// TestAggregatorMatchesTable feeds the same random workload to one Table and
// to a sharded Aggregator through several concurrent writers, and expects the
// same multiset of reports.
func TestAggregatorMatchesTable(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			phases := workload(seed, 300)
			ref, want := runTable(workloadConfig, phases)

			var c collector
			cfg := workloadConfig
			cfg.Shards = 4
			a := New(cfg, c.emit)
			const nw = 3
			writers := make([]*Writer, nw)
			for i := range writers {
				writers[i] = a.NewWriter()
			}
			// Each flow key belongs to one writer, so its records keep their order.
			owner := map[flowKey]int{}
			for p, recs := range phases {
				parts := make([][]bpf.Record, nw)
				for _, r := range recs {
					k, _ := keyOf(&r)
					w, ok := owner[k]
					if !ok {
						w = len(owner) % nw
						owner[k] = w
					}
					parts[w] = append(parts[w], r)
				}
				var wg sync.WaitGroup
				for i, w := range writers {
					wg.Go(func() {
						for j := range parts[i] {
							w.Add(&parts[i][j])
						}
						w.Flush()
					})
				}
				wg.Wait()
				a.Tick(t0.Add(time.Duration(p+1) * phaseLen))
			}
			a.Close()

			_, got := c.snapshot()
			sortFlows(want)
			sortFlows(got)
			if len(got) != len(want) {
				t.Fatalf("aggregator emitted %d reports, table %d", len(got), len(want))
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("report %d differs:\n got  %+v\n want %+v", i, got[i], want[i])
				}
				if i > 0 && got[i].ID == got[i-1].ID && got[i].Seq == got[i-1].Seq {
					t.Fatalf("duplicate report %+v", got[i])
				}
			}
			if st, rst := a.Stats(), ref.Stats(); st != rst {
				t.Errorf("Stats = %+v, table %+v", st, rst)
			}
		})
	}
}

func TestAggregatorTick(t *testing.T) {
	emitted := make(chan []Flow, 4)
	a := New(Config{Shards: 1, IdleTimeout: time.Second}, func(fs []Flow) { emitted <- fs })
	w := a.NewWriter()
	for i := range 10 {
		w.Add(pkt{at: 0, src: fmt.Sprintf("10.0.0.%d:1", i), dst: "10.1.0.1:53", proto: bpf.ProtoUDP}.rec())
	}
	w.Flush()
	a.Tick(t0.Add(time.Second - 1))
	a.Tick(t0.Add(time.Second))
	// The first tick expires nothing and emits nothing; the second emits all
	// ten flows in one call.
	fs := <-emitted
	if len(fs) != 10 {
		t.Fatalf("one Tick gave %d flows in one call, want 10", len(fs))
	}
	for _, f := range fs {
		if !f.Final || f.EndReason != EndIdle {
			t.Errorf("got %+v", f)
		}
	}
	if st := a.Stats(); st.Packets != 10 || st.FlowsCreated != 10 || st.Reports != 10 || st.ActiveFlows != 0 {
		t.Errorf("Stats = %+v", st)
	}
	a.Close()
	a.Close()
	a.Tick(t0.Add(time.Hour)) // no-op after Close
	close(emitted)
	for fs := range emitted {
		t.Errorf("emitted after the tick: %+v", fs)
	}
}

func TestAggregatorCloseFlushes(t *testing.T) {
	var c collector
	a := New(Config{Shards: 3}, c.emit)
	w1, w2 := a.NewWriter(), a.NewWriter()
	const n = 1000 // several full batches and a partial one per shard
	for i := range n {
		p := pkt{at: time.Duration(i), src: fmt.Sprintf("10.0.%d.%d:1", i/256, i%256), dst: "10.1.0.1:80"}
		w1.Add(p.rec())
		p.src, p.dst = p.dst, p.src
		w2.Add(p.rec())
	}
	w1.Flush()
	w2.Flush()
	a.Close()
	calls, flows := c.snapshot()
	if len(flows) != n {
		t.Fatalf("Close emitted %d flows, want %d", len(flows), n)
	}
	for _, f := range flows {
		if !f.Final || f.EndReason != EndShutdown || f.SrcPackets != 1 || f.DstPackets != 1 {
			t.Fatalf("got %+v", f)
		}
	}
	if calls > 3 {
		t.Errorf("%d emit calls for one Close of 3 shards, want one per shard", calls)
	}
	if st := a.Stats(); st.Packets != 2*n || st.Bytes != 2*n*100 || st.FlowsCreated != n || st.Reports != n || st.ActiveFlows != 0 {
		t.Errorf("Stats = %+v", st)
	}
}

// TestAggregatorEvictionsLeavePromptly: reports made while adding records
// (here, a full table) are emitted after the batch, without waiting for a tick.
func TestAggregatorEvictionsLeavePromptly(t *testing.T) {
	emitted := make(chan []Flow, 1)
	a := New(Config{Shards: 1, MaxFlows: 1}, func(fs []Flow) { emitted <- fs })
	w := a.NewWriter()
	w.Add(pkt{at: 0, src: "10.0.0.1:1", dst: "10.0.0.2:2"}.rec())
	w.Add(pkt{at: 1, src: "10.0.0.3:1", dst: "10.0.0.2:2"}.rec())
	w.Flush()
	f := one(t, <-emitted)
	if f.EndReason != EndEvicted || f.Src.String() != "10.0.0.1" {
		t.Errorf("got %+v", f)
	}
	if st := a.Stats(); st.Evicted != 1 || st.ActiveFlows != 1 {
		t.Errorf("Stats = %+v", st)
	}
	a.Close()
	if f := one(t, <-emitted); f.EndReason != EndShutdown || f.Src.String() != "10.0.0.3" {
		t.Errorf("got %+v", f)
	}
}

func TestNewPanics(t *testing.T) {
	for name, f := range map[string]func(){
		"bad config": func() { New(Config{Shards: -1}, func([]Flow) {}) },
		"nil emit":   func() { New(Config{}, nil) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			f()
		})
	}
}
