package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/flowsensor/flowsensor/aggregator"
	"github.com/flowsensor/flowsensor/sinks"
	"github.com/flowsensor/flowsensor/sinks/elasticsearch"
	"github.com/flowsensor/flowsensor/sinks/parquet"
)

// output is where flows go, for run and replay alike: each sink behind its
// own bounded queue, so a slow sink never blocks the live flow table. Replay
// waits for a slow sink instead: its input can wait, so it loses nothing.
type output struct {
	parquet *parquet.Sink
	es      *elasticsearch.Sink // nil when no URL is configured
	queues  []*sinks.Queue
}

// openOutput creates the sinks. It fails before anything else starts when an
// output cannot be used. With wait, a full queue makes emit wait for room
// rather than drop flows.
func openOutput(cfg Config, logger *slog.Logger, wait bool) (*output, error) {
	pq, err := parquet.New(parquet.Config{Dir: cfg.Out, MaxRows: cfg.ParquetRows, MaxAge: cfg.ParquetAge})
	if err != nil {
		return nil, err
	}
	o := &output{parquet: pq}
	o.queues = append(o.queues, sinks.NewQueue(pq, sinks.QueueConfig{Name: "parquet", Logger: logger, Block: wait}))
	if cfg.Elasticsearch.Enabled() {
		esCfg := cfg.Elasticsearch
		esCfg.Logger = logger
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if o.es, err = elasticsearch.New(ctx, esCfg); err != nil {
			return nil, errors.Join(err, o.close(ctx))
		}
		o.queues = append(o.queues, sinks.NewQueue(o.es, sinks.QueueConfig{Name: "elasticsearch", Logger: logger, Block: wait}))
	}
	return o, nil
}

// emit hands flows to every sink. A full queue counts and logs its own
// drops, or, for replay, waits until its sink has taken enough.
func (o *output) emit(flows []aggregator.Flow) {
	for _, q := range o.queues {
		_ = q.Write(context.Background(), flows)
	}
}

// tick commits Parquet files whose rows are old enough even when no new
// flows arrive.
func (o *output) tick(ctx context.Context) error {
	return o.parquet.Flush(ctx)
}

// close drains every queue and closes the sinks, all at once so that each
// gets the whole of ctx; whatever Elasticsearch does not take by then is
// spooled by its sink, not lost.
func (o *output) close(ctx context.Context) error {
	errs := make([]error, len(o.queues))
	var wg sync.WaitGroup
	for i, q := range o.queues {
		wg.Go(func() { errs[i] = q.Close(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// dropped is the number of flows that could not be written anywhere they
// were meant to go.
func (o *output) dropped() uint64 {
	var n uint64
	for _, q := range o.queues {
		n += q.Stats().Dropped
	}
	if o.es != nil {
		st := o.es.Stats()
		n += st.Lost()
	}
	return n
}

func (o *output) status() string {
	ps := o.parquet.Stats()
	s := fmt.Sprintf("parquet rows %d files %d", ps.RowsWritten, ps.FilesWritten)
	if o.es != nil {
		st := o.es.Stats()
		s += fmt.Sprintf(" | es indexed %d duplicates %d spooled %d (in spool %d) dead-lettered %d lost %d",
			st.Indexed, st.Duplicates, st.Spooled, st.SpoolDocs, st.DeadLettered, st.Lost())
	}
	return s
}
