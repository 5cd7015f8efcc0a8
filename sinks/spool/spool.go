// Package spool is a durable first-in first-out queue of byte records on
// disk, for sinks that must keep what they cannot deliver yet.
//
// Records are appended to segment files (<seq>.seg, 16 hex digits), each
// record framed as
//
//	uint32 little-endian payload length | uint32 CRC-32C of the payload | payload
//
// after an 8-byte magic string at the start of the segment. Append writes
// and fsyncs before it returns, so an appended record survives a crash of
// the process or of the machine. Read returns records in append order, with
// a Mark after the last one; several Reads may be outstanding. Commit(mark)
// declares everything before the mark done, deletes the segments that are
// wholly done and records the position in a small "head" file. The head file
// is written without fsync: after a crash it may lag, and the records after
// it are read again (at-least-once delivery; consumers deduplicate).
//
// Open checks every record. A record that is cut short or fails its checksum
// ends its segment: the good records before it are kept, the bytes from it
// on are moved to <seg>.corrupt-<offset> for inspection, and the damage is
// reported (Corruptions, and one log line naming the file and the offset).
// Later segments are unaffected.
//
// One process at a time: Open takes an exclusive flock on <dir>/lock.
package spool

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

const (
	magic      = "FSSPOOL1"
	headerLen  = 8 // length + checksum
	headLen    = 20
	segSuffix  = ".seg"
	headName   = "head"
	lockName   = "lock"
	corruptTag = ".corrupt-"

	// MaxRecord is the largest payload Append accepts.
	MaxRecord = 64 << 20

	DefaultMaxBytes     = 1 << 30
	DefaultSegmentBytes = 64 << 20
)

var (
	// ErrFull is returned by Append when a record would take the pending
	// bytes over Options.MaxBytes.
	ErrFull = errors.New("spool full")
	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("spool closed")

	castagnoli = crc32.MakeTable(crc32.Castagnoli)
)

// Options configure a Spool. Zero fields take the defaults.
type Options struct {
	// MaxBytes bounds the pending (appended, not committed) bytes, record
	// headers included. Default DefaultMaxBytes.
	MaxBytes int64
	// SegmentBytes is the size after which a segment is closed and a new one
	// started; it bounds how much is read again after a crash. Default
	// DefaultSegmentBytes, at most MaxBytes/4.
	SegmentBytes int64
	Logger       *slog.Logger
}

// Stats describe the spool's contents.
type Stats struct {
	Records      int64 // pending records
	Bytes        int64 // pending bytes, record headers included
	Segments     int
	CorruptBytes int64 // bytes set aside as corrupt since Open, including at Open
}

// Corruption is damage found in a segment. It is an error.
type Corruption struct {
	Path       string // segment file
	Offset     int64  // where the first bad record starts
	Bytes      int64  // bytes set aside, from Offset to the end of the segment
	Reason     string
	Quarantine string // file now holding those bytes ("" if they could not be kept)
}

func (c *Corruption) Error() string {
	return fmt.Sprintf("spool segment %s: offset %d: %s; %d bytes from there set aside in %s",
		c.Path, c.Offset, c.Reason, c.Bytes, c.Quarantine)
}

type segment struct {
	seq     uint64
	path    string
	size    int64 // bytes of whole, checked records, magic included
	records int64
}

// Spool is safe for concurrent use.
type Spool struct {
	dir  string
	opt  Options
	log  *slog.Logger
	lock *os.File

	mu      sync.Mutex
	closed  bool
	segs    []*segment // oldest first; the last one may be open for appending
	w       *os.File   // the last segment, when open for appending
	wbuf    []byte
	nextSeq uint64
	head    *os.File

	// Committed position: segs[0] at headOff. Read position: segs[rseg] at
	// roff, the rrec-th record of that segment.
	headOff    int64
	rseg       int
	roff       int64
	rrec       int64
	rf         *os.File
	rr         *bufio.Reader
	readRecs   int64 // records and bytes read since Open
	readBytes  int64
	doneRecs   int64 // ... and committed
	doneBytes  int64
	records    int64 // pending
	bytes      int64 // pending
	corrupt    int64
	corruption []*Corruption
}

// Open opens or creates the spool in dir, checks every record, and positions
// reading at the first record not yet committed.
func Open(dir string, opt Options) (*Spool, error) {
	if opt.MaxBytes <= 0 {
		opt.MaxBytes = DefaultMaxBytes
	}
	if opt.SegmentBytes <= 0 {
		opt.SegmentBytes = DefaultSegmentBytes
	}
	opt.SegmentBytes = max(min(opt.SegmentBytes, opt.MaxBytes/4), 4096)
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("spool %s is in use by another process", dir)
		}
		return nil, fmt.Errorf("spool %s: lock: %w", dir, err)
	}
	s := &Spool{dir: dir, opt: opt, log: opt.Logger, lock: lock, nextSeq: 1}
	if err := s.load(); err != nil {
		s.closeFiles()
		return nil, err
	}
	return s, nil
}

// load finds, checks and positions the segments.
func (s *Spool) load() error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		seq, ok := parseSegName(name)
		if !ok || !e.Type().IsRegular() {
			continue
		}
		s.segs = append(s.segs, &segment{seq: seq, path: filepath.Join(s.dir, name)})
	}
	slices.SortFunc(s.segs, func(a, b *segment) int { return cmpUint(a.seq, b.seq) })
	if n := len(s.segs); n > 0 {
		s.nextSeq = s.segs[n-1].seq + 1
	}

	headSeq, headOff, headOK := s.readHead()
	kept := s.segs[:0]
	for _, seg := range s.segs {
		if headOK && seg.seq < headSeq {
			// Committed before a crash that came before its deletion.
			if err := os.Remove(seg.path); err != nil {
				return fmt.Errorf("spool: %w", err)
			}
			continue
		}
		boundary := int64(-1)
		if headOK && seg.seq == headSeq {
			boundary = headOff
		}
		consumed, consumedRecs, err := s.check(seg, boundary)
		if err != nil {
			return err
		}
		if seg.records == 0 {
			if err := os.Remove(seg.path); err != nil {
				return fmt.Errorf("spool: %w", err)
			}
			continue
		}
		if len(kept) == 0 && consumed > 0 {
			s.headOff = consumed
			s.roff = consumed
			s.rrec = consumedRecs
		}
		s.records += seg.records
		s.bytes += seg.size - int64(len(magic))
		kept = append(kept, seg)
	}
	s.segs = kept
	if s.headOff == 0 {
		s.headOff, s.roff, s.rrec = int64(len(magic)), int64(len(magic)), 0
	}
	s.records -= s.rrec
	s.bytes -= s.headOff - int64(len(magic))
	if err := s.syncDir(); err != nil {
		return err
	}
	head, err := os.OpenFile(filepath.Join(s.dir, headName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	s.head = head
	return s.writeHead()
}

// check reads every record of seg, sets its size and record count, and sets
// aside whatever follows the first bad record. If boundary is a record
// boundary (or the end), it returns it and the number of records before it.
func (s *Spool) check(seg *segment, boundary int64) (int64, int64, error) {
	f, err := os.OpenFile(seg.path, os.O_RDWR, 0)
	if err != nil {
		return 0, 0, fmt.Errorf("spool: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, 0, fmt.Errorf("spool: %w", err)
	}
	total := st.Size()
	r := bufio.NewReaderSize(f, 1<<16)
	var atBoundary, recsBefore int64
	good, reason := int64(0), ""
	var buf []byte
	var m [len(magic)]byte
	if _, err := io.ReadFull(r, m[:]); err != nil || string(m[:]) != magic {
		reason = "no segment header"
	} else {
		good = int64(len(magic))
		for {
			if good == boundary {
				atBoundary, recsBefore = good, seg.records
			}
			if good == total {
				break
			}
			n, err := readRecord(r, total-good, &buf)
			if err != nil {
				reason = err.Error()
				break
			}
			good += n
			seg.records++
		}
	}
	seg.size = good
	if reason != "" {
		if good <= int64(len(magic)) {
			seg.records = 0
		}
		c := s.quarantine(f, seg, good, total, reason)
		s.log.Error("spool: corrupt segment", "file", c.Path, "offset", c.Offset, "bytes", c.Bytes,
			"reason", c.Reason, "kept_in", c.Quarantine, "records_kept", seg.records)
	}
	return atBoundary, recsBefore, nil
}

// readRecord reads one framed record of at most limit bytes from r into
// *buf (reused when large enough) and returns the frame length.
func readRecord(r *bufio.Reader, limit int64, buf *[]byte) (int64, error) {
	var h [headerLen]byte
	if limit < headerLen {
		return 0, fmt.Errorf("record header cut short (%d bytes)", limit)
	}
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, fmt.Errorf("read record header: %w", err)
	}
	n := int64(binary.LittleEndian.Uint32(h[0:4]))
	sum := binary.LittleEndian.Uint32(h[4:8])
	if n > MaxRecord {
		return 0, fmt.Errorf("record length %d exceeds %d", n, MaxRecord)
	}
	if headerLen+n > limit {
		return 0, fmt.Errorf("record of %d bytes cut short at %d", n, limit-headerLen)
	}
	p := slices.Grow((*buf)[:0], int(n))[:n]
	*buf = p
	if _, err := io.ReadFull(r, p); err != nil {
		return 0, fmt.Errorf("read record: %w", err)
	}
	if crc32.Checksum(p, castagnoli) != sum {
		return 0, errors.New("checksum mismatch")
	}
	return headerLen + n, nil
}

// quarantine copies bytes [from, to) of seg to a side file, truncates seg to
// from and records the corruption.
func (s *Spool) quarantine(f *os.File, seg *segment, from, to int64, reason string) *Corruption {
	c := &Corruption{Path: seg.path, Offset: from, Bytes: to - from, Reason: reason}
	side := seg.path + corruptTag + strconv.FormatInt(from, 10)
	if out, err := os.OpenFile(side, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err == nil {
		_, cerr := io.Copy(out, io.NewSectionReader(f, from, to-from))
		if err := errors.Join(cerr, out.Sync(), out.Close()); err == nil {
			c.Quarantine = side
		}
	}
	if err := f.Truncate(from); err == nil {
		_ = f.Sync()
	}
	s.corrupt += c.Bytes
	s.corruption = append(s.corruption, c)
	return c
}

// Append writes recs at the end of the spool and fsyncs them. It returns how
// many records, from the first, are now in the spool: fewer than len(recs)
// together with ErrFull when MaxBytes is reached, or with the write error.
func (s *Spool) Append(recs ...[]byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrClosed
	}
	done := 0
	for done < len(recs) {
		seg, err := s.active()
		if err != nil {
			return done, err
		}
		// Frame as many records as fit into this segment and the limit.
		s.wbuf = s.wbuf[:0]
		n, size, full := 0, int64(0), false
		for _, rec := range recs[done:] {
			if len(rec) > MaxRecord {
				if n == 0 {
					return done, fmt.Errorf("spool: record of %d bytes exceeds %d", len(rec), MaxRecord)
				}
				break
			}
			frame := int64(headerLen + len(rec))
			if s.bytes+size+frame > s.opt.MaxBytes {
				full = true
				break
			}
			if (n > 0 || seg.records > 0) && seg.size+size+frame > s.opt.SegmentBytes {
				break // the next segment takes it
			}
			var h [headerLen]byte
			binary.LittleEndian.PutUint32(h[0:4], uint32(len(rec)))
			binary.LittleEndian.PutUint32(h[4:8], crc32.Checksum(rec, castagnoli))
			s.wbuf = append(append(s.wbuf, h[:]...), rec...)
			n++
			size += frame
		}
		if n > 0 {
			if err := s.write(seg, s.wbuf); err != nil {
				return done, err
			}
			seg.size += size
			seg.records += int64(n)
			s.bytes += size
			s.records += int64(n)
			done += n
		}
		if full {
			return done, ErrFull
		}
		if done < len(recs) && s.w != nil {
			// The segment is full: start the next one.
			if err := s.w.Close(); err != nil {
				return done, fmt.Errorf("spool: %w", err)
			}
			s.w = nil
		}
	}
	return done, nil
}

// write appends b to the open segment and fsyncs it. On failure it cuts the
// segment back to its last good size and closes it for appending, so a
// half-written record is never left behind.
func (s *Spool) write(seg *segment, b []byte) error {
	_, err := s.w.Write(b)
	if err == nil {
		err = s.w.Sync()
	}
	if err != nil {
		_ = s.w.Truncate(seg.size)
		_ = s.w.Close()
		s.w = nil
		return fmt.Errorf("spool: write %s: %w", seg.path, err)
	}
	return nil
}

// active returns the segment open for appending, starting one if needed.
func (s *Spool) active() (*segment, error) {
	if s.w != nil {
		return s.segs[len(s.segs)-1], nil
	}
	seg := &segment{seq: s.nextSeq, path: filepath.Join(s.dir, segName(s.nextSeq)), size: int64(len(magic))}
	f, err := os.OpenFile(seg.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	if _, err := f.Write([]byte(magic)); err != nil {
		f.Close()
		os.Remove(seg.path)
		return nil, fmt.Errorf("spool: %w", err)
	}
	// The records' fsync covers the file; the directory entry needs its own.
	if err := s.syncDir(); err != nil {
		f.Close()
		os.Remove(seg.path)
		return nil, err
	}
	s.nextSeq++
	s.w = f
	if len(s.segs) == 0 {
		s.headOff, s.roff, s.rseg, s.rrec = seg.size, seg.size, 0, 0
	}
	s.segs = append(s.segs, seg)
	return seg, nil
}

// Mark is the position after the records of a Read.
type Mark struct {
	seq         uint64
	off         int64
	recs, bytes int64 // read since Open, up to here
}

// Read returns the next records after those already read, at most maxRecs
// of them and, past the first, at most maxBytes of payload, and the Mark
// after them. It returns no records when it has read everything appended so
// far. The records stay in the spool until a Commit at or after the mark.
func (s *Spool) Read(maxRecs int, maxBytes int) ([][]byte, Mark, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, Mark{}, ErrClosed
	}
	recs, err := s.read(maxRecs, maxBytes)
	var m Mark
	if s.rseg < len(s.segs) {
		m.seq = s.segs[s.rseg].seq
	}
	m.off, m.recs, m.bytes = s.roff, s.readRecs, s.readBytes
	return recs, m, err
}

func (s *Spool) read(maxRecs int, maxBytes int) ([][]byte, error) {
	var recs [][]byte
	size := 0
	for len(recs) < maxRecs && (len(recs) == 0 || size < maxBytes) {
		if s.rseg >= len(s.segs) {
			break
		}
		seg := s.segs[s.rseg]
		if s.roff >= seg.size {
			if s.rseg == len(s.segs)-1 {
				break // everything appended has been read
			}
			s.closeReader()
			s.rseg++
			s.roff, s.rrec = int64(len(magic)), 0
			continue
		}
		if s.rf == nil {
			f, err := os.Open(seg.path)
			if err != nil {
				return recs, fmt.Errorf("spool: %w", err)
			}
			if _, err := f.Seek(s.roff, io.SeekStart); err != nil {
				f.Close()
				return recs, fmt.Errorf("spool: %w", err)
			}
			s.rf, s.rr = f, bufio.NewReaderSize(f, 1<<16)
		}
		var p []byte
		n, err := readRecord(s.rr, seg.size-s.roff, &p)
		if err != nil {
			// Damaged since Open (or a bug): set the rest of the segment
			// aside rather than stop here for ever.
			s.setAsideRest(seg, err.Error())
			continue
		}
		recs = append(recs, p)
		size += len(p)
		s.roff += n
		s.rrec++
		s.readRecs++
		s.readBytes += n
	}
	return recs, nil
}

// setAsideRest handles damage found while reading: the rest of the segment
// being read is quarantined and no longer counted.
func (s *Spool) setAsideRest(seg *segment, reason string) {
	s.closeReader()
	if s.w != nil && s.rseg == len(s.segs)-1 {
		_ = s.w.Close()
		s.w = nil
	}
	lostRecs, lostBytes := seg.records-s.rrec, seg.size-s.roff
	if f, err := os.OpenFile(seg.path, os.O_RDWR, 0); err == nil {
		c := s.quarantine(f, seg, s.roff, seg.size, reason)
		f.Close()
		s.log.Error("spool: corrupt segment", "file", c.Path, "offset", c.Offset, "bytes", c.Bytes,
			"reason", c.Reason, "kept_in", c.Quarantine)
	}
	seg.size, seg.records = s.roff, s.rrec
	s.records -= lostRecs
	s.bytes -= lostBytes
}

// Commit marks every record before m as done, deletes the segments that
// are wholly done and records the new position. Marks must be committed in
// the order Read returned them; an older mark is ignored.
func (s *Spool) Commit(m Mark) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if m.recs <= s.doneRecs {
		return nil
	}
	s.records -= m.recs - s.doneRecs
	s.bytes -= m.bytes - s.doneBytes
	s.doneRecs, s.doneBytes = m.recs, m.bytes
	// Delete the segments before the mark's, and the mark's when it is done
	// to the end (the read position cannot be inside it then).
	drop := 0
	for drop < len(s.segs) && s.segs[drop].seq < m.seq {
		drop++
	}
	s.headOff = m.off
	if drop < len(s.segs) && s.segs[drop].seq == m.seq && m.off >= s.segs[drop].size {
		drop++
		s.headOff = int64(len(magic))
	}
	if drop == len(s.segs) && s.w != nil {
		if err := s.w.Close(); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		s.w = nil
	}
	var errs []error
	for _, seg := range s.segs[:drop] {
		errs = append(errs, os.Remove(seg.path))
	}
	s.segs = slices.Delete(s.segs, 0, drop)
	if s.rseg < drop {
		// The read segment is gone, read to its end: go on with the next.
		s.closeReader()
		s.rseg, s.roff, s.rrec = 0, int64(len(magic)), 0
	} else {
		s.rseg -= drop
	}
	errs = append(errs, s.writeHead())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("spool: commit: %w", err)
	}
	return nil
}

// Stats returns the current counts.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{Records: s.records, Bytes: s.bytes, Segments: len(s.segs), CorruptBytes: s.corrupt}
}

// Corruptions returns the damage found since Open, oldest first.
func (s *Spool) Corruptions() []*Corruption {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.corruption)
}

// Dir returns the spool's directory.
func (s *Spool) Dir() string { return s.dir }

// Close syncs and closes the files and releases the directory lock. Records
// not committed stay for the next Open.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.closed = true
	err := s.writeHead()
	if s.head != nil {
		err = errors.Join(err, s.head.Sync())
	}
	return errors.Join(err, s.closeFiles())
}

func (s *Spool) closeFiles() error {
	var errs []error
	s.closeReader()
	if s.w != nil {
		errs = append(errs, s.w.Sync(), s.w.Close())
		s.w = nil
	}
	if s.head != nil {
		errs = append(errs, s.head.Close())
		s.head = nil
	}
	errs = append(errs, s.lock.Close()) // releases the flock
	return errors.Join(errs...)
}

func (s *Spool) closeReader() {
	if s.rf != nil {
		s.rf.Close()
		s.rf, s.rr = nil, nil
	}
}

// writeHead records the committed position: segment sequence, offset, and
// their CRC-32C. It is not fsynced: a stale head only repeats records.
func (s *Spool) writeHead() error {
	if s.head == nil {
		return nil
	}
	var b [headLen]byte
	if len(s.segs) > 0 {
		binary.LittleEndian.PutUint64(b[0:8], s.segs[0].seq)
		binary.LittleEndian.PutUint64(b[8:16], uint64(s.headOff))
	}
	binary.LittleEndian.PutUint32(b[16:20], crc32.Checksum(b[:16], castagnoli))
	_, err := s.head.WriteAt(b[:], 0)
	return err
}

func (s *Spool) readHead() (seq uint64, off int64, ok bool) {
	b, err := os.ReadFile(filepath.Join(s.dir, headName))
	if err != nil || len(b) != headLen || crc32.Checksum(b[:16], castagnoli) != binary.LittleEndian.Uint32(b[16:20]) {
		return 0, 0, false
	}
	seq = binary.LittleEndian.Uint64(b[0:8])
	return seq, int64(binary.LittleEndian.Uint64(b[8:16])), seq != 0
}

func (s *Spool) syncDir() error {
	d, err := os.Open(s.dir)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("spool: sync %s: %w", s.dir, err)
	}
	return nil
}

func segName(seq uint64) string { return fmt.Sprintf("%016x%s", seq, segSuffix) }

func parseSegName(name string) (uint64, bool) {
	hex, ok := strings.CutSuffix(name, segSuffix)
	if !ok || len(hex) != 16 {
		return 0, false
	}
	seq, err := strconv.ParseUint(hex, 16, 64)
	return seq, err == nil && seq != 0
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
