package spool

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func open(t *testing.T, dir string, opt Options) *Spool {
	t.Helper()
	if opt.Logger == nil {
		opt.Logger = quiet()
	}
	s, err := Open(dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// rec is record i: its number and a body whose length varies.
func rec(i int) []byte {
	return fmt.Appendf(nil, "record %06d %s", i, strings.Repeat("x", i%97))
}

func recs(from, to int) [][]byte {
	var out [][]byte
	for i := from; i < to; i++ {
		out = append(out, rec(i))
	}
	return out
}

// readAll reads everything in batches of n, checks it is records
// [from, to) in order, and returns the mark after the last.
func readAll(t *testing.T, s *Spool, n int, from, to int) Mark {
	t.Helper()
	next := from
	var last Mark
	for {
		got, m, err := s.Read(n, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 {
			break
		}
		last = m
		for _, r := range got {
			if !bytes.Equal(r, rec(next)) {
				t.Fatalf("read %q, want record %d", r, next)
			}
			next++
		}
	}
	if next != to {
		t.Fatalf("read records up to %d, want %d", next, to)
	}
	return last
}

func segments(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestRoundTripAcrossSegments(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{SegmentBytes: 4096, MaxBytes: 1 << 20})
	for i := 0; i < 1000; i += 100 {
		if n, err := s.Append(recs(i, i+100)...); err != nil || n != 100 {
			t.Fatalf("append: %d, %v", n, err)
		}
	}
	if st := s.Stats(); st.Records != 1000 || st.Segments < 10 {
		t.Fatalf("stats %+v, want 1000 records in many segments", st)
	}
	if err := s.Commit(readAll(t, s, 37, 0, 1000)); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Records != 0 || st.Bytes != 0 || st.Segments != 0 {
		t.Fatalf("stats after commit %+v, want empty", st)
	}
	if segs := segments(t, dir); len(segs) != 0 {
		t.Fatalf("segments left after commit: %v", segs)
	}
	// Appending after it emptied starts a new segment.
	if _, err := s.Append(rec(1000)); err != nil {
		t.Fatal(err)
	}
	readAll(t, s, 10, 1000, 1001) // not committed
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, Options{})
	defer s.Close()
	if st := s.Stats(); st.Records != 1 {
		t.Fatalf("reopened: %+v, want the one uncommitted record", st)
	}
	readAll(t, s, 10, 1000, 1001)
}

// TestResumeAtHead: a reopened spool starts after the last Commit, in the
// middle of a segment; records read but not committed come again.
func TestResumeAtHead(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{SegmentBytes: 8192})
	if _, err := s.Append(recs(0, 300)...); err != nil {
		t.Fatal(err)
	}
	got, m, _ := s.Read(120, 1<<20)
	if len(got) != 120 {
		t.Fatalf("read %d", len(got))
	}
	if err := s.Commit(m); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := s.Read(30, 1<<20); len(got) != 30 { // read, not committed
		t.Fatalf("read %d", len(got))
	}
	if st := s.Stats(); st.Records != 180 {
		t.Fatalf("stats %+v, want 180 pending", st)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, Options{SegmentBytes: 8192})
	if st := s.Stats(); st.Records != 180 {
		t.Fatalf("reopened: %+v, want 180 pending", st)
	}
	readAll(t, s, 50, 120, 300)
	s.Close()

	// Without the head file everything not deleted comes again: the
	// segment holding record 120 starts before it.
	if err := os.Remove(filepath.Join(dir, headName)); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, Options{SegmentBytes: 8192})
	defer s.Close()
	got, _, _ = s.Read(1, 1<<20)
	if len(got) != 1 || bytes.Equal(got[0], rec(120)) {
		t.Fatalf("without head: first record %q, want one before record 120", got)
	}
}

// TestOutstandingReads: several Reads before their Commits, as a consumer
// with requests in flight does; segments go as their last mark commits.
func TestOutstandingReads(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{SegmentBytes: 4096})
	defer s.Close()
	if _, err := s.Append(recs(0, 500)...); err != nil {
		t.Fatal(err)
	}
	var marks []Mark
	for range 4 {
		rs, m, err := s.Read(50, 1<<20)
		if err != nil || len(rs) != 50 {
			t.Fatalf("read %d, %v", len(rs), err)
		}
		marks = append(marks, m)
	}
	segs := s.Stats().Segments
	if err := s.Commit(marks[1]); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Records != 400 || st.Segments >= segs {
		t.Fatalf("after committing 100 of 500: %+v (had %d segments)", st, segs)
	}
	if err := s.Commit(marks[0]); err != nil { // older: ignored
		t.Fatal(err)
	}
	if err := s.Commit(marks[3]); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Records != 300 {
		t.Fatalf("after committing 200: %+v", st)
	}
	// Reading goes on after the outstanding reads, not after the commit.
	if err := s.Commit(readAll(t, s, 64, 200, 500)); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Records != 0 || st.Segments != 0 {
		t.Fatalf("after committing everything: %+v", st)
	}
	s.Close()
	s = open(t, dir, Options{})
	if st := s.Stats(); st.Records != 0 {
		t.Fatalf("reopened: %+v", st)
	}
}

func TestMaxBytes(t *testing.T) {
	dir := t.TempDir()
	frame := int64(headerLen + len(rec(0)))
	s := open(t, dir, Options{MaxBytes: 10 * frame})
	defer s.Close()
	n, err := s.Append(rec(0), rec(0), rec(0), rec(0), rec(0), rec(0), rec(0), rec(0), rec(0), rec(0), rec(0), rec(0))
	if !errors.Is(err, ErrFull) || n != 10 {
		t.Fatalf("append 12 into room for 10: %d, %v", n, err)
	}
	if st := s.Stats(); st.Bytes != 10*frame || st.Records != 10 {
		t.Fatalf("stats %+v", st)
	}
	_, m, err := s.Read(4, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(m); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Append(rec(0), rec(0), rec(0), rec(0), rec(0)); !errors.Is(err, ErrFull) || n != 4 {
		t.Fatalf("append 5 into room for 4: %d, %v", n, err)
	}
}

// corruptAt writes a spool of three segments and returns the dir, the
// segment files, and the record numbers in each.
func threeSegments(t *testing.T) (string, []string, [][]int) {
	t.Helper()
	dir := t.TempDir()
	s := open(t, dir, Options{SegmentBytes: 4096})
	i := 0
	for len(segments(t, dir)) < 4 {
		if _, err := s.Append(rec(i)); err != nil {
			t.Fatal(err)
		}
		i++
	}
	// Keep three full segments: the fourth got record i-1 only.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	segs := segments(t, dir)
	if err := os.Remove(segs[3]); err != nil {
		t.Fatal(err)
	}
	segs = segs[:3]
	// Record numbers per segment, from their contents.
	var nums [][]int
	next := 0
	for _, p := range segs {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		n := bytes.Count(b, []byte("record "))
		var seg []int
		for range n {
			seg = append(seg, next)
			next++
		}
		nums = append(nums, seg)
	}
	return dir, segs, nums
}

// offsetOf returns the offset of record k (0-based) in a segment file.
func offsetOf(t *testing.T, path string, k int) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	off := int64(len(magic))
	for range k {
		off += headerLen + int64(uint32(b[off])|uint32(b[off+1])<<8|uint32(b[off+2])<<16|uint32(b[off+3])<<24)
	}
	return off
}

func TestFlippedByte(t *testing.T) {
	dir, segs, nums := threeSegments(t)
	// Flip a byte in the payload of the fifth record of the second segment.
	off := offsetOf(t, segs[1], 4)
	flip(t, segs[1], off+headerLen+3)

	var logged bytes.Buffer
	s := open(t, dir, Options{Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	defer s.Close()
	cs := s.Corruptions()
	if len(cs) != 1 {
		t.Fatalf("corruptions %v, want one", cs)
	}
	c := cs[0]
	if c.Path != segs[1] || c.Offset != off || c.Reason != "checksum mismatch" {
		t.Errorf("corruption %+v, want %s at offset %d, checksum mismatch", c, segs[1], off)
	}
	if !strings.Contains(c.Error(), filepath.Base(segs[1])) || !strings.Contains(c.Error(), fmt.Sprintf("offset %d", off)) {
		t.Errorf("error %q names neither file nor offset", c.Error())
	}
	for _, want := range []string{"corrupt segment", segs[1], fmt.Sprintf("offset=%d", off)} {
		if !strings.Contains(logged.String(), want) {
			t.Errorf("log %q lacks %q", logged.String(), want)
		}
	}
	side, err := os.ReadFile(c.Quarantine)
	if err != nil || int64(len(side)) != c.Bytes || s.Stats().CorruptBytes != c.Bytes {
		t.Errorf("quarantine %s: %d bytes, %v; corruption says %d", c.Quarantine, len(side), err, c.Bytes)
	}
	// Everything but the second segment's records from the fifth on.
	want := slices.Concat(nums[0], nums[1][:4], nums[2])
	var got []int
	for {
		rs, _, err := s.Read(7, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) == 0 {
			break
		}
		for _, r := range rs {
			var n int
			fmt.Sscanf(string(r), "record %d", &n)
			got = append(got, n)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("records after corruption:\n got %v\nwant %v", got, want)
	}
	if st := s.Stats(); st.Records != int64(len(want)) {
		t.Errorf("stats %+v, want %d records", st, len(want))
	}
}

func TestTruncatedSegment(t *testing.T) {
	dir, segs, nums := threeSegments(t)
	// Cut the last segment in the middle of its third record, as a crash
	// during a write would.
	off := offsetOf(t, segs[2], 2)
	if err := os.Truncate(segs[2], off+headerLen+2); err != nil {
		t.Fatal(err)
	}
	s := open(t, dir, Options{})
	cs := s.Corruptions()
	if len(cs) != 1 || cs[0].Path != segs[2] || cs[0].Offset != off || !strings.Contains(cs[0].Reason, "cut short") {
		t.Fatalf("corruptions %v, want %s cut short at %d", cs, segs[2], off)
	}
	want := len(nums[0]) + len(nums[1]) + 2
	if st := s.Stats(); st.Records != int64(want) {
		t.Fatalf("stats %+v, want %d records", st, want)
	}
	// Appending after the damage works, and the damage is not found again.
	if _, err := s.Append(rec(9999)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, dir, Options{})
	defer s.Close()
	if cs := s.Corruptions(); len(cs) != 0 {
		t.Fatalf("corruption reported twice: %v", cs)
	}
	if st := s.Stats(); st.Records != int64(want+1) {
		t.Fatalf("stats %+v, want %d records", st, want+1)
	}
}

func TestGarbageSegment(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, segName(1)), []byte("not a spool"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := open(t, dir, Options{})
	defer s.Close()
	if cs := s.Corruptions(); len(cs) != 1 || cs[0].Offset != 0 || cs[0].Bytes != 11 {
		t.Fatalf("corruptions %v", cs)
	}
	if segs := segments(t, dir); len(segs) != 0 {
		t.Fatalf("segment without records kept: %v", segs)
	}
	if n, err := s.Append(rec(1)); n != 1 || err != nil {
		t.Fatalf("append: %d %v", n, err)
	}
	readAll(t, s, 5, 1, 2)
}

// TestDamageWhileOpen: a record damaged after Open is set aside when read,
// and reading goes on with the next segment.
func TestDamageWhileOpen(t *testing.T) {
	dir, segs, nums := threeSegments(t)
	s := open(t, dir, Options{})
	defer s.Close()
	flip(t, segs[0], offsetOf(t, segs[0], 1)+headerLen)
	var got int
	var last Mark
	for {
		rs, m, err := s.Read(100, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) == 0 {
			break
		}
		got += len(rs)
		last = m
	}
	if want := 1 + len(nums[1]) + len(nums[2]); got != want {
		t.Fatalf("read %d records, want %d", got, want)
	}
	if len(s.Corruptions()) != 1 {
		t.Fatalf("corruptions %v", s.Corruptions())
	}
	if err := s.Commit(last); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Records != 0 || st.Segments != 0 {
		t.Fatalf("stats %+v, want empty", st)
	}
}

func TestLocked(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	if _, err := Open(dir, Options{Logger: quiet()}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Open: %v, want in use", err)
	}
	s.Close()
	s = open(t, dir, Options{})
	s.Close()
	if _, err := s.Append(rec(0)); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
}

func TestConcurrentAppendRead(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{SegmentBytes: 16 << 10})
	defer s.Close()
	const total = 5000
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < total; i += 50 {
			if _, err := s.Append(recs(i, i+50)...); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	next := 0
	for next < total {
		rs, m, err := s.Read(64, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if !bytes.Equal(r, rec(next)) {
				t.Fatalf("read %q, want record %d", r, next)
			}
			next++
		}
		if err := s.Commit(m); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if st := s.Stats(); st.Records != 0 || st.Bytes != 0 {
		t.Fatalf("stats %+v, want empty", st)
	}
}

func flip(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}
