package sinks_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flowsensor/flowsensor/aggregator"
	"github.com/flowsensor/flowsensor/sinks"
)

var discard = slog.New(slog.DiscardHandler)

// fakeSink records the IDs it accepts. It fails its first fails Writes, and
// while block is open each Write waits for block to close or ctx to end.
type fakeSink struct {
	entered chan struct{} // if set, gets a value as each Write starts

	mu       sync.Mutex
	fails    int
	block    chan struct{}
	written  []uint64
	attempts int
	closed   int
	closeErr error
}

func (f *fakeSink) Write(ctx context.Context, flows []aggregator.Flow) error {
	f.mu.Lock()
	f.attempts++
	fail := f.fails > 0
	if fail {
		f.fails--
	}
	block := f.block
	f.mu.Unlock()
	if f.entered != nil {
		f.entered <- struct{}{}
	}
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if fail {
		return errors.New("fake: unavailable")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range flows {
		f.written = append(f.written, flows[i].ID)
	}
	return nil
}

func (f *fakeSink) Close(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed++
	return f.closeErr
}

func (f *fakeSink) state() (written []uint64, attempts, closed int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.written), f.attempts, f.closed
}

func batch(first, n int) []aggregator.Flow {
	flows := make([]aggregator.Flow, n)
	for i := range flows {
		flows[i].ID = uint64(first + i)
	}
	return flows
}

func ids(first, n int) []uint64 {
	out := make([]uint64, n)
	for i := range out {
		out[i] = uint64(first + i)
	}
	return out
}

func wantStats(t *testing.T, q *sinks.Queue, want sinks.QueueStats) {
	t.Helper()
	if got := q.Stats(); got != want {
		t.Fatalf("stats:\n got  %+v\n want %+v", got, want)
	}
}

func TestQueueRetries(t *testing.T) {
	ctx := context.Background()
	inner := &fakeSink{fails: 5}
	var mu sync.Mutex
	var waits []time.Duration
	q := sinks.NewQueue(inner, sinks.QueueConfig{
		Name: "fake", MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second, Logger: discard,
		Wait: func(_ context.Context, d time.Duration) error {
			mu.Lock()
			defer mu.Unlock()
			waits = append(waits, d)
			return nil
		},
	})

	// The caller reuses its slice, as the aggregator does: the queue must
	// have copied each batch.
	flows := make([]aggregator.Flow, 10)
	for b := range 5 {
		for i := range flows {
			flows[i].ID = uint64(b*10 + i)
		}
		if err := q.Write(ctx, flows); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Close(ctx); err != nil {
		t.Fatal(err)
	}

	written, attempts, closed := inner.state()
	if !slices.Equal(written, ids(0, 50)) {
		t.Errorf("written %v, want 0..49 once each, in order", written)
	}
	if attempts != 10 || closed != 1 {
		t.Errorf("%d Write attempts, %d Closes; want 10, 1", attempts, closed)
	}
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, time.Second}
	if !slices.Equal(waits, want) {
		t.Errorf("backoff %v, want %v", waits, want)
	}
	wantStats(t, q, sinks.QueueStats{Written: 50, Retries: 5})
}

func TestQueueFullDrops(t *testing.T) {
	ctx := context.Background()
	block := make(chan struct{})
	inner := &fakeSink{block: block, entered: make(chan struct{}, 10)}
	q := sinks.NewQueue(inner, sinks.QueueConfig{Capacity: 10, Logger: discard})

	if err := q.Write(ctx, batch(0, 5)); err != nil {
		t.Fatal(err)
	}
	<-inner.entered // the writer holds batch 0 and is stuck in the sink
	if err := q.Write(ctx, batch(5, 5)); err != nil {
		t.Fatal(err)
	}
	// Full: the newest batches are refused, without waiting.
	if err := q.Write(ctx, batch(10, 1)); !errors.Is(err, sinks.ErrQueueFull) {
		t.Fatalf("Write to a full queue: %v", err)
	}
	if err := q.Write(ctx, batch(11, 3)); !errors.Is(err, sinks.ErrQueueFull) {
		t.Fatalf("Write to a full queue: %v", err)
	}
	wantStats(t, q, sinks.QueueStats{Queued: 10, Dropped: 4})

	close(block)
	if err := q.Close(ctx); err != nil {
		t.Fatal(err)
	}
	wantStats(t, q, sinks.QueueStats{Written: 10, Dropped: 4})
	if written, _, _ := inner.state(); !slices.Equal(written, ids(0, 10)) {
		t.Errorf("written %v, want 0..9", written)
	}
}

// TestQueueBlockWaitsForRoom: with Block, a Write that does not fit waits
// until the sink has taken enough, and nothing is dropped; two writers
// waiting at once both get through, in some order.
func TestQueueBlockWaitsForRoom(t *testing.T) {
	ctx := context.Background()
	block := make(chan struct{})
	inner := &fakeSink{block: block, entered: make(chan struct{}, 100)}
	q := sinks.NewQueue(inner, sinks.QueueConfig{Capacity: 10, Block: true, Logger: discard})
	if err := q.Write(ctx, batch(0, 5)); err != nil {
		t.Fatal(err)
	}
	<-inner.entered // the writer holds batch 0 and is stuck in the sink
	if err := q.Write(ctx, batch(5, 5)); err != nil {
		t.Fatal(err)
	}
	returned := make(chan error, 2)
	go func() { returned <- q.Write(ctx, batch(10, 3)) }()
	go func() { returned <- q.Write(ctx, batch(13, 4)) }()
	select {
	case err := <-returned:
		t.Fatalf("Write to a full blocking queue returned (%v) before there was room", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(block)
	for range 2 {
		if err := <-returned; err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Close(ctx); err != nil {
		t.Fatal(err)
	}
	wantStats(t, q, sinks.QueueStats{Written: 17})
	written, _, _ := inner.state()
	slices.Sort(written)
	if !slices.Equal(written, ids(0, 17)) {
		t.Errorf("written %v, want 0..16", written)
	}
}

// TestQueueBlockReleased: a Write blocked on a full queue gives up, dropping
// and counting its batch, when its context ends or the queue is closed.
func TestQueueBlockReleased(t *testing.T) {
	block := make(chan struct{})
	inner := &fakeSink{block: block, entered: make(chan struct{}, 100)}
	q := sinks.NewQueue(inner, sinks.QueueConfig{Capacity: 10, Block: true, Logger: discard})
	if err := q.Write(context.Background(), batch(0, 10)); err != nil {
		t.Fatal(err)
	}
	<-inner.entered
	ctx, cancel := context.WithCancel(context.Background())
	returned := make(chan error, 1)
	go func() { returned <- q.Write(ctx, batch(10, 2)) }()
	cancel()
	if err := <-returned; !errors.Is(err, context.Canceled) {
		t.Fatalf("Write after its context ended: %v", err)
	}

	go func() { returned <- q.Write(context.Background(), batch(12, 3)) }()
	closed := make(chan error, 1)
	go func() { closed <- q.Close(context.Background()) }()
	if err := <-returned; !errors.Is(err, sinks.ErrClosed) {
		t.Fatalf("Write released by Close: %v", err)
	}
	close(block)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	wantStats(t, q, sinks.QueueStats{Written: 10, Dropped: 5})
}

// TestQueueOversizedBatch: a batch above the capacity gets in only when the
// queue is empty, so a big shutdown flush is not lost by construction.
func TestQueueOversizedBatch(t *testing.T) {
	ctx := context.Background()
	block := make(chan struct{})
	inner := &fakeSink{block: block}
	q := sinks.NewQueue(inner, sinks.QueueConfig{Capacity: 10, Logger: discard})
	if err := q.Write(ctx, batch(0, 15)); err != nil {
		t.Fatal(err)
	}
	if err := q.Write(ctx, batch(15, 1)); !errors.Is(err, sinks.ErrQueueFull) {
		t.Fatalf("Write over capacity: %v", err)
	}
	close(block)
	if err := q.Close(ctx); err != nil {
		t.Fatal(err)
	}
	wantStats(t, q, sinks.QueueStats{Written: 15, Dropped: 1})
}

func TestQueueCloseCancelled(t *testing.T) {
	inner := &fakeSink{block: make(chan struct{}), entered: make(chan struct{}, 10)}
	q := sinks.NewQueue(inner, sinks.QueueConfig{Name: "fake", Logger: discard})
	if err := q.Write(context.Background(), batch(0, 5)); err != nil {
		t.Fatal(err)
	}
	<-inner.entered
	if err := q.Write(context.Background(), batch(5, 3)); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := q.Close(ctx)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "sink fake: 8 flows not written") {
		t.Fatalf("Close: %v, want 8 flows not written and context.Canceled", err)
	}
	wantStats(t, q, sinks.QueueStats{Dropped: 8})
	if written, _, closed := inner.state(); len(written) != 0 || closed != 1 {
		t.Errorf("inner wrote %v and was closed %d times; want nothing, once", written, closed)
	}

	if err := q.Write(context.Background(), batch(8, 2)); !errors.Is(err, sinks.ErrClosed) {
		t.Errorf("Write after Close: %v", err)
	}
	wantStats(t, q, sinks.QueueStats{Dropped: 10})
	if err := q.Close(context.Background()); !errors.Is(err, sinks.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
}

// TestQueueCloseGivesUpRetrying: a sink that stays down is retried until
// Close's deadline, then the batch is reported lost.
func TestQueueCloseGivesUpRetrying(t *testing.T) {
	inner := &fakeSink{fails: 1 << 30}
	q := sinks.NewQueue(inner, sinks.QueueConfig{Logger: discard})
	if err := q.Write(context.Background(), batch(0, 4)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := q.Close(ctx); !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "4 flows not written") {
		t.Fatalf("Close: %v", err)
	}
	if st := q.Stats(); st.Dropped != 4 || st.Written != 0 || st.Queued != 0 {
		t.Errorf("stats %+v, want 4 dropped", st)
	}
}

func TestQueueCloseError(t *testing.T) {
	errDisk := errors.New("disk on fire")
	q := sinks.NewQueue(&fakeSink{closeErr: errDisk}, sinks.QueueConfig{Name: "fake", Logger: discard})
	if err := q.Close(context.Background()); !errors.Is(err, errDisk) || !strings.HasPrefix(err.Error(), "close sink fake: ") {
		t.Errorf("Close: %v, want the inner sink's error", err)
	}
}

// syncBuffer is a bytes.Buffer for a logger shared between goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestQueueFullWarningRateLimited(t *testing.T) {
	ctx := context.Background()
	var logs syncBuffer
	now := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	block := make(chan struct{})
	inner := &fakeSink{block: block}
	q := sinks.NewQueue(inner, sinks.QueueConfig{
		Name: "fake", Capacity: 1, WarnEvery: 10 * time.Second,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Now:    func() time.Time { return now }, // only read by Write, on this goroutine
	})
	if err := q.Write(ctx, batch(0, 1)); err != nil {
		t.Fatal(err)
	}
	drop := func(n int) {
		t.Helper()
		if err := q.Write(ctx, batch(100, n)); !errors.Is(err, sinks.ErrQueueFull) {
			t.Fatalf("Write: %v, want ErrQueueFull", err)
		}
	}
	drop(1) // warns
	now = now.Add(time.Second)
	drop(2) // within 10 s: counted, not logged
	now = now.Add(9 * time.Second)
	drop(1) // warns with the 3 flows dropped since the last warning

	var warnings []string
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, "sink queue full") {
			warnings = append(warnings, l)
		}
	}
	if len(warnings) != 2 {
		t.Fatalf("%d warnings, want 2:\n%s", len(warnings), logs.String())
	}
	for i, want := range []string{"sink=fake capacity=1 dropped=1 dropped_total=1", "dropped=3 dropped_total=4"} {
		if !strings.Contains(warnings[i], want) {
			t.Errorf("warning %d: %q, want %q", i, warnings[i], want)
		}
	}
	close(block)
	if err := q.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestQueueConcurrent runs several writers against a flaky sink under the
// race detector: each flow is written once, each writer's flows in order.
func TestQueueConcurrent(t *testing.T) {
	ctx := context.Background()
	inner := &flakySink{}
	q := sinks.NewQueue(inner, sinks.QueueConfig{
		Logger: discard,
		Wait:   func(context.Context, time.Duration) error { return nil },
	})
	const writers, batches, batchLen = 4, 100, 7
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for b := range batches {
				if err := q.Write(ctx, batch((w*batches+b)*batchLen, batchLen)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Go(func() {
		for range 100 {
			st := q.Stats()
			if st.Queued < 0 || st.Dropped != 0 {
				t.Errorf("stats %+v", st)
			}
		}
	})
	wg.Wait()
	if err := q.Close(ctx); err != nil {
		t.Fatal(err)
	}
	const total = writers * batches * batchLen
	wantStats(t, q, sinks.QueueStats{Written: total, Retries: inner.fails})

	seen := make(map[uint64]bool)
	last := make([]int, writers)
	for i := range last {
		last[i] = -1
	}
	for _, id := range inner.written {
		if seen[id] {
			t.Fatalf("flow %d written twice", id)
		}
		seen[id] = true
		w := int(id) / (batches * batchLen)
		if int(id) < last[w] {
			t.Fatalf("writer %d: flow %d after %d", w, id, last[w])
		}
		last[w] = int(id)
	}
	if len(seen) != total {
		t.Errorf("%d flows written, want %d", len(seen), total)
	}
}

// flakySink fails every third Write. Only the queue's goroutine calls it.
type flakySink struct {
	n, fails uint64
	written  []uint64
}

func (f *flakySink) Write(_ context.Context, flows []aggregator.Flow) error {
	f.n++
	if f.n%3 == 0 {
		f.fails++
		return errors.New("flaky")
	}
	for i := range flows {
		f.written = append(f.written, flows[i].ID)
	}
	return nil
}

func (f *flakySink) Close(context.Context) error { return nil }
