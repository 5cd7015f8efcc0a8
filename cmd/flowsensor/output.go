package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/flowsensor/flowsensor/aggregator"
	"github.com/flowsensor/flowsensor/sinks"
	"github.com/flowsensor/flowsensor/sinks/parquet"
)

// output is where flows go, for run and replay alike: each sink behind its
// own bounded queue, so a slow sink never blocks the flow table.
type output struct {
	parquet *parquet.Sink
	queues  []*sinks.Queue
}

// openOutput creates the sinks. It fails before anything else starts when an
// output cannot be used.
func openOutput(cfg Config, logger *slog.Logger) (*output, error) {
	pq, err := parquet.New(parquet.Config{Dir: cfg.Out, MaxRows: cfg.ParquetRows, MaxAge: cfg.ParquetAge})
	if err != nil {
		return nil, err
	}
	o := &output{parquet: pq}
	o.queues = append(o.queues, sinks.NewQueue(pq, sinks.QueueConfig{Name: "parquet", Logger: logger}))
	return o, nil
}

// emit hands flows to every sink without blocking; a full queue counts and
// logs its own drops.
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

// close drains every queue and closes the sinks; ctx bounds the wait.
func (o *output) close(ctx context.Context) error {
	var errs []error
	for _, q := range o.queues {
		errs = append(errs, q.Close(ctx))
	}
	return errors.Join(errs...)
}

// dropped is the number of flows that could not be written.
func (o *output) dropped() uint64 {
	var n uint64
	for _, q := range o.queues {
		n += q.Stats().Dropped
	}
	return n
}

func (o *output) status() string {
	ps := o.parquet.Stats()
	return fmt.Sprintf("parquet rows %d files %d", ps.RowsWritten, ps.FilesWritten)
}
