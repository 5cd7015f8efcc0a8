package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/flowsensor/flowsensor/aggregator"
	"github.com/flowsensor/flowsensor/bpf"
	"github.com/flowsensor/flowsensor/loader"
)

func newRunCmd() *cobra.Command {
	fromFlags := DefaultConfig()
	var configFile string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Watch live interfaces and write their flows",
		Long: `Attach the XDP program to each interface, build bidirectional flows from
every packet and write them to Parquet under OUT/flows/. Stops after
--duration, or on SIGINT/SIGTERM; every open flow is then written as final
and the program is detached. An interface that goes away is watched for and
the program attached again when it comes back. Needs root (CAP_BPF,
CAP_NET_ADMIN, CAP_PERFMON).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, ctx, stop, err := setup(cmd, &fromFlags, configFile)
			if err != nil {
				return err
			}
			defer stop()
			if cfg.Duration > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
				defer cancel()
			}
			return runSensor(ctx, cfg, cmd.ErrOrStderr())
		},
	}
	bindRunFlags(cmd.Flags(), &fromFlags)
	cmd.Flags().StringVar(&configFile, "config", "", "YAML configuration file (flags override it, it overrides defaults)")
	return cmd
}

// sensor is one live run: a probe per interface feeding one aggregator whose
// flows go through a queue per sink.
type sensor struct {
	cfg Config
	log io.Writer
	agg *aggregator.Aggregator
	out *output

	mu     sync.Mutex
	probes map[string]*loader.Probe // attached now, by interface name
	names  map[uint32]string        // every ifindex seen, for flow records
	closed bpf.Counters             // counters of probes already closed
}

func runSensor(ctx context.Context, cfg Config, stderr io.Writer) (err error) {
	s := &sensor{cfg: cfg, log: stderr, probes: map[string]*loader.Probe{}, names: map[uint32]string{}}
	if err := loader.CheckPrivileges(); err != nil {
		return err
	}
	ifaces, err := s.interfaces()
	if err != nil {
		return err
	}
	// Output first: a bad --out must fail before anything is attached.
	if s.out, err = openOutput(cfg, slog.New(slog.NewTextHandler(stderr, nil)), false); err != nil {
		return err
	}
	// Every interface is attached before anything runs: a failure leaves
	// nothing attached.
	for _, name := range ifaces {
		if err := s.attach(name); err != nil {
			return errors.Join(err, s.closeProbes(), s.out.close(context.Background()))
		}
	}
	s.agg = aggregator.New(aggregator.Config{
		IdleTimeout:   cfg.IdleTimeout,
		ActiveTimeout: cfg.ActiveTimeout,
		TCPLinger:     cfg.TCPLinger,
		Shards:        cfg.Shards,
		InterfaceName: s.interfaceName,
	}, s.out.emit)

	readErr := s.read(ctx, ifaces)

	// Every flow still open becomes a final report, then the sinks drain.
	s.agg.Close()
	closeCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sinkErr := s.out.close(closeCtx)
	fmt.Fprintln(stderr, s.status("stopped", nil))
	return errors.Join(readErr, s.closeProbes(), sinkErr)
}

// interfaces returns the configured interfaces, or the default-route one,
// each checked to exist.
func (s *sensor) interfaces() ([]string, error) {
	ifaces := slices.Compact(slices.Sorted(slices.Values(s.cfg.Interfaces)))
	if len(ifaces) == 0 {
		name, err := loader.DefaultInterface()
		if err != nil {
			return nil, err
		}
		ifaces = []string{name}
	}
	for _, name := range ifaces {
		if _, err := loader.InterfaceIndex(name); err != nil {
			return nil, err
		}
	}
	return ifaces, nil
}

func (s *sensor) attach(name string) error {
	p, err := loader.Attach(name, loader.Options{
		Mode:       loader.XDPMode(s.cfg.XDPMode),
		RingBytes:  s.cfg.RingMiB << 20,
		ClockEvery: s.cfg.ClockEvery,
		Batch:      s.cfg.Batch,
		PinRoot:    s.cfg.PinRoot,
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.probes[name] = p
	s.names[uint32(p.Ifindex)] = name
	s.mu.Unlock()
	pinned := ""
	if p.PinDir() != "" {
		pinned = ", maps pinned in " + p.PinDir()
	}
	fmt.Fprintf(s.log, "flowsensor: watching %s (ifindex %d, xdp %s%s)\n", p.Interface, p.Ifindex, p.Mode, pinned)
	return nil
}

func (s *sensor) probe(name string) *loader.Probe {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.probes[name]
}

// release closes a probe that has stopped, keeping its counters.
func (s *sensor) release(name string) error {
	s.mu.Lock()
	p := s.probes[name]
	delete(s.probes, name)
	s.mu.Unlock()
	if p == nil {
		return nil
	}
	if c, err := p.Counters(); err == nil {
		s.mu.Lock()
		s.closed.Add(&c)
		s.mu.Unlock()
	}
	return p.Close()
}

func (s *sensor) closeProbes() error {
	s.mu.Lock()
	names := make([]string, 0, len(s.probes))
	for name := range s.probes {
		names = append(names, name)
	}
	s.mu.Unlock()
	var errs []error
	for _, name := range names {
		errs = append(errs, s.release(name))
	}
	return errors.Join(errs...)
}

func (s *sensor) interfaceName(ifindex uint32) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.names[ifindex]
}

// read runs one supervisor per interface until ctx ends, expiring flows every
// second and printing status lines.
func (s *sensor) read(ctx context.Context, ifaces []string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Interface events, fanned out by name.
	events := map[string]chan loader.LinkEvent{}
	for _, name := range ifaces {
		events[name] = make(chan loader.LinkEvent, 16)
	}
	all := make(chan loader.LinkEvent, 64)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := loader.WatchLinks(ctx, all); err != nil && ctx.Err() == nil {
			fmt.Fprintf(s.log, "flowsensor: %v: interfaces that go away will not be watched for\n", err)
		}
	})
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-all:
				if ch, ok := events[ev.Name]; ok {
					select {
					case ch <- ev:
					default: // the supervisor re-checks the interface itself
					}
				}
			}
		}
	})

	errc := make(chan error, len(ifaces))
	for _, name := range ifaces {
		wg.Go(func() {
			if err := s.supervise(ctx, name, events[name]); err != nil {
				errc <- err
				cancel() // a broken interface stops the sensor rather than running half blind
			}
		})
	}

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var status <-chan time.Time
	if s.cfg.StatusInterval > 0 {
		t := time.NewTicker(s.cfg.StatusInterval)
		defer t.Stop()
		status = t.C
	}
	var last *statusSnapshot
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case now := <-tick.C:
			s.agg.Tick(now)
			// Commit Parquet files whose rows are old enough even when no new flows arrive.
			if err := s.out.tick(ctx); err != nil && ctx.Err() == nil {
				fmt.Fprintf(s.log, "flowsensor: %v (rows stay buffered and are retried)\n", err)
			}
		case <-status:
			snap := s.snapshot()
			fmt.Fprintln(s.log, s.status("", last))
			last = &snap
		}
	}
	wg.Wait()
	close(errc)
	var errs []error
	for err := range errc {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// supervise reads one interface's probe until ctx ends. When the interface
// is deleted, its probe is closed (its program went with the interface), and
// the program is attached again once an interface of that name is back.
func (s *sensor) supervise(ctx context.Context, name string, events <-chan loader.LinkEvent) error {
	w := s.agg.NewWriter()
	defer w.Flush()
	for {
		p := s.probe(name)
		runCtx, stop := context.WithCancel(ctx)
		gone := make(chan struct{})
		go func() {
			defer close(gone)
			for {
				select {
				case <-runCtx.Done():
					return
				case ev := <-events:
					if ev.Gone || ev.Index != p.Ifindex {
						stop()
						return
					}
				}
			}
		}()
		err := p.Run(runCtx, w.Add, w.Flush)
		stop()
		<-gone
		w.Flush()
		if err := errors.Join(err, s.release(name)); err != nil && ctx.Err() != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			// The interface vanished under the reader; that is expected now.
			fmt.Fprintf(s.log, "flowsensor: %s: %v\n", name, err)
		}
		fmt.Fprintf(s.log, "flowsensor: %s went away; attaching again when it is back\n", name)
		if !s.waitFor(ctx, name, events) {
			return nil
		}
	}
}

// waitFor waits until the interface exists again and the program is
// attached to it, or ctx ends (false).
func (s *sensor) waitFor(ctx context.Context, name string, events <-chan loader.LinkEvent) bool {
	retry := time.NewTicker(5 * time.Second) // in case an event was missed
	defer retry.Stop()
	for {
		if _, err := loader.InterfaceIndex(name); err == nil {
			err := s.attach(name)
			if err == nil {
				return true
			}
			fmt.Fprintf(s.log, "flowsensor: %v (retrying)\n", err)
		}
		select {
		case <-ctx.Done():
			return false
		case <-events:
		case <-retry.C:
		}
	}
}

type statusSnapshot struct {
	at      time.Time
	kernel  bpf.Counters
	packets uint64
}

func (s *sensor) snapshot() statusSnapshot {
	snap := statusSnapshot{at: time.Now()}
	s.mu.Lock()
	snap.kernel = s.closed
	probes := make([]*loader.Probe, 0, len(s.probes))
	for _, p := range s.probes {
		probes = append(probes, p)
	}
	s.mu.Unlock()
	for _, p := range probes {
		if c, err := p.Counters(); err == nil {
			snap.kernel.Add(&c)
		}
	}
	if s.agg != nil {
		snap.packets = s.agg.Stats().Packets
	}
	return snap
}

// status is the one-line summary: packets seen by the kernel and turned into
// flows, flows, and everything lost or left out, by cause.
func (s *sensor) status(prefix string, last *statusSnapshot) string {
	now := s.snapshot()
	rate := ""
	if last != nil {
		if dt := now.at.Sub(last.at).Seconds(); dt > 0 {
			rate = fmt.Sprintf(" (%.0f/s)", float64(now.kernel[bpf.CounterSeen]-last.kernel[bpf.CounterSeen])/dt)
		}
	}
	var as aggregator.Stats
	if s.agg != nil {
		as = s.agg.Stats()
	}
	k := now.kernel
	line := fmt.Sprintf("flowsensor: packets %d%s in flows %d | flows active %d reported %d | not flows: non-ip %d malformed %d | drops: ring %d queue %d | %s",
		k[bpf.CounterSeen], rate, now.packets, as.ActiveFlows, as.Reports,
		k[bpf.CounterNonIP], malformed(&k), k[bpf.CounterRingbufFull], s.out.dropped(), s.out.status())
	if prefix != "" {
		line += " | " + prefix
	}
	return line
}

// malformed counts frames whose L2 or L3 headers were cut short or invalid.
func malformed(k *bpf.Counters) uint64 {
	return k[bpf.CounterTruncL2] + k[bpf.CounterTruncL3] + k[bpf.CounterBadL3] + k[bpf.CounterTooDeep]
}
