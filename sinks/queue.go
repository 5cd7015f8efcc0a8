package sinks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/flowsensor/flowsensor/aggregator"
)

// ErrQueueFull is returned by Queue.Write when a batch does not fit. The
// flows are already counted as dropped and logged, so callers need not report
// it again.
var ErrQueueFull = errors.New("sink queue full")

// QueueConfig configures a Queue. Zero fields take the defaults below.
type QueueConfig struct {
	Name       string        // sink name for log lines, e.g. "parquet"
	Capacity   int           // flows held in memory, default 100,000
	MinBackoff time.Duration // wait after the first failed Write, default 100ms
	MaxBackoff time.Duration // cap of the doubling wait, default 30s
	WarnEvery  time.Duration // at most one "queue full" warning per interval, default 10s
	Logger     *slog.Logger  // default slog.Default()

	// Wait sleeps for d or until ctx is done, whichever comes first, and
	// returns ctx's error in the second case. Tests inject it to make retries
	// instant; the default uses a timer.
	Wait func(ctx context.Context, d time.Duration) error
	// Now is the clock of the warning rate limit; default time.Now.
	Now func() time.Time

	// Block makes Write wait for room instead of dropping a batch that does
	// not fit, for a source that can wait: a capture file can, a network link
	// cannot (its kernel ring would overflow instead, uncounted by the queue).
	Block bool
}

// QueueStats are counts of flows (not batches), except Retries.
// Every flow given to Write is, at any time, in exactly one of Queued,
// Written and Dropped.
type QueueStats struct {
	Queued  int    // accepted and not yet written, including the batch being written
	Written uint64 // written by the inner sink
	Retries uint64 // failed inner Writes that were retried
	Dropped uint64 // rejected because the queue was full or closed, or lost at Close
}

// Queue puts a bounded in-memory queue in front of a Sink and writes to it
// from its own goroutine, so that Write never blocks the caller. A batch the
// inner sink rejects is retried, with capped exponential backoff, until it is
// written or Close gives up; batches are written one at a time, in order.
// Queue is itself a Sink.
type Queue struct {
	inner Sink
	cfg   QueueConfig
	log   *slog.Logger

	ctx    context.Context // cancelled when Close gives up, to abort the inner Write
	cancel context.CancelFunc
	wake   chan struct{} // capacity 1: "there is work or the queue closed"
	room   chan struct{} // capacity 1: "a batch was written" (Block)
	stop   chan struct{} // closed by Close, to release blocked Writes
	done   chan struct{} // closed when the writer goroutine exits

	mu               sync.Mutex
	batches          [][]aggregator.Flow
	closed           bool
	stats            QueueStats
	lastWarn         time.Time
	droppedSinceWarn uint64
}

var _ Sink = (*Queue)(nil)

// NewQueue starts a Queue in front of inner. Close the Queue, not inner: it
// closes inner once the queue is drained.
func NewQueue(inner Sink, cfg QueueConfig) *Queue {
	if cfg.Capacity <= 0 {
		cfg.Capacity = 100_000
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.MinBackoff)
	if cfg.WarnEvery <= 0 {
		cfg.WarnEvery = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Wait == nil {
		cfg.Wait = wait
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	q := &Queue{
		inner: inner,
		cfg:   cfg,
		log:   cfg.Logger.With("sink", cfg.Name),
		wake:  make(chan struct{}, 1),
		room:  make(chan struct{}, 1),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	q.ctx, q.cancel = context.WithCancel(context.Background())
	go q.run()
	return q
}

// Write queues a copy of flows and returns without waiting for the inner
// sink. If the batch does not fit, it is dropped whole (the queued, older
// flows are kept), counted, and ErrQueueFull is returned; with Block, Write
// waits for room instead, until ctx is done or the queue is closed (then the
// batch is dropped and counted). A batch larger than the whole capacity is
// accepted into an empty queue, so that one big batch, such as the flush of
// every flow at shutdown, is not dropped by construction.
func (q *Queue) Write(ctx context.Context, flows []aggregator.Flow) error {
	if len(flows) == 0 {
		return nil
	}
	q.mu.Lock()
	for q.cfg.Block && !q.closed && !q.fits(len(flows)) {
		q.mu.Unlock()
		select {
		case <-q.room:
		case <-q.stop:
		case <-ctx.Done():
			q.mu.Lock()
			q.stats.Dropped += uint64(len(flows))
			q.mu.Unlock()
			return ctx.Err()
		}
		q.mu.Lock()
	}
	if q.closed {
		q.stats.Dropped += uint64(len(flows))
		q.mu.Unlock()
		return ErrClosed
	}
	if !q.fits(len(flows)) {
		q.stats.Dropped += uint64(len(flows))
		q.droppedSinceWarn += uint64(len(flows))
		var warn bool
		var since, total uint64
		if now := q.cfg.Now(); q.lastWarn.IsZero() || now.Sub(q.lastWarn) >= q.cfg.WarnEvery {
			warn, since, total = true, q.droppedSinceWarn, q.stats.Dropped
			q.lastWarn, q.droppedSinceWarn = now, 0
		}
		q.mu.Unlock()
		if warn {
			q.log.Warn("sink queue full, dropping flows",
				"capacity", q.cfg.Capacity, "dropped", since, "dropped_total", total)
		}
		return ErrQueueFull
	}
	q.batches = append(q.batches, slices.Clone(flows))
	q.stats.Queued += len(flows)
	q.mu.Unlock()
	q.signal()
	return nil
}

// fits reports whether n more flows may be queued. Call with q.mu held.
func (q *Queue) fits(n int) bool {
	return q.stats.Queued == 0 || q.stats.Queued+n <= q.cfg.Capacity
}

// Stats returns the current counts.
func (q *Queue) Stats() QueueStats {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.stats
}

// Close stops accepting flows, keeps writing (and retrying) the queued ones
// until the queue is empty or ctx is done, then closes the inner sink with
// ctx. Flows that could not be written are counted as dropped and reported
// in the returned error, joined with the inner sink's Close error.
func (q *Queue) Close(ctx context.Context) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return ErrClosed
	}
	q.closed = true
	q.mu.Unlock()
	close(q.stop)
	q.signal()

	select {
	case <-q.done:
	case <-ctx.Done():
		// Abort the backoff or the inner Write in progress. The batch it
		// held is still counted in Queued, with the rest, below.
		q.cancel()
		<-q.done
	}
	q.cancel()

	var errs []error
	q.mu.Lock()
	if lost := q.stats.Queued; lost > 0 {
		q.stats.Dropped += uint64(lost)
		q.stats.Queued = 0
		q.batches = nil
		errs = append(errs, fmt.Errorf("sink %s: %d flows not written: %w", q.cfg.Name, lost, context.Cause(ctx)))
	}
	q.mu.Unlock()
	if err := q.inner.Close(ctx); err != nil {
		errs = append(errs, fmt.Errorf("close sink %s: %w", q.cfg.Name, err))
	}
	return errors.Join(errs...)
}

func (q *Queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// run writes batches in order until the queue is closed and empty, or Close
// aborts it.
func (q *Queue) run() {
	defer close(q.done)
	for {
		q.mu.Lock()
		if len(q.batches) == 0 {
			closed := q.closed
			q.mu.Unlock()
			if closed {
				return
			}
			<-q.wake
			continue
		}
		b := q.batches[0]
		q.batches[0] = nil
		q.batches = q.batches[1:]
		q.mu.Unlock()

		if !q.write(b) {
			return // aborted by Close, which counts b and the rest as lost
		}
	}
}

// write retries b until the inner sink accepts it, and reports false if Close
// aborted it first.
func (q *Queue) write(b []aggregator.Flow) bool {
	for attempt := 1; ; attempt++ {
		err := q.inner.Write(q.ctx, b)
		if err == nil {
			q.mu.Lock()
			q.stats.Queued -= len(b)
			q.stats.Written += uint64(len(b))
			q.mu.Unlock()
			select {
			case q.room <- struct{}{}:
			default: // a blocked Write has yet to take the last one
			}
			return true
		}
		if q.ctx.Err() != nil {
			return false
		}
		q.mu.Lock()
		q.stats.Retries++
		q.mu.Unlock()
		d := backoff(attempt, q.cfg.MinBackoff, q.cfg.MaxBackoff)
		q.log.Warn("sink write failed, will retry",
			"flows", len(b), "attempt", attempt, "retry_in", d, "error", err)
		if q.cfg.Wait(q.ctx, d) != nil {
			return false
		}
	}
}

// backoff is min·2^(attempt-1), capped at maxD.
func backoff(attempt int, minD, maxD time.Duration) time.Duration {
	d := minD
	for i := 1; i < attempt && d < maxD; i++ {
		d *= 2
	}
	return min(d, maxD)
}

func wait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
