package main

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	pq "github.com/parquet-go/parquet-go"

	"github.com/flowsensor/flowsensor/sinks/parquet"
)

// The test binary doubles as the flowsensor binary: run with this variable
// set, it is `flowsensor` with the test's arguments. End-to-end tests thus
// exercise the real command line without a separate build step.
const asMainEnv = "FLOWSENSOR_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// flowsensorCmd returns a command running this binary as flowsensor, inside
// the network namespace at nsPath when it is not empty.
func flowsensorCmd(nsPath string, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if nsPath != "" {
		cmd = exec.Command("nsenter", append([]string{"--net=" + nsPath, "--", os.Args[0]}, args...)...)
	} else {
		cmd = exec.Command(os.Args[0], args...)
	}
	cmd.Env = append(os.Environ(), asMainEnv+"=1")
	return cmd
}

// runFlowsensor runs flowsensor to completion and returns its exit code,
// stdout and stderr.
func runFlowsensor(t *testing.T, nsPath string, args ...string) (int, string, string) {
	t.Helper()
	cmd := flowsensorCmd(nsPath, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("run flowsensor: %v", err)
		}
		code = ee.ExitCode()
	}
	return code, stdout.String(), stderr.String()
}

// background is a flowsensor process whose stderr lines are collected.
type background struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	done  chan error
}

func startFlowsensor(t *testing.T, nsPath string, args ...string) *background {
	t.Helper()
	b := &background{cmd: flowsensorCmd(nsPath, args...), done: make(chan error, 1)}
	stderr, err := b.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	b.cmd.Stdout = io.Discard
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			b.mu.Lock()
			b.lines = append(b.lines, sc.Text())
			b.mu.Unlock()
		}
		b.done <- b.cmd.Wait()
	}()
	t.Cleanup(func() {
		if b.cmd.ProcessState == nil {
			_ = b.cmd.Process.Kill()
		}
	})
	return b
}

// waitFor waits until a stderr line contains s.
func (b *background) waitFor(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if strings.Contains(b.stderr(), s) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("flowsensor did not print %q within %v; stderr:\n%s", s, timeout, b.stderr())
}

func (b *background) stderr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.lines, "\n")
}

// stop sends SIGINT and waits for a clean exit.
func (b *background) stop(t *testing.T) {
	t.Helper()
	if err := b.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	b.wait(t, 30*time.Second)
}

func (b *background) wait(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case err := <-b.done:
		if err != nil {
			t.Fatalf("flowsensor exited with %v; stderr:\n%s", err, b.stderr())
		}
	case <-time.After(timeout):
		_ = b.cmd.Process.Kill()
		t.Fatalf("flowsensor did not exit within %v; stderr:\n%s", timeout, b.stderr())
	}
}

// readRows reads every committed Parquet file under out/flows.
func readRows(t *testing.T, out string) []parquet.Row {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(out, "flows", "dt=*", "hour=*", "*.parquet"))
	if err != nil {
		t.Fatal(err)
	}
	var rows []parquet.Row
	for _, f := range files {
		rs, err := pq.ReadFile[parquet.Row](f)
		if err != nil {
			t.Fatalf("read %s: %v", f, err)
		}
		rows = append(rows, rs...)
	}
	return rows
}
