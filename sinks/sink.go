// Package sinks defines where flow reports go and the queue that keeps a slow
// or failing destination from ever blocking the packet path.
package sinks

import (
	"context"
	"errors"

	"github.com/flowsensor/flowsensor/aggregator"
)

// Sink is a destination for flow reports.
//
// Write either accepts the whole batch and returns nil, or returns an error
// and keeps none of it, so that a caller may retry the same batch without
// writing any flow twice. Write must not keep flows (the slice may be reused
// by the caller once Write returns) and must return promptly once ctx is done.
// Close writes out anything the sink still buffers, within ctx, and releases
// its resources; Write must not be called after Close.
type Sink interface {
	Write(ctx context.Context, flows []aggregator.Flow) error
	Close(ctx context.Context) error
}

// ErrClosed is returned by Write and Close on a sink that is already closed.
var ErrClosed = errors.New("sink closed")
