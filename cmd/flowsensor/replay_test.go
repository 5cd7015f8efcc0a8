package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flowsensor/flowsensor/internal/corpus"
)

func localCapture(name string) string {
	return filepath.Join(corpus.RepoRoot(), "testdata", "corpus", name)
}

// TestReplayCorruptFiles: a damaged file is named with the byte offset of the
// damage, the flows of its readable part are still written, the other files
// of the run are processed, and the exit status says something failed.
func TestReplayCorruptFiles(t *testing.T) {
	out := t.TempDir()
	code, _, stderr := runFlowsensor(t, "", "replay", "--out", out,
		localCapture("tcp-dns-arp-http-google.pcap"),
		localCapture("corrupt-cut-short.pcap"),
		localCapture("corrupt-pcap-bad-version.pcap"),
		localCapture("vlan-collisions.pcap"))
	if code == 0 {
		t.Fatalf("exit status 0 with damaged files; stderr:\n%s", stderr)
	}
	for _, want := range []string{
		"corrupt-cut-short.pcap: byte offset 240 (after 1 packet): file ends inside a record header (cut short)",
		"corrupt-pcap-bad-version.pcap: byte offset 0 (after 0 packets): pcap file header: unknown major version 1",
		"replay: 4 files (2 with errors)",
		"2 of 4 files could not be read completely",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	// The good files' flows, and the one packet before the damage.
	var packets int64
	for _, r := range readRows(t, out) {
		packets += r.Packets
	}
	if want := int64(56 + 1 + 42); packets != want {
		t.Errorf("%d packets in flows, want %d (56 + the cut file's 1 + 42)", packets, want)
	}
}

// TestReplayUnsupportedLinkType: packets of a link type flowsensor cannot
// read are named with the file and the type; a file with nothing else fails.
func TestReplayUnsupportedLinkType(t *testing.T) {
	editcap := corpus.RequireTool(t, "editcap", "apt-get install tshark")
	wifi := filepath.Join(t.TempDir(), "wifi.pcap")
	if out, err := exec.Command(editcap, "-T", "ieee-802-11", localCapture("vlan11-dns-icmp-arp.pcap"), wifi).CombinedOutput(); err != nil {
		t.Fatalf("editcap: %v: %s", err, out)
	}
	out := t.TempDir()
	code, _, stderr := runFlowsensor(t, "", "replay", "--out", out, wifi, localCapture("tcp-dns-arp-http-google.pcap"))
	if code == 0 {
		t.Fatalf("exit status 0; stderr:\n%s", stderr)
	}
	for _, want := range []string{
		"wifi.pcap: 133 packets of link type 105 skipped",
		"wifi.pcap: none of its 133 packets has a link type flowsensor reads",
		"replay: 2 files (1 with errors), 191 packets",
		"unsupported link 133",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if rows := readRows(t, out); len(rows) == 0 {
		t.Error("the readable file gave no flows")
	}
}

// TestReplayWatch drops files into a watched folder, including one from a
// slow writer that renames it when done, restarts the watcher, and checks
// each file is processed exactly once.
func TestReplayWatch(t *testing.T) {
	dir, out := t.TempDir(), t.TempDir()
	state := filepath.Join(out, "state.jsonl")
	args := []string{"replay", "--watch", "--poll", "100ms", "--out", out, "--state", state, dir}

	w := startFlowsensor(t, "", args...)
	w.waitFor(t, "watching", 10*time.Second)
	drop(t, localCapture("tcp-dns-arp-http-google.pcap"), filepath.Join(dir, "a.pcap"), 0)
	// A slow writer: half the file under a hidden name, a pause, the rest, rename.
	drop(t, localCapture("vlan-collisions.pcap"), filepath.Join(dir, "b.pcap"), 300*time.Millisecond)
	waitForLines(t, state, 2)
	w.stop(t)

	// Restart: nothing is repeated; a file that arrived while stopped is taken.
	drop(t, localCapture("nanosecond-big-endian.pcap"), filepath.Join(dir, "c.pcap"), 0)
	w = startFlowsensor(t, "", args...)
	waitForLines(t, state, 3)
	time.Sleep(500 * time.Millisecond) // several polls: nothing else may be taken
	w.stop(t)
	if n := countLines(t, state); n != 3 {
		t.Fatalf("state has %d entries, want 3", n)
	}

	var packets int64
	perInterface := map[string]int64{}
	for _, r := range readRows(t, out) {
		packets += r.Packets
		perInterface[r.Interface] += r.Packets
	}
	if want := int64(56 + 42 + 10); packets != want {
		t.Errorf("%d packets in flows, want %d: each file exactly once (%v)", packets, want, perInterface)
	}
	if perInterface["a"] != 56 || perInterface["b"] != 42 || perInterface["c"] != 10 {
		t.Errorf("packets per interface (file name) %v", perInterface)
	}
}

// drop copies src to dst the way a capture rotator does: written under a
// hidden name, then renamed. pause > 0 writes it in two halves with a pause.
func drop(t *testing.T, src, dst string, pause time.Duration) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	hidden := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".part")
	f, err := os.Create(hidden)
	if err != nil {
		t.Fatal(err)
	}
	half := len(data) / 2
	if _, err := f.Write(data[:half]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(pause)
	if _, err := f.Write(data[half:]); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(hidden, dst); err != nil {
		t.Fatal(err)
	}
}

func waitForLines(t *testing.T, path string, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if countLines(t, path) >= n {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("state file %s did not reach %d entries", path, n)
}

func countLines(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	for sc := bufio.NewScanner(f); sc.Scan(); {
		n++
	}
	return n
}
