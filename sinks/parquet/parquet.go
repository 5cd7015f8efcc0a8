// Package parquet writes flow reports to Parquet files, partitioned by hour in
// the Hive layout (dt=…/hour=…) that query engines such as DuckDB read
// directly:
//
//	<Dir>/flows/dt=2024-05-01/hour=13/flows-20240501T131502Z-sensor1-4242-7.parquet
//
// The partition is the UTC hour of the report's Start; the name carries the
// UTC time the file was written, the host, the process ID and a sequence
// number. A file is written under a hidden temporary name
// (".flows-….parquet.tmp") and given its final name only once complete and
// synced, so a reader globbing "flows/**/*.parquet" never sees a partial
// file; an existing file is never replaced.
//
// Query the files with, for example, DuckDB:
//
//	SELECT dt, hour, sum(bytes) FROM read_parquet('<Dir>/flows/**/*.parquet',
//	    hive_partitioning = true, hive_types = {'hour': INTEGER}) GROUP BY ALL
//
// Without hive_types, DuckDB types hour as VARCHAR when the glob matches an
// hour with a leading zero ("hour=07") and as BIGINT otherwise.
package parquet

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	pq "github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress/zstd"

	"github.com/flowsensor/flowsensor/aggregator"
	"github.com/flowsensor/flowsensor/sinks"
)

const (
	// DefaultMaxRows keeps files big enough to query efficiently and small
	// enough to buffer: about 200 MB of flows in memory per partition.
	DefaultMaxRows = 1_000_000
	DefaultMaxAge  = 60 * time.Second

	// rowGroupRows is DuckDB's own row group size: a reader parallelises
	// over row groups, and the writer holds at most one group's pages.
	rowGroupRows = 122_880

	// rowsPerWrite rows are converted and handed to the Parquet writer at a
	// time: enough to amortise the call (it shreds 64 rows at a time), small
	// enough (64 KB) to stay in cache and not to fault in fresh memory.
	rowsPerWrite = 256
)

// codec is shared by every file: it pools its zstd encoders.
var codec = &zstd.Codec{Level: zstd.SpeedDefault}

// Config configures a Sink. Zero fields take the defaults.
type Config struct {
	Dir     string           // output root; files go under Dir/flows/
	MaxRows int              // rows per file at most, default DefaultMaxRows
	MaxAge  time.Duration    // a buffered row is written within MaxAge (given calls to Write or Flush), default DefaultMaxAge
	Now     func() time.Time // clock for MaxAge and file names, default time.Now
	Host    string           // host name in file names, default os.Hostname()
}

// Stats are the sink's counters.
type Stats struct {
	RowsWritten  uint64 // rows in committed files
	FilesWritten uint64
	WriteErrors  uint64 // failed file commits; their rows stayed buffered
	RowsBuffered int    // rows waiting for their partition's file
	RowsDropped  uint64 // rows still buffered when Close gave up
}

// Sink buffers flow reports per hour partition and writes each partition to a
// file when it reaches MaxRows, when its oldest row is MaxAge old, and on
// Close. It is safe for concurrent use.
type Sink struct {
	cfg  Config
	root string // Dir/flows
	host string
	pid  int

	mu     sync.Mutex
	parts  map[int64]*partition // by the partition hour's Unix time
	seq    uint64
	closed bool
	stats  Stats
	rows   []Row // conversion buffer, reused: rowsPerWrite rows
}

type partition struct {
	hour  time.Time // UTC, start of the hour
	since time.Time // clock time at which the oldest buffered flow arrived
	buf   buffer
}

var _ sinks.Sink = (*Sink)(nil)

// New returns a Sink writing under cfg.Dir. It creates Dir/flows and checks
// that a file can be created there, so that a bad directory fails at start-up
// rather than at the first file, a minute later.
func New(cfg Config) (*Sink, error) {
	if cfg.Dir == "" {
		return nil, errors.New("parquet output dir not set")
	}
	if cfg.MaxRows <= 0 {
		cfg.MaxRows = DefaultMaxRows
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Host == "" {
		cfg.Host, _ = os.Hostname()
	}
	s := &Sink{
		cfg:   cfg,
		root:  filepath.Join(cfg.Dir, "flows"),
		host:  sanitizeHost(cfg.Host),
		pid:   os.Getpid(),
		parts: make(map[int64]*partition),
		rows:  make([]Row, rowsPerWrite),
	}
	if err := s.probe(); err != nil {
		return nil, fmt.Errorf("parquet output dir %s: %w", cfg.Dir, err)
	}
	return s, nil
}

func (s *Sink) probe() error {
	if err := os.MkdirAll(s.root, 0o755); err != nil {
		return err
	}
	name := filepath.Join(s.root, fmt.Sprintf(".probe-%d.tmp", s.pid))
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	return errors.Join(f.Close(), os.Remove(name))
}

// Write first writes the files that are due (see Flush), then buffers flows.
// If a due file cannot be written it returns that error and buffers none of
// flows, so a retried batch is never stored twice and a broken disk pushes
// back on the caller instead of growing the buffer. Rows that became due with
// this batch are written by the next Write, Flush or Close.
func (s *Sink) Write(ctx context.Context, flows []aggregator.Flow) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return sinks.ErrClosed
	}
	now := s.cfg.Now()
	if err := s.commit(ctx, now, false); err != nil {
		return err
	}
	for len(flows) > 0 {
		// Flows arrive roughly in time order: append runs of one hour.
		hour := flows[0].Start.UTC().Truncate(time.Hour)
		end := hour.Add(time.Hour)
		n := 1
		for n < len(flows) && !flows[n].Start.Before(hour) && flows[n].Start.Before(end) {
			n++
		}
		p := s.parts[hour.Unix()]
		if p == nil {
			p = &partition{hour: hour, since: now}
			s.parts[hour.Unix()] = p
		}
		p.buf.append(flows[:n])
		s.stats.RowsBuffered += n
		flows = flows[n:]
	}
	return nil
}

// Flush writes every partition that holds MaxRows rows or whose oldest row is
// MaxAge old. Call it periodically (say every MaxAge/4) so that a quiet
// sensor still writes its files. Failed files keep their rows buffered and
// are retried by the next Write or Flush; the error names each file.
func (s *Sink) Flush(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return sinks.ErrClosed
	}
	return s.commit(ctx, s.cfg.Now(), false)
}

// Close writes every buffered row, stopping before the next file once ctx
// ends. Rows it could not write are counted in RowsDropped and reported in
// the error.
func (s *Sink) Close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return sinks.ErrClosed
	}
	s.closed = true
	err := s.commit(ctx, s.cfg.Now(), true)
	if n := s.stats.RowsBuffered; n > 0 {
		s.stats.RowsDropped += uint64(n)
		s.stats.RowsBuffered = 0
		err = errors.Join(err, fmt.Errorf("parquet: %d rows not written", n))
	}
	s.parts = nil
	return err
}

// Stats returns the current counters.
func (s *Sink) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// commit writes the partitions that are due, or all of them, oldest hour
// first, in files of at most MaxRows rows. A partition whose file fails is
// left for the next call; the others still get written.
func (s *Sink) commit(ctx context.Context, now time.Time, all bool) error {
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(s.parts)) {
		p := s.parts[k]
		for s.due(p, now, all) {
			if err := ctx.Err(); err != nil {
				return errors.Join(append(errs, err)...)
			}
			if err := s.commitFile(p, min(p.buf.len(), s.cfg.MaxRows), now); err != nil {
				errs = append(errs, err)
				break
			}
		}
		if p.buf.len() == 0 {
			delete(s.parts, k)
		}
	}
	return errors.Join(errs...)
}

func (s *Sink) due(p *partition, now time.Time, all bool) bool {
	switch {
	case p.buf.len() == 0:
		return false
	case all, p.buf.len() >= s.cfg.MaxRows:
		return true
	}
	return now.Sub(p.since) >= s.cfg.MaxAge
}

// commitFile writes the first n rows of p to a new file and, once the file
// is in place, drops them from the buffer. A remainder keeps p.since: its
// rows are no older than that, so they are written no later than MaxAge.
func (s *Sink) commitFile(p *partition, n int, now time.Time) error {
	s.seq++
	dir := filepath.Join(s.root, p.hour.Format("dt=2006-01-02"), p.hour.Format("hour=15"))
	name := fmt.Sprintf("flows-%s-%s-%d-%d.parquet", now.UTC().Format("20060102T150405Z"), s.host, s.pid, s.seq)
	path := filepath.Join(dir, name)

	placed, err := s.writeFile(dir, name, &p.buf, n)
	if placed {
		s.stats.FilesWritten++
		s.stats.RowsWritten += uint64(n)
		s.stats.RowsBuffered -= n
		p.buf.drop(n)
	}
	if err != nil {
		s.stats.WriteErrors++
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// writeFile writes the first n flows of buf to dir/name through a hidden
// temporary file, and reports whether the file got its final name. Once it
// has, the rows count as written even if a later step fails (writing them
// again would duplicate them), but that error is still returned: the new
// name may not survive a crash.
func (s *Sink) writeFile(dir, name string, buf *buffer, n int) (placed bool, err error) {
	if err := s.mkdirs(dir); err != nil {
		return false, err
	}
	tmp := filepath.Join(dir, "."+name+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return false, err
	}
	err = s.encode(f, buf, n)
	if err == nil {
		err = f.Sync()
	}
	err = cmp.Or(err, f.Close())
	if err == nil {
		placed, err = publish(tmp, filepath.Join(dir, name))
	}
	if !placed {
		_ = os.Remove(tmp) // best effort: the write error is the one to report
		return false, err
	}
	return true, cmp.Or(err, syncDir(dir))
}

// publish gives the complete file tmp its final name without replacing an
// existing file: another sensor with the same host name and PID (two
// containers sharing a host network) could otherwise overwrite a file
// silently. A hard link fails if the name exists; where links are not
// supported, rename is the fallback.
func publish(tmp, final string) (placed bool, err error) {
	err = os.Link(tmp, final)
	switch {
	case err == nil:
		return true, os.Remove(tmp)
	case errors.Is(err, fs.ErrExist):
		return false, err
	}
	if err := os.Rename(tmp, final); err != nil {
		return false, err
	}
	return true, nil
}

// encode writes the first n flows of buf as one Parquet file, footer
// included.
func (s *Sink) encode(w io.Writer, buf *buffer, n int) error {
	pw := pq.NewGenericWriter[Row](w,
		pq.Compression(codec),
		pq.MaxRowsPerRowGroup(rowGroupRows),
	)
	err := buf.visit(n, func(flows []aggregator.Flow) error {
		for len(flows) > 0 {
			rows := s.rows[:min(len(flows), len(s.rows))]
			for i := range rows {
				rows[i] = RowFromFlow(&flows[i])
			}
			if _, err := pw.Write(rows); err != nil {
				return err
			}
			flows = flows[len(rows):]
		}
		return nil
	})
	if err != nil {
		return err
	}
	return pw.Close()
}

// mkdirs creates a partition directory and syncs the directories that got a
// new entry, so that the file synced inside it is reachable after a crash.
// It does not cache what exists: a retention job may delete old partitions.
func (s *Sink) mkdirs(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return errors.Join(syncDir(filepath.Dir(dir)), syncDir(s.root))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}

// sanitizeHost keeps file names portable and free of path separators.
func sanitizeHost(h string) string {
	h = strings.Map(func(r rune) rune {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9', r == '.', r == '-', r == '_':
			return r
		}
		return '_'
	}, h)
	return cmp.Or(h, "unknown")
}
