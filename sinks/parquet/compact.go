package parquet

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	pq "github.com/parquet-go/parquet-go"
)

// CompactOptions tune Compact.
type CompactOptions struct {
	// TargetBytes is the size merged files aim at; files already this big
	// are left alone. Default 128 MiB.
	TargetBytes int64
	// MinAge: only partitions whose hour ended at least this long ago are
	// compacted, so that no sensor still adds files to them in the normal
	// course (a flow's last report lands at most an active timeout after
	// its start hour). Default 2h.
	MinAge time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	// DryRun reports what would be merged without writing anything.
	DryRun bool
}

// CompactStats says what Compact did.
type CompactStats struct {
	Partitions int   // partitions looked at
	Merged     int   // files merged away
	Written    int   // merged files written
	Rows       int64 // rows in the merged files
	Skipped    int   // files left alone because their schema differs from the current one
}

// journal is written in a partition before a merged file is published and
// removed once its inputs are gone, so that a crash in between is finished
// by the next run instead of leaving rows twice.
type journal struct {
	Output string   `json:"output"`
	Inputs []string `json:"inputs"`
}

const journalName = ".compact-journal.json"

// Compact merges the small committed files of each closed partition under
// root (an output directory holding flows/, or flows/ itself) into files of
// about TargetBytes. Each merged file is written under a hidden name,
// checked to hold exactly the rows of its inputs, given its final name, and
// only then are the inputs removed. Files being written (hidden names) are
// never touched, and files that appear while it runs are left for the next
// run, so it is safe beside a running sensor. A reader listing the partition
// between publishing a merged file and removing its inputs can see those
// rows twice (flow_id and seq identify duplicates); it never sees them
// missing.
func Compact(root string, opts CompactOptions) (CompactStats, error) {
	opts.TargetBytes = cmp.Or(opts.TargetBytes, 128<<20)
	opts.MinAge = cmp.Or(opts.MinAge, 2*time.Hour)
	if opts.Now == nil {
		opts.Now = time.Now
	}
	flows := root
	if st, err := os.Stat(filepath.Join(root, "flows")); err == nil && st.IsDir() {
		flows = filepath.Join(root, "flows")
	}
	parts, err := filepath.Glob(filepath.Join(flows, "dt=*", "hour=*"))
	if err != nil {
		return CompactStats{}, err
	}
	if len(parts) == 0 {
		if _, err := os.Stat(flows); err != nil {
			return CompactStats{}, fmt.Errorf("compact %s: %w", root, err)
		}
	}
	var st CompactStats
	var errs []error
	for _, dir := range parts {
		hour, err := partitionHour(dir)
		if err != nil {
			continue // not one of ours
		}
		if opts.Now().Sub(hour.Add(time.Hour)) < opts.MinAge {
			continue
		}
		st.Partitions++
		if err := compactPartition(dir, opts, &st); err != nil {
			errs = append(errs, fmt.Errorf("compact %s: %w", dir, err))
		}
	}
	return st, errors.Join(errs...)
}

func partitionHour(dir string) (time.Time, error) {
	h := filepath.Base(dir)
	d := filepath.Base(filepath.Dir(dir))
	return time.Parse("dt=2006-01-02 hour=15", d+" "+h)
}

func compactPartition(dir string, opts CompactOptions, st *CompactStats) error {
	if err := recoverJournal(dir); err != nil {
		return err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	type input struct {
		name string
		size int64
	}
	var small []input
	current := pq.SchemaOf(Row{})
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".parquet") || !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil || info.Size() >= opts.TargetBytes {
			continue
		}
		if same, err := sameSchema(filepath.Join(dir, name), current); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		} else if !same {
			st.Skipped++
			continue
		}
		small = append(small, input{name, info.Size()})
	}
	// Consecutive files (by name, i.e. by write time) up to the target size.
	var groups [][]string
	var group []string
	var size int64
	for _, in := range small {
		if len(group) > 0 && size+in.size > opts.TargetBytes {
			groups = append(groups, group)
			group, size = nil, 0
		}
		group = append(group, in.name)
		size += in.size
	}
	groups = append(groups, group)
	for _, g := range groups {
		if len(g) < 2 {
			continue
		}
		if opts.DryRun {
			st.Merged += len(g)
			st.Written++
			continue
		}
		rows, err := merge(dir, g, opts.Now())
		if err != nil {
			return err
		}
		st.Merged += len(g)
		st.Written++
		st.Rows += rows
	}
	return nil
}

func sameSchema(path string, want *pq.Schema) (bool, error) {
	f, pf, err := openParquet(path, pq.SkipPageIndex(true), pq.SkipBloomFilters(true))
	if err != nil {
		return false, err
	}
	defer f.Close()
	return pq.EqualNodes(pf.Schema(), want), nil
}

// merge writes the rows of inputs into one new file, verifies its row count,
// publishes it and removes the inputs.
func merge(dir string, inputs []string, now time.Time) (int64, error) {
	name := fmt.Sprintf("flows-compacted-%s-%s", now.UTC().Format("20060102T150405Z"), strings.TrimSuffix(inputs[0], ".parquet"))
	name = strings.TrimSuffix(name, ".parquet") + ".parquet"
	tmp := filepath.Join(dir, "."+name+".tmp")
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return 0, err
	}
	defer os.Remove(tmp) // a no-op once published
	w := pq.NewGenericWriter[Row](out, pq.Compression(codec), pq.MaxRowsPerRowGroup(rowGroupRows))
	var want int64
	for _, in := range inputs {
		n, err := copyRows(w, filepath.Join(dir, in))
		if err != nil {
			out.Close()
			return 0, fmt.Errorf("%s: %w", in, err)
		}
		want += n
	}
	err = w.Close()
	if err == nil {
		err = out.Sync()
	}
	if err = cmp.Or(err, out.Close()); err != nil {
		return 0, err
	}
	got, err := countRows(tmp)
	if err != nil {
		return 0, fmt.Errorf("verify merged file: %w", err)
	}
	if got != want {
		return 0, fmt.Errorf("merged file holds %d rows, its inputs %d: inputs left in place", got, want)
	}
	if err := writeJournal(dir, journal{Output: name, Inputs: inputs}); err != nil {
		return 0, err
	}
	placed, err := publish(tmp, filepath.Join(dir, name))
	if !placed {
		return 0, errors.Join(err, os.Remove(filepath.Join(dir, journalName)))
	}
	if err := finishJournal(dir, journal{Output: name, Inputs: inputs}); err != nil {
		return 0, err
	}
	return got, nil
}

func copyRows(w *pq.GenericWriter[Row], path string) (int64, error) {
	f, pf, err := openParquet(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var total int64
	for _, rg := range pf.RowGroups() {
		rows := rg.Rows()
		n, err := w.ReadRowsFrom(rows)
		rows.Close()
		if err != nil {
			return total, err
		}
		total += n
	}
	if total != pf.NumRows() {
		return total, fmt.Errorf("read %d rows, footer says %d", total, pf.NumRows())
	}
	return total, nil
}

// countRows adds up the row counts of a file's row groups.
func countRows(path string) (int64, error) {
	f, pf, err := openParquet(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var n int64
	for _, rg := range pf.RowGroups() {
		n += rg.NumRows()
	}
	return n, nil
}

// openParquet opens a Parquet file; the caller closes f.
func openParquet(path string, opts ...pq.FileOption) (*os.File, *pq.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	info, err := f.Stat()
	if err == nil {
		var pf *pq.File
		if pf, err = pq.OpenFile(f, info.Size(), opts...); err == nil {
			return f, pf, nil
		}
	}
	f.Close()
	return nil, nil, err
}

func writeJournal(dir string, j journal) error {
	b, err := json.Marshal(j)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, journalName+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	f, err := os.Open(tmp)
	if err == nil {
		err = cmp.Or(f.Sync(), f.Close())
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, journalName)); err != nil {
		return err
	}
	return syncDir(dir)
}

// finishJournal removes the inputs of a published merge, then the journal.
func finishJournal(dir string, j journal) error {
	for _, in := range j.Inputs {
		if err := os.Remove(filepath.Join(dir, in)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(dir, journalName)); err != nil {
		return err
	}
	return syncDir(dir)
}

// recoverJournal completes or abandons a merge a crash interrupted.
func recoverJournal(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, journalName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var j journal
	if err := json.Unmarshal(b, &j); err != nil || j.Output == "" || slices.Contains(j.Inputs, "") {
		return fmt.Errorf("damaged %s: %v (remove it after checking the partition)", journalName, err)
	}
	if _, err := os.Stat(filepath.Join(dir, j.Output)); err == nil {
		return finishJournal(dir, j) // published: the inputs must go
	}
	_ = os.Remove(filepath.Join(dir, "."+j.Output+".tmp"))
	return os.Remove(filepath.Join(dir, journalName))
}
