package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
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
and the program is detached. Needs root (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := resolveConfig(cmd.Flags(), &fromFlags, configFile, os.Getenv)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
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

// sensor is one live run: probes on interfaces feeding one aggregator whose
// flows go through a queue to the Parquet sink.
type sensor struct {
	cfg    Config
	log    io.Writer
	probes []*loader.Probe
	agg    *aggregator.Aggregator
	out    *output
}

func runSensor(ctx context.Context, cfg Config, stderr io.Writer) (err error) {
	s := &sensor{cfg: cfg, log: stderr}
	if err := loader.CheckPrivileges(); err != nil {
		return err
	}
	ifaces, err := s.interfaces()
	if err != nil {
		return err
	}
	// Output first: a bad --out must fail before anything is attached.
	if s.out, err = openOutput(cfg, slog.New(slog.NewTextHandler(stderr, nil))); err != nil {
		return err
	}
	defer func() {
		if cerr := s.closeProbes(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	names := map[uint32]string{}
	for _, name := range ifaces {
		p, err := loader.Attach(name, loader.Options{
			Mode:       loader.XDPMode(cfg.XDPMode),
			RingBytes:  cfg.RingMiB << 20,
			ClockEvery: cfg.ClockEvery,
			Batch:      cfg.Batch,
			PinRoot:    cfg.PinRoot,
		})
		if err != nil {
			return errors.Join(err, s.out.close(context.Background()))
		}
		s.probes = append(s.probes, p)
		names[uint32(p.Ifindex)] = p.Interface
		pinned := ""
		if p.PinDir() != "" {
			pinned = ", maps pinned in " + p.PinDir()
		}
		fmt.Fprintf(stderr, "flowsensor: watching %s (ifindex %d, xdp %s%s)\n", p.Interface, p.Ifindex, p.Mode, pinned)
	}

	s.agg = aggregator.New(aggregator.Config{
		IdleTimeout:   cfg.IdleTimeout,
		ActiveTimeout: cfg.ActiveTimeout,
		TCPLinger:     cfg.TCPLinger,
		Shards:        cfg.Shards,
		InterfaceName: func(ifindex uint32) string { return names[ifindex] },
	}, s.out.emit)

	readErr := s.read(ctx)

	// Every flow still open becomes a final report, then the sink drains.
	s.agg.Close()
	closeCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sinkErr := s.out.close(closeCtx)
	fmt.Fprintln(stderr, s.status("stopped", nil))
	return errors.Join(readErr, sinkErr)
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

// read runs one reader per probe until ctx ends, expiring flows every second
// and printing status lines. Each reader detaches its program and drains its
// ring before returning.
func (s *sensor) read(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(s.probes))
	var wg sync.WaitGroup
	for _, p := range s.probes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := s.agg.NewWriter()
			err := p.Run(ctx, w.Add, w.Flush)
			w.Flush()
			if err != nil {
				errc <- err
				cancel() // one broken interface stops the sensor rather than running half blind
			}
		}()
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

func (s *sensor) closeProbes() error {
	var errs []error
	for _, p := range s.probes {
		errs = append(errs, p.Close())
	}
	return errors.Join(errs...)
}

type statusSnapshot struct {
	at      time.Time
	kernel  bpf.Counters
	packets uint64
}

func (s *sensor) snapshot() statusSnapshot {
	snap := statusSnapshot{at: time.Now()}
	for _, p := range s.probes {
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
