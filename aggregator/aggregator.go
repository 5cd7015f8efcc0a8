package aggregator

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowsensor/flowsensor/bpf"
)

const (
	// batchSize records travel together from a Writer to a shard: one
	// channel operation per batch instead of per packet.
	batchSize = 256
	// queueDepth batches may wait per shard. When a shard falls behind, its
	// writers block, the ring buffer fills and the kernel counts the loss.
	queueDepth = 16
)

type batch struct{ recs []bpf.Record }

// message is what a shard receives: a batch of records, or, when b is nil,
// an expiry tick at now (Unix ns).
type message struct {
	b   *batch
	now int64
}

type shard struct {
	in    chan message
	table *Table
	_     [64]byte // keep the counters the shard writes off the line writers read
	stats struct {
		packets, bytes, created, reports, active, evicted atomic.Uint64
	}
}

// publish copies the table's counters where Stats can read them.
func (s *shard) publish() {
	st := s.table.Stats()
	s.stats.packets.Store(st.Packets)
	s.stats.bytes.Store(st.Bytes)
	s.stats.created.Store(st.FlowsCreated)
	s.stats.reports.Store(st.Reports)
	s.stats.active.Store(st.ActiveFlows)
	s.stats.evicted.Store(st.Evicted)
}

// Aggregator spreads flows over shard goroutines, each owning one Table, so
// the packet path takes no locks. Records enter through Writers; Tick expires
// flows; Close reports whatever is left.
//
// Shutdown order: stop the readers, Flush their Writers, then Close.
type Aggregator struct {
	shards []*shard
	emit   func([]Flow)
	pool   sync.Pool // *batch, recycled so steady state does not allocate
	wg     sync.WaitGroup

	mu     sync.Mutex // serialises Tick and Close
	closed bool
}

// New starts cfg.Shards shard goroutines. It panics if cfg is not valid (see
// Config.Validate) or emit is nil.
//
// emit receives the reports of one Expire, Flush or record batch at a time.
// It is called from the shard goroutines, concurrently, so it must be safe
// for concurrent use; the slice is newly allocated and the callee owns it.
// Its shard processes no packets while emit runs, so emit should hand the
// flows off (to a queue) rather than do I/O. After Close returns, emit is not
// called again.
func New(cfg Config, emit func([]Flow)) *Aggregator {
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	if emit == nil {
		panic("aggregator: New with nil emit")
	}
	cfg = cfg.withDefaults()
	perShard := cfg
	perShard.MaxFlows = (cfg.MaxFlows + cfg.Shards - 1) / cfg.Shards

	a := &Aggregator{shards: make([]*shard, cfg.Shards), emit: emit}
	a.pool.New = func() any { return &batch{recs: make([]bpf.Record, 0, batchSize)} }
	for i := range a.shards {
		s := &shard{in: make(chan message, queueDepth), table: NewTable(perShard)}
		a.shards[i] = s
		a.wg.Go(func() { a.run(s) })
	}
	return a
}

// run is a shard's goroutine: the only code that touches s.table.
func (a *Aggregator) run(s *shard) {
	t := s.table
	var out []Flow
	collect := func(f Flow) { out = append(out, f) }
	send := func() {
		if len(out) > 0 {
			a.emit(out)
			out = nil // the callee owns the slice now
		}
	}
	for m := range s.in {
		if m.b != nil {
			for i := range m.b.recs {
				t.Add(&m.b.recs[i])
			}
			m.b.recs = m.b.recs[:0]
			a.pool.Put(m.b)
			t.drain(collect) // evictions and restarts leave now, not at the next tick
		} else {
			t.Expire(time.Unix(0, m.now), collect)
		}
		s.publish() // before emit, so whoever sees the reports sees them counted
		send()
	}
	t.Flush(collect)
	s.publish()
	send()
}

// Tick expires flows as of now, a time on the records' clock (Unix time). Each
// shard handles it after the batches already sent to it. Call it regularly,
// e.g. every second; flows end no earlier than due, and at most one tick late.
// Tick after Close does nothing.
func (a *Aggregator) Tick(now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return
	}
	n := now.UnixNano()
	for _, s := range a.shards {
		s.in <- message{now: n}
	}
}

// Close reports every flow left as Final (EndShutdown), waits for the shard
// goroutines and returns. Records still in a Writer that was not flushed are
// lost, and a Writer must not be used after Close. Close is idempotent.
func (a *Aggregator) Close() {
	a.mu.Lock()
	if !a.closed {
		a.closed = true
		for _, s := range a.shards {
			close(s.in)
		}
	}
	a.mu.Unlock()
	a.wg.Wait()
}

// Stats sums the shards' counters. Each shard updates them after every batch
// or tick, so they lag by at most one batch per shard.
func (a *Aggregator) Stats() Stats {
	var st Stats
	for _, s := range a.shards {
		st.Packets += s.stats.packets.Load()
		st.Bytes += s.stats.bytes.Load()
		st.FlowsCreated += s.stats.created.Load()
		st.Reports += s.stats.reports.Load()
		st.ActiveFlows += s.stats.active.Load()
		st.Evicted += s.stats.evicted.Load()
	}
	return st
}

// Writer batches records per shard for one producer goroutine. It is not safe
// for concurrent use: give each reader its own.
type Writer struct {
	a       *Aggregator
	pending []*batch // per shard; nil until the first record
	frags   fragTracker
}

// NewWriter returns a Writer feeding a.
func (a *Aggregator) NewWriter() *Writer {
	return &Writer{a: a, pending: make([]*batch, len(a.shards))}
}

// Add copies r into its shard's batch, sending the batch when full. The send
// blocks while the shard is behind: that is the backpressure path. A later
// IP fragment gets the ports of its datagram's first fragment here (see
// fragTracker), which is why r may be modified.
func (w *Writer) Add(r *bpf.Record) {
	if r.FragFlags != 0 {
		w.frags.resolve(r)
	}
	i := 0
	if n := len(w.pending); n > 1 {
		k, _ := keyOf(r)
		i = k.shard(n)
	}
	b := w.pending[i]
	if b == nil {
		b = w.a.pool.Get().(*batch)
		w.pending[i] = b
	}
	b.recs = append(b.recs, *r)
	if len(b.recs) == batchSize {
		w.send(i)
	}
}

// Flush sends the partial batches. Call it when the source runs dry (and
// before Close), so records do not wait for a full batch.
func (w *Writer) Flush() {
	for i, b := range w.pending {
		if b != nil {
			w.send(i)
		}
	}
}

func (w *Writer) send(i int) {
	w.a.shards[i].in <- message{b: w.pending[i]}
	w.pending[i] = nil
}
