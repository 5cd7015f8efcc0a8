package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/flowsensor/flowsensor/aggregator"
	"github.com/flowsensor/flowsensor/bpf"
	"github.com/flowsensor/flowsensor/capture"
)

func newReplayCmd() *cobra.Command {
	fromFlags := DefaultConfig()
	var configFile string
	var watch bool
	cmd := &cobra.Command{
		Use:   "replay [flags] PATH...",
		Short: "Build flows from capture files or folders of them",
		Long: `Read pcap and pcapng files (or every complete file in the given folders) and
write their flows exactly as 'run' would, through the same flow table and
sinks. Flow times and timeouts follow packet time. Files whose name starts
with "." are still being written and are skipped.

With --watch, keep running: each new complete file that appears in the
folders is processed once, and a state file remembers what was finished so a
restart neither repeats nor skips a file. SIGINT/SIGTERM stops after the
current file and writes every open flow.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, ctx, stop, err := setup(cmd, &fromFlags, configFile)
			if err != nil {
				return err
			}
			defer stop()
			setGCFloor(replayGCFloor)
			return runReplay(ctx, cfg, args, watch, cmd.ErrOrStderr())
		},
	}
	bindReplayFlags(cmd.Flags(), &fromFlags)
	cmd.Flags().BoolVar(&watch, "watch", false, "keep running and process each new complete file in the folders")
	cmd.Flags().StringVar(&configFile, "config", "", "YAML configuration file (flags override it, it overrides defaults)")
	return cmd
}

// replayer feeds packets from capture files into one flow table, so flows
// continue across files (rotated captures) as they would live.
type replayer struct {
	cfg  Config
	log  io.Writer
	agg  *aggregator.Aggregator
	w    *aggregator.Writer
	out  *output
	ifcs interfaces

	kernel      bpf.Counters // what the XDP program would have counted
	unsupported int64        // packets of link types flowsensor cannot read
	files       int
	failed      int
	bytes       int64 // on the wire
	maxTs       int64 // latest packet time seen (Unix ns)
	lastTick    int64 // packet time of the last expiry tick
	lastFlush   time.Time
	lastPackets int64 // packets of the file being read
	progress    *progressbar.ProgressBar
}

// interfaces names replayed interfaces; the flow table reads it from its
// shard goroutines.
type interfaces struct {
	mu    sync.RWMutex
	index map[string]uint32
	names []string
}

func (i *interfaces) id(name string) uint32 {
	i.mu.Lock()
	defer i.mu.Unlock()
	if id, ok := i.index[name]; ok {
		return id
	}
	if i.index == nil {
		i.index = map[string]uint32{}
	}
	i.names = append(i.names, name)
	id := uint32(len(i.names))
	i.index[name] = id
	return id
}

func (i *interfaces) name(id uint32) string {
	i.mu.RLock()
	defer i.mu.RUnlock()
	if id == 0 || int(id) > len(i.names) {
		return ""
	}
	return i.names[id-1]
}

// tickEvery is how much packet time passes between expiry runs. Timeouts are
// exact regardless (a packet past a deadline closes the old flow when it
// arrives); this only bounds how late a silent flow is written.
const tickEvery = int64(time.Second)

func runReplay(ctx context.Context, cfg Config, paths []string, watch bool, stderr io.Writer) error {
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			return err
		}
	}
	out, err := openOutput(cfg, slog.New(slog.NewTextHandler(stderr, nil)), true)
	if err != nil {
		return err
	}
	rp := &replayer{cfg: cfg, log: stderr, out: out, lastFlush: time.Now()}
	rp.agg = aggregator.New(aggregator.Config{
		IdleTimeout:   cfg.IdleTimeout,
		ActiveTimeout: cfg.ActiveTimeout,
		TCPLinger:     cfg.TCPLinger,
		Shards:        cfg.Shards,
		InterfaceName: rp.ifcs.name,
	}, out.emit)
	rp.w = rp.agg.NewWriter()

	start := time.Now()
	var runErr error
	if watch {
		runErr = rp.watch(ctx, paths)
	} else {
		runErr = rp.once(ctx, paths)
	}

	rp.w.Flush()
	rp.agg.Close()
	closeCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sinkErr := out.close(closeCtx)
	fmt.Fprintln(stderr, rp.summary(time.Since(start)))

	errs := []error{runErr, sinkErr}
	if rp.failed > 0 {
		errs = append(errs, fmt.Errorf("%d of %d files could not be read completely", rp.failed, rp.files))
	}
	return errors.Join(errs...)
}

// once processes the files and folders given, then returns.
func (rp *replayer) once(ctx context.Context, paths []string) error {
	var files []capture.FileID
	var total int64
	for _, p := range paths {
		ids, err := expand(p)
		if err != nil {
			return err
		}
		for _, id := range ids {
			total += id.Size
		}
		files = append(files, ids...)
	}
	if total > 8<<20 && isTerminal(os.Stderr) {
		rp.progress = progressbar.NewOptions64(total, progressbar.OptionSetWriter(os.Stderr),
			progressbar.OptionShowBytes(true), progressbar.OptionSetDescription("replay"),
			progressbar.OptionClearOnFinish(), progressbar.OptionThrottle(200*time.Millisecond))
	}
	for _, id := range files {
		if ctx.Err() != nil {
			break
		}
		rp.file(id.Path)
	}
	if rp.progress != nil {
		_ = rp.progress.Finish()
	}
	return nil
}

// watch processes what is there, then every new complete file, until ctx ends.
func (rp *replayer) watch(ctx context.Context, paths []string) error {
	statePath := rp.cfg.StateFile
	if statePath == "" {
		statePath = filepath.Join(rp.cfg.Out, "replay-state.jsonl")
	}
	state, err := capture.OpenState(statePath)
	if err != nil {
		return err
	}
	defer state.Close()
	fmt.Fprintf(rp.log, "flowsensor: watching %v for new captures (state in %s)\n", paths, statePath)
	idleSince := time.Now()
	for ctx.Err() == nil {
		found := false
		for _, p := range paths {
			ids, err := expand(p)
			if err != nil {
				fmt.Fprintf(rp.log, "flowsensor: %v\n", err)
				continue
			}
			for _, id := range ids {
				if ctx.Err() != nil || state.Done(id) {
					continue
				}
				if time.Since(time.Unix(0, id.ModTime)) < rp.cfg.WatchPoll {
					// Changed within the last poll: a writer that does not use a
					// hidden name may still be at it. Take it next time.
					continue
				}
				found = true
				packets, ferr := rp.file(id.Path)
				entry := capture.StateEntry{FileID: id, Finished: time.Now().UTC(), Packets: packets}
				if ferr != nil {
					entry.Error = ferr.Error()
				}
				if err := state.Finish(entry); err != nil {
					return err
				}
			}
		}
		if found {
			idleSince = time.Now()
			continue // look again at once: files may have arrived while busy
		}
		// No new file: let capture time run on with the wall clock, so flows
		// of a quiet capture are still written when they time out.
		rp.advance(rp.maxTs + int64(time.Since(idleSince)))
		rp.w.Flush()
		if err := rp.out.tick(ctx); err != nil && ctx.Err() == nil {
			fmt.Fprintf(rp.log, "flowsensor: %v (rows stay buffered and are retried)\n", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(rp.cfg.WatchPoll):
		}
	}
	return nil
}

// expand lists a path: the file itself, or the complete files in a folder.
func expand(path string) ([]capture.FileID, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		id, err := capture.Identify(path)
		if err != nil {
			return nil, err
		}
		return []capture.FileID{id}, nil
	}
	return capture.ListDir(path)
}

// file replays one capture file. Errors are reported on stderr and counted;
// the packets before a damaged part still count.
func (rp *replayer) file(path string) (int64, error) {
	rp.files++
	err := rp.read(path)
	if err != nil {
		rp.failed++
		if rp.progress != nil {
			_ = rp.progress.Clear()
		}
		fmt.Fprintf(rp.log, "flowsensor: %v\n", err)
	}
	rp.w.Flush()
	return rp.lastPackets, err
}

func (rp *replayer) read(path string) error {
	rp.lastPackets = 0
	r, err := capture.Open(path)
	if err != nil {
		return err
	}
	defer r.Close()
	unsupported := map[capture.LinkType]int64{}
	defer func() { rp.reportUnsupported(path, unsupported) }()
	ifindex := map[int]uint32{}
	var pkt capture.Packet
	var rec bpf.Record
	var progressed int64
	for n := 0; ; n++ {
		if err := r.Next(&pkt); err != nil {
			if rp.progress != nil {
				_ = rp.progress.Add64(r.BytesRead() - progressed)
			}
			if err == io.EOF && rp.lastPackets > 0 && rp.lastPackets == sum(maps.Values(unsupported)) {
				return fmt.Errorf("%s: none of its %d packets has a link type flowsensor reads", path, rp.lastPackets)
			}
			if err == io.EOF {
				return nil
			}
			return err
		}
		rp.lastPackets++
		out, ok := capture.Decode(&pkt, &rec)
		if !ok {
			rp.unsupported++
			unsupported[pkt.LinkType]++
			continue
		}
		rp.kernel.Count(out, &rec)
		rp.bytes += int64(pkt.WireLen)
		if out != bpf.CounterEmitted {
			continue
		}
		id, ok := ifindex[pkt.Interface]
		if !ok {
			id = rp.ifcs.id(rp.interfaceName(r, path, pkt.Interface))
			ifindex[pkt.Interface] = id
		}
		rec.Ifindex = id
		rp.w.Add(&rec)
		if ts := int64(rec.Ts); ts > rp.maxTs {
			rp.maxTs = ts
			if ts-rp.lastTick >= tickEvery {
				rp.advance(ts)
			}
		}
		if n&0xfff == 0 {
			rp.housekeeping(r, &progressed)
		}
	}
}

// reportUnsupported says which packets of a file were skipped for their link
// type, once per file and type.
func (rp *replayer) reportUnsupported(path string, skipped map[capture.LinkType]int64) {
	for _, lt := range slices.Sorted(maps.Keys(skipped)) {
		if rp.progress != nil {
			_ = rp.progress.Clear()
		}
		unit := "packets"
		if skipped[lt] == 1 {
			unit = "packet"
		}
		fmt.Fprintf(rp.log, "flowsensor: %s: %d %s of link type %d skipped: flowsensor reads Ethernet, Linux SLL and SLL2, NULL/LOOP, raw IP, PPP and Cisco HDLC (tcpdump.org/linktypes.html)\n",
			path, skipped[lt], unit, lt)
	}
}

func sum(values iter.Seq[int64]) int64 {
	var n int64
	for v := range values {
		n += v
	}
	return n
}

// advance runs expiry at packet time ts, after the records already taken.
func (rp *replayer) advance(ts int64) {
	rp.w.Flush()
	rp.agg.Tick(time.Unix(0, ts))
	rp.lastTick = ts
}

// housekeeping runs every few thousand packets: progress and Parquet commits.
func (rp *replayer) housekeeping(r *capture.Reader, progressed *int64) {
	if rp.progress != nil {
		_ = rp.progress.Add64(r.BytesRead() - *progressed)
		*progressed = r.BytesRead()
	}
	if time.Since(rp.lastFlush) > time.Second {
		rp.lastFlush = time.Now()
		if err := rp.out.tick(context.Background()); err != nil {
			fmt.Fprintf(rp.log, "flowsensor: %v (rows stay buffered and are retried)\n", err)
		}
	}
}

// interfaceName: the pcapng interface's name, else --interface-name, else the
// file name (with the interface number when the file has several).
func (rp *replayer) interfaceName(r *capture.Reader, path string, i int) string {
	if name := r.InterfaceName(i); name != "" {
		return name
	}
	name := rp.cfg.ReplayInterface
	if name == "" {
		name = capture.InterfaceNameFromPath(path)
	}
	if len(r.Interfaces()) > 1 {
		name = fmt.Sprintf("%s#%d", name, i)
	}
	return name
}

func (rp *replayer) summary(elapsed time.Duration) string {
	k := &rp.kernel
	as := rp.agg.Stats()
	packets := k[bpf.CounterSeen] + uint64(rp.unsupported)
	pps := float64(packets) / max(elapsed.Seconds(), 1e-9)
	return fmt.Sprintf("flowsensor: replay: %d files (%d with errors), %d packets (%.0f/s), %d in flows, %d flows reported | not flows: non-ip %d malformed %d unsupported link %d | drops: queue %d | %s",
		rp.files, rp.failed, packets, pps, as.Packets, as.Reports,
		k[bpf.CounterNonIP], malformed(k), rp.unsupported, rp.out.dropped(), rp.out.status())
}

func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }
