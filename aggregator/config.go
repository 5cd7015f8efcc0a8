package aggregator

import (
	"errors"
	"fmt"
	"runtime"
	"time"
)

// Defaults for the zero values of Config.
const (
	DefaultIdleTimeout   = 15 * time.Second
	DefaultActiveTimeout = 60 * time.Second
	DefaultTCPLinger     = 2 * time.Second
	DefaultMaxFlows      = 1 << 20
)

// Config tunes a Table or an Aggregator. Zero values mean the defaults.
type Config struct {
	// IdleTimeout ends a flow that has seen no packet for this long.
	IdleTimeout time.Duration
	// ActiveTimeout reports a flow (Final false) whose current report started
	// this long ago, so long flows show up before they end. It may be shorter
	// than IdleTimeout.
	ActiveTimeout time.Duration
	// TCPLinger is how long a TCP flow stays after RST, or FIN in both
	// directions, to collect the last ACKs and retransmissions.
	TCPLinger time.Duration
	// Shards is the number of Aggregator goroutines; default
	// runtime.GOMAXPROCS(0). A Table ignores it.
	Shards int
	// MaxFlows bounds the flows held in memory: a Table's own limit, or an
	// Aggregator's total, split evenly over its shards. When a table is full,
	// its least recently seen flow is reported (EndEvicted) to make room.
	MaxFlows int
	// InterfaceName names an ifindex for Flow.Interface. It is called once per
	// new flow from the goroutine that owns the table, so an Aggregator calls
	// it concurrently from its shards. Nil leaves Interface empty.
	InterfaceName func(ifindex uint32) string
}

// Validate reports every field that cannot be used, by name.
func (c Config) Validate() error {
	var errs []error
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"IdleTimeout", c.IdleTimeout},
		{"ActiveTimeout", c.ActiveTimeout},
		{"TCPLinger", c.TCPLinger},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("aggregator config: %s is negative (%v)", d.name, d.v))
		}
	}
	if c.Shards < 0 {
		errs = append(errs, fmt.Errorf("aggregator config: Shards is negative (%d)", c.Shards))
	}
	if c.MaxFlows < 0 {
		errs = append(errs, fmt.Errorf("aggregator config: MaxFlows is negative (%d)", c.MaxFlows))
	}
	return errors.Join(errs...)
}

// withDefaults replaces zero values with the defaults.
func (c Config) withDefaults() Config {
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.ActiveTimeout == 0 {
		c.ActiveTimeout = DefaultActiveTimeout
	}
	if c.TCPLinger == 0 {
		c.TCPLinger = DefaultTCPLinger
	}
	if c.Shards == 0 {
		c.Shards = runtime.GOMAXPROCS(0)
	}
	if c.MaxFlows == 0 {
		c.MaxFlows = DefaultMaxFlows
	}
	return c
}
