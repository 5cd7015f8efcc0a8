// Package loader loads the flowsensor XDP program, attaches it to network
// interfaces, pins its maps for bpftool, and reads its per-packet records.
//
// One Probe per interface: its own program instance, ring buffer and counters,
// so a busy interface does not starve another and counters are per interface.
package loader

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/flowsensor/flowsensor/bpf"
)

// XDPMode selects how the program is attached.
type XDPMode string

const (
	ModeAuto    XDPMode = "auto"    // native, falling back to generic
	ModeNative  XDPMode = "native"  // in the driver (XDP_FLAGS_DRV_MODE)
	ModeGeneric XDPMode = "generic" // after the driver, on the skb (XDP_FLAGS_SKB_MODE)
)

// ParseXDPMode accepts auto, native (or driver) and generic (or skb).
func ParseXDPMode(s string) (XDPMode, error) {
	switch s {
	case "", "auto":
		return ModeAuto, nil
	case "native", "driver", "drv":
		return ModeNative, nil
	case "generic", "skb":
		return ModeGeneric, nil
	}
	return "", fmt.Errorf("xdp mode %q: want auto, native or generic", s)
}

// DefaultPinRoot is where maps are pinned, one directory per interface.
const DefaultPinRoot = "/sys/fs/bpf/flowsensor"

// Options configure a Probe. The zero value is usable.
type Options struct {
	Mode XDPMode
	// RingBytes is the ring buffer size: a power of two, at least one page.
	// 0 means 16 MiB (about 200k records).
	RingBytes int
	// WakeupBytes wakes the reader each time this many bytes of records have
	// been queued (a power of two); between wakeups the reader polls every
	// PollInterval. 0 means 1 MiB; -1 wakes the reader for every record.
	WakeupBytes int
	// PollInterval bounds how long a record can sit in the ring unread.
	// 0 means 100ms.
	PollInterval time.Duration
	// ClockEvery: once a CPU sees more than ExactPerTick packets in one
	// jiffy, it reads the clock only every ClockEvery packets and the
	// packets in between share that reading. 0 means 16; 1 reads the clock
	// for every packet. ExactPerTick 0 means 64.
	ClockEvery   int
	ExactPerTick int
	// Batch is how many records a CPU gathers before writing them to the
	// ring buffer as one sample (at most MaxBatch): one reservation per batch
	// instead of per packet. 1 writes every record on its own. 0 means
	// DefaultBatch on kernels that can pin a BPF timer to a CPU (>= 6.7) and
	// 1 on older ones; more than 1 there is an error.
	Batch int
	// FlushInterval bounds how long a record waits in a partial batch: a
	// CPU-pinned timer writes it out this long after it was staged, at the
	// latest. 0 means 1ms.
	FlushInterval time.Duration
	// PinRoot is the bpffs directory to pin maps under; the BPF filesystem is
	// mounted at /sys/fs/bpf if it is not. "-" disables pinning.
	PinRoot string
}

func (o Options) withDefaults() (Options, error) {
	if o.Mode == "" {
		o.Mode = ModeAuto
	}
	if _, err := ParseXDPMode(string(o.Mode)); err != nil {
		return o, err
	}
	if o.RingBytes == 0 {
		o.RingBytes = 16 << 20
	}
	if o.RingBytes < os.Getpagesize() || o.RingBytes&(o.RingBytes-1) != 0 {
		return o, fmt.Errorf("ring buffer size %d: want a power of two of at least %d", o.RingBytes, os.Getpagesize())
	}
	switch {
	case o.WakeupBytes == 0:
		o.WakeupBytes = 1 << 20
	case o.WakeupBytes == -1:
		o.WakeupBytes = 0 // the kernel's own policy: wake when the reader caught up
	case o.WakeupBytes < bpf.RecordSize || o.WakeupBytes&(o.WakeupBytes-1) != 0:
		return o, fmt.Errorf("wakeup bytes %d: want a power of two of at least %d", o.WakeupBytes, bpf.RecordSize)
	}
	if o.PollInterval == 0 {
		o.PollInterval = 100 * time.Millisecond
	}
	if o.PollInterval < 0 {
		return o, fmt.Errorf("poll interval %v: must be positive", o.PollInterval)
	}
	if o.ClockEvery == 0 {
		o.ClockEvery = 16
	}
	if o.ExactPerTick == 0 {
		o.ExactPerTick = 64
	}
	if o.ClockEvery < 1 || o.ExactPerTick < 1 {
		return o, fmt.Errorf("clock every %d, exact per tick %d: must be positive", o.ClockEvery, o.ExactPerTick)
	}
	if o.Batch < 0 || o.Batch > MaxBatch {
		return o, fmt.Errorf("batch %d: want 1 to %d (0 for the default)", o.Batch, MaxBatch)
	}
	if o.FlushInterval == 0 {
		o.FlushInterval = time.Millisecond
	}
	if o.FlushInterval < time.Microsecond {
		return o, fmt.Errorf("flush interval %v: want at least 1µs", o.FlushInterval)
	}
	if o.PinRoot == "" {
		o.PinRoot = DefaultPinRoot
	}
	return o, nil
}

// MaxBatch is the most records one ring sample holds (FS_BATCH_MAX).
const MaxBatch = 64

// DefaultBatch is the batch size where the kernel allows batching.
const DefaultBatch = 16

// resolveBatch picks the batch size for this kernel (after withDefaults).
func (o Options) resolveBatch() (int, error) {
	if o.Batch == 1 {
		return 1, nil
	}
	pinned, err := timerPinSupported()
	if !pinned {
		if o.Batch == 0 {
			return 1, nil
		}
		return 0, fmt.Errorf("batch %d needs a BPF timer pinned to a CPU (kernel >= 6.7): %w", o.Batch, err)
	}
	if o.Batch == 0 {
		return DefaultBatch, nil
	}
	return o.Batch, nil
}

// timerPinSupported reports whether bpf_timer_start accepts
// BPF_F_TIMER_CPU_PIN, by running bpf/timer_probe.c once. Tests replace it
// to exercise the fallback.
var timerPinSupported = sync.OnceValues(func() (bool, error) {
	if err := removeMemlock(); err != nil {
		return false, fmt.Errorf("remove memlock limit: %w", err)
	}
	var objs timerProbeObjects
	if err := loadTimerProbeObjects(&objs, nil); err != nil {
		return false, fmt.Errorf("load timer probe: %w", err)
	}
	defer objs.Close()
	ret, err := objs.FsProbeTimerPin.Run(&ebpf.RunOptions{Data: make([]byte, 14)})
	if err != nil {
		return false, fmt.Errorf("run timer probe: %w", err)
	}
	if ret != 2 { // XDP_PASS
		return false, errors.New("bpf_timer_start rejects BPF_F_TIMER_CPU_PIN")
	}
	return true, nil
})

// Probe is the XDP program attached to one interface.
type Probe struct {
	Interface string
	Ifindex   int
	Mode      XDPMode // the mode actually attached

	opts   Options
	objs   flowsensorObjects
	link   link.Link
	reader *ringbuf.Reader
	pinDir string

	// monoToWall converts bpf_ktime_get_ns() to Unix ns; refreshed while
	// reading because the wall clock is slewed by NTP.
	monoToWall  int64
	offsetTaken time.Time

	closeOnce sync.Once
	closeErr  error
	detachMu  sync.Mutex
}

var removeMemlock = sync.OnceValue(rlimit.RemoveMemlock)

// LoadSpec returns the compiled program's collection spec with the options
// applied (for tests and benchmarks that run it without attaching).
func LoadSpec(opts Options) (*ebpf.CollectionSpec, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	spec, err := loadFlowsensor()
	if err != nil {
		return nil, err
	}
	batch, err := opts.resolveBatch()
	if err != nil {
		return nil, err
	}
	spec.Maps[flowsensorMapFsEvents].MaxEntries = uint32(opts.RingBytes)
	if batch > 1 {
		// One staging slot per CPU, indexed by bpf_get_smp_processor_id().
		cpus, err := ebpf.PossibleCPU()
		if err != nil {
			return nil, err
		}
		spec.Maps[flowsensorMapFsStage].MaxEntries = uint32(cpus)
	}
	for name, v := range map[string]int{
		flowsensorVarWakeupBytes:  opts.WakeupBytes,
		flowsensorVarClockEvery:   opts.ClockEvery,
		flowsensorVarExactPerTick: opts.ExactPerTick,
		flowsensorVarBatchSize:    batch,
	} {
		if err := spec.Variables[name].Set(uint32(v)); err != nil {
			return nil, fmt.Errorf("set %s: %w", name, err)
		}
	}
	if err := spec.Variables[flowsensorVarFlushNs].Set(uint64(opts.FlushInterval.Nanoseconds())); err != nil {
		return nil, fmt.Errorf("set %s: %w", flowsensorVarFlushNs, err)
	}
	return spec, nil
}

// Objects are the loaded program and maps, not attached anywhere.
type Objects struct {
	Program  *ebpf.Program
	Events   *ebpf.Map
	Counters *ebpf.Map
	objs     flowsensorObjects
}

// Load loads the program and its maps into the kernel without attaching it.
func Load(opts Options) (*Objects, error) {
	spec, err := LoadSpec(opts)
	if err != nil {
		return nil, err
	}
	var o Objects
	if err := load(spec, &o.objs); err != nil {
		return nil, err
	}
	o.Program, o.Events, o.Counters = o.objs.FlowsensorXdp, o.objs.FsEvents, o.objs.FsCounters
	return &o, nil
}

// Close releases the program and maps.
func (o *Objects) Close() error { return o.objs.Close() }

func load(spec *ebpf.CollectionSpec, objs *flowsensorObjects) error {
	if err := removeMemlock(); err != nil {
		return fmt.Errorf("remove memlock limit: %w", err)
	}
	if err := spec.LoadAndAssign(objs, nil); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return fmt.Errorf("load xdp program: verifier rejected it: %+v", verr)
		}
		if errors.Is(err, unix.EPERM) || errors.Is(err, ebpf.ErrNotSupported) {
			return fmt.Errorf("load xdp program: %w (flowsensor needs root or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON, and a kernel >= 5.15)", err)
		}
		return fmt.Errorf("load xdp program: %w", err)
	}
	return nil
}

// Attach loads a fresh instance of the program, attaches it to the named
// interface and pins its maps. On error nothing stays attached or pinned.
func Attach(iface string, opts Options) (*Probe, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	ifindex, err := InterfaceIndex(iface)
	if err != nil {
		return nil, err
	}
	spec, err := LoadSpec(opts)
	if err != nil {
		return nil, err
	}
	p := &Probe{Interface: iface, Ifindex: ifindex, opts: opts}
	if err := load(spec, &p.objs); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			p.Close()
		}
	}()

	if p.link, p.Mode, err = attachXDP(p.objs.FlowsensorXdp, ifindex, opts.Mode); err != nil {
		return nil, fmt.Errorf("attach xdp to %s: %w", iface, err)
	}
	if p.reader, err = ringbuf.NewReader(p.objs.FsEvents); err != nil {
		return nil, fmt.Errorf("open ring buffer of %s: %w", iface, err)
	}
	if opts.PinRoot != "-" {
		p.pinDir = filepath.Join(opts.PinRoot, iface)
		if err := p.pin(); err != nil {
			return nil, err
		}
	}
	p.refreshClock()
	ok = true
	return p, nil
}

func attachXDP(prog *ebpf.Program, ifindex int, mode XDPMode) (link.Link, XDPMode, error) {
	attach := func(flags link.XDPAttachFlags) (link.Link, error) {
		return link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: flags})
	}
	switch mode {
	case ModeNative:
		l, err := attach(link.XDPDriverMode)
		return l, ModeNative, err
	case ModeGeneric:
		l, err := attach(link.XDPGenericMode)
		return l, ModeGeneric, err
	}
	l, err := attach(link.XDPDriverMode)
	if err == nil {
		return l, ModeNative, nil
	}
	l, gerr := attach(link.XDPGenericMode)
	if gerr != nil {
		return nil, "", fmt.Errorf("native: %w; generic: %w", err, gerr)
	}
	return l, ModeGeneric, nil
}

func (p *Probe) pin() error {
	if err := ensureBPFFS(p.opts.PinRoot); err != nil {
		return err
	}
	if err := os.MkdirAll(p.pinDir, 0o700); err != nil {
		return fmt.Errorf("pin maps: %w", err)
	}
	for name, m := range map[string]*ebpf.Map{
		flowsensorMapFsEvents:   p.objs.FsEvents,
		flowsensorMapFsCounters: p.objs.FsCounters,
	} {
		path := filepath.Join(p.pinDir, name)
		// A pin left by a process that died holds only a stale map: replace it.
		// A live sensor on the same interface would have made attach fail already.
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove stale pin: %w", err)
		}
		if err := m.Pin(path); err != nil {
			return fmt.Errorf("pin %s: %w", path, err)
		}
	}
	return nil
}

// PinDir is the directory holding this probe's pinned maps ("" when not pinned).
func (p *Probe) PinDir() string { return p.pinDir }

// Counters sums the kernel counters over all CPUs. Records waiting in a
// partial batch (for at most FlushInterval) are not counted yet.
func (p *Probe) Counters() (bpf.Counters, error) {
	return ReadCounters(p.objs.FsCounters)
}

// ReadCounters sums a per-CPU counter map over all CPUs.
func ReadCounters(m *ebpf.Map) (bpf.Counters, error) {
	var c bpf.Counters
	var perCPU []uint64
	for i := bpf.Counter(0); i < bpf.NumCounters; i++ {
		if err := m.Lookup(uint32(i), &perCPU); err != nil {
			return c, fmt.Errorf("read counter %s: %w", i, err)
		}
		for _, v := range perCPU {
			c[i] += v
		}
	}
	return c, nil
}

func (p *Probe) refreshClock() {
	var mono, wall unix.Timespec
	// Bracket the wall clock reading with two monotonic ones and use their midpoint.
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono)
	_ = unix.ClockGettime(unix.CLOCK_REALTIME, &wall)
	var mono2 unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono2)
	m := (mono.Nano() + mono2.Nano()) / 2
	p.monoToWall = wall.Nano() - m
	p.offsetTaken = time.Now()
}

// Run reads records until ctx is cancelled or the probe is closed. each gets
// every record with Ts already converted to Unix nanoseconds; the record is
// reused after each returns. idle is called whenever the ring is empty, so
// the caller can flush partial batches. When ctx is cancelled, Run detaches
// the program, waits for the records still staged in partial batches to reach
// the ring (at most FlushInterval), drains the ring, and returns nil.
func (p *Probe) Run(ctx context.Context, each func(*bpf.Record), idle func()) error {
	var raw ringbuf.Record
	var rec bpf.Record
	draining := false
	var flushErr error
	p.reader.SetDeadline(time.Now().Add(p.opts.PollInterval))
	for {
		err := p.reader.ReadInto(&raw)
		switch {
		case err == nil:
			// A sample holds one record, or a batch of them.
			sample := raw.RawSample
			if len(sample) == 0 || len(sample)%bpf.RecordSize != 0 {
				return fmt.Errorf("ring buffer of %s: sample of %d bytes is not a whole number of %d-byte records", p.Interface, len(sample), bpf.RecordSize)
			}
			for ; len(sample) > 0; sample = sample[bpf.RecordSize:] {
				if err := bpf.DecodeRecord(sample, &rec); err != nil {
					return fmt.Errorf("ring buffer of %s: %w", p.Interface, err)
				}
				rec.Ts = uint64(int64(rec.Ts) + p.monoToWall)
				each(&rec)
			}
			continue
		case errors.Is(err, os.ErrDeadlineExceeded):
			// The ring is empty.
		case errors.Is(err, ringbuf.ErrClosed), errors.Is(err, os.ErrClosed):
			return nil
		default:
			return fmt.Errorf("read ring buffer of %s: %w", p.Interface, err)
		}
		if idle != nil {
			idle()
		}
		if draining {
			return flushErr
		}
		if ctx.Err() != nil {
			// Stop new records, let the timers write the partial batches,
			// then read what the kernel queued (also if that wait failed).
			if err := p.Detach(); err != nil {
				return err
			}
			flushErr = p.waitFlushed()
			draining = true
			p.reader.SetDeadline(time.Now())
			continue
		}
		if time.Since(p.offsetTaken) > 10*time.Second {
			p.refreshClock()
		}
		p.reader.SetDeadline(time.Now().Add(p.opts.PollInterval))
	}
}

// waitFlushed waits, after Detach, until every frame the program saw has
// its outcome counted: a staged record is counted (emitted or ringbuf_full)
// only when its batch is written, at most FlushInterval after it was staged.
// The condition must hold twice, a poll apart, so an invocation still in
// flight on another CPU when the link closed is waited for too.
func (p *Probe) waitFlushed() error {
	step := min(max(p.opts.FlushInterval/2, 100*time.Microsecond), 10*time.Millisecond)
	deadline := time.Now().Add(10*p.opts.FlushInterval + time.Second)
	settled := 0
	for {
		staged, err := p.staged()
		if err != nil {
			return err
		}
		if staged == 0 {
			if settled++; settled == 2 {
				return nil
			}
		} else {
			settled = 0
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %d records still staged %v after detach", p.Interface, staged, 10*p.opts.FlushInterval+time.Second)
		}
		time.Sleep(step)
	}
}

// staged counts the records waiting in partial batches, over all CPUs.
func (p *Probe) staged() (uint64, error) {
	n, err := stagedRecords(p.objs.FsStage)
	if err != nil {
		return 0, fmt.Errorf("read staged records of %s: %w", p.Interface, err)
	}
	return n, nil
}

// stagedRecords sums the per-CPU batch fill levels of an fs_stage map.
func stagedRecords(m *ebpf.Map) (uint64, error) {
	var n uint64
	var st flowsensorFsStage
	for cpu := uint32(0); cpu < m.MaxEntries(); cpu++ {
		if err := m.Lookup(cpu, &st); err != nil {
			return 0, err
		}
		n += uint64(st.N)
	}
	return n, nil
}

// Detach removes the program from the interface; the maps stay readable.
func (p *Probe) Detach() error {
	p.detachMu.Lock()
	defer p.detachMu.Unlock()
	if p.link == nil {
		return nil
	}
	err := p.link.Close()
	p.link = nil
	if err != nil {
		return fmt.Errorf("detach xdp from %s: %w", p.Interface, err)
	}
	return nil
}

// Close detaches the program, closes the ring buffer (interrupting Run),
// removes the pins and frees the program and maps. It is safe to call more
// than once.
func (p *Probe) Close() error {
	p.closeOnce.Do(func() {
		errs := []error{p.Detach()}
		if p.reader != nil {
			errs = append(errs, p.reader.Close())
		}
		if p.pinDir != "" {
			errs = append(errs, p.objs.FsEvents.Unpin(), p.objs.FsCounters.Unpin())
			// Only removes the directory if nothing else is pinned there.
			if err := os.Remove(p.pinDir); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove pin dir: %w", err))
			}
			_ = os.Remove(p.opts.PinRoot) // likewise: only when empty
		}
		errs = append(errs, p.objs.Close())
		p.closeErr = errors.Join(errs...)
	})
	return p.closeErr
}
