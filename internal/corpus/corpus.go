// Package corpus finds the third-party packet captures the tests run over and
// reads the oracle outputs stored beside them (tshark, argus, pmacct). Only
// tests import it.
//
// Small captures are copied into testdata/corpus (see testdata/README.md) so
// that a fresh clone can test itself; the whole public corpus is used when
// ../shared/corpus/public exists next to the repository, as it does in CI.
package corpus

import (
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
)

// RequireEnv makes tests fail instead of skip when the shared corpus is
// missing (set by .ci/run, where it is always present).
const RequireEnv = "FLOWSENSOR_REQUIRE_CORPUS"

// RepoRoot is the directory holding go.mod.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// SharedDir returns ../shared/corpus/public beside the repository, if present.
func SharedDir() (string, bool) {
	dir := filepath.Join(RepoRoot(), "..", "shared", "corpus", "public")
	st, err := os.Stat(dir)
	return dir, err == nil && st.IsDir()
}

// LocalDir is the copy of the small captures inside the repository.
func LocalDir() string { return filepath.Join(RepoRoot(), "testdata", "corpus") }

// Dir returns the shared corpus when present, else the local copy, and
// whether it is the full shared one.
func Dir() (string, bool) {
	if d, ok := SharedDir(); ok {
		return d, true
	}
	return LocalDir(), false
}

// RequireShared returns the shared corpus directory or skips the test (fails
// under RequireEnv) with a message saying what is missing.
func RequireShared(tb testing.TB) string {
	tb.Helper()
	d, ok := SharedDir()
	if !ok {
		msg := "the shared corpus (../shared/corpus/public beside the repository) is not here"
		if os.Getenv(RequireEnv) != "" {
			tb.Fatal(msg)
		}
		tb.Skip(msg + ": skipping the tests over large captures")
	}
	return d
}

// RequireTool returns the path of an external program a test needs, or
// skips the test (fails under RequireEnv) saying how to install it.
func RequireTool(tb testing.TB, name, install string) string {
	tb.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		msg := fmt.Sprintf("%s is not installed (%s)", name, install)
		if os.Getenv(RequireEnv) != "" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	return path
}

// EachCapture runs fn as a subtest, named after the file, for every capture
// of the corpus (Dir) but the deliberately damaged corrupt-* ones.
func EachCapture(t *testing.T, fn func(t *testing.T, path string)) {
	t.Helper()
	dir, _ := Dir()
	captures, err := Captures(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range captures {
		name := filepath.Base(path)
		if strings.HasPrefix(name, "corrupt-") {
			continue
		}
		t.Run(name, func(t *testing.T) { fn(t, path) })
	}
}

// Captures lists the capture files (*.pcap, *.pcapng) in dir, sorted.
func Captures(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		n := e.Name()
		if strings.HasSuffix(n, ".pcap") || strings.HasSuffix(n, ".pcapng") {
			out = append(out, filepath.Join(dir, n))
		}
	}
	sort.Strings(out)
	return out, nil
}

// Open opens path, or path+".gz" decompressed, whichever exists.
func Open(path string) (io.ReadCloser, error) {
	if f, err := os.Open(path); err == nil {
		return f, nil
	}
	f, err := os.Open(path + ".gz")
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s.gz: %w", path, err)
	}
	return struct {
		io.Reader
		io.Closer
	}{zr, f}, nil
}

// TSharkRow is one row of X.tshark-packets.tsv: field name -> value.
// Repeated layers are comma-joined, outer first.
type TSharkRow map[string]string

// Last returns the innermost value of a comma-joined field.
func (r TSharkRow) Last(field string) string {
	v := r[field]
	if i := strings.LastIndexByte(v, ','); i >= 0 {
		return v[i+1:]
	}
	return v
}

// TSharkPackets reads the per-packet table stored beside capture.
func TSharkPackets(capture string) ([]TSharkRow, error) {
	return ReadTSharkTable(capture + ".tshark-packets.tsv")
}

// TSharkFields are the columns of X.tshark-packets.tsv, as
// ../shared/corpus/regen_oracles.sh asks tshark for them.
var TSharkFields = []string{
	"frame.number", "frame.time_epoch", "frame.interface_id", "frame.len", "frame.cap_len",
	"frame.protocols", "vlan.id", "ip.src", "ip.dst", "ip.proto", "ip.len", "ip.flags.mf", "ip.frag_offset",
	"ipv6.src", "ipv6.dst", "ipv6.nxt", "ipv6.plen", "tcp.srcport", "tcp.dstport", "tcp.flags",
	"udp.srcport", "udp.dstport", "icmp.type", "icmp.code", "icmpv6.type", "icmpv6.code", "communityid",
}

// WriteTSharkTable makes the per-packet table of capture with tshark, as the
// corpus' stored ones were made, for captures that come without one.
func WriteTSharkTable(capture, tsv string) error {
	args := []string{"-n", "-r", capture, "-o", "ip.defragment:FALSE", "-o", "ipv6.defragment:FALSE",
		"--enable-protocol", "communityid", "-T", "fields", "-E", "header=y", "-E", "separator=/t",
		"-E", "occurrence=a", "-E", "aggregator=,"}
	for _, f := range TSharkFields {
		args = append(args, "-e", f)
	}
	out, err := os.Create(tsv)
	if err != nil {
		return err
	}
	cmd := exec.Command("tshark", args...)
	cmd.Stdout = out
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := errors.Join(cmd.Run(), out.Close()); err != nil {
		return fmt.Errorf("tshark on %s: %w: %s", capture, err, stderr.String())
	}
	return nil
}

// ReadTSharkTable reads a per-packet table (gzipped if only tsv.gz exists).
func ReadTSharkTable(tsv string) ([]TSharkRow, error) {
	rc, err := Open(tsv)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	sc := bufio.NewScanner(rc)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	if !sc.Scan() {
		return nil, fmt.Errorf("%s: empty table", tsv)
	}
	header := strings.Split(sc.Text(), "\t")
	var rows []TSharkRow
	for sc.Scan() {
		cols := strings.Split(sc.Text(), "\t")
		row := make(TSharkRow, len(header))
		for i, h := range header {
			if i < len(cols) {
				row[h] = cols[i]
			}
		}
		rows = append(rows, row)
	}
	return rows, sc.Err()
}
