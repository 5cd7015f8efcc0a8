package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/flowsensor/flowsensor/internal/lab"
	"github.com/flowsensor/flowsensor/loader"
)

func TestConfigLayers(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "flowsensor.yaml")
	if err := os.WriteFile(file, []byte("out: /from/file\nidle_timeout: 20s\nactive_timeout: 90s\ninterfaces: [eth1]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"FLOWSENSOR_ACTIVE_TIMEOUT": "120s", "FLOWSENSOR_INTERFACES": "eth2,eth3"}
	fromFlags := DefaultConfig()
	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	bindRunFlags(fs, &fromFlags)
	if err := fs.Parse([]string{"--idle-timeout", "5s", "-i", "eth9"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := resolveConfig(fs, &fromFlags, file, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Out != "/from/file" || cfg.ActiveTimeout != 120*time.Second || cfg.IdleTimeout != 5*time.Second ||
		len(cfg.Interfaces) != 1 || cfg.Interfaces[0] != "eth9" || cfg.TCPLinger != 2*time.Second {
		t.Fatalf("layered config wrong: %+v", cfg)
	}
	// Every flag of run and replay must map to a config field.
	var c Config
	for _, bind := range []func(*pflag.FlagSet, *Config){bindRunFlags, bindReplayFlags} {
		fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
		bind(fs, &c)
		fs.VisitAll(func(f *pflag.Flag) {
			if path, ok := flagFields[f.Name]; !ok || !fieldByYAML(reflect.ValueOf(&c).Elem(), path).IsValid() {
				t.Errorf("flag --%s has no config field", f.Name)
			}
		})
	}
}

func TestConfigElasticsearch(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "flowsensor.yaml")
	yaml := "out: " + dir + "\nelasticsearch:\n  index_prefix: from-file\n  workers: 3\n"
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"FLOWSENSOR_ELASTICSEARCH_URLS":     "http://a:9200,http://b:9200",
		"FLOWSENSOR_ELASTICSEARCH_USERNAME": "sensor",
		"FLOWSENSOR_ELASTICSEARCH_PASSWORD": "s3cret",
		"FLOWSENSOR_ELASTICSEARCH_WORKERS":  "4",
	}
	fromFlags := DefaultConfig()
	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	bindRunFlags(fs, &fromFlags)
	if err := fs.Parse([]string{"--es-flush-interval", "250ms", "--es-url", "http://c:9200"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := resolveConfig(fs, &fromFlags, file, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	es := cfg.Elasticsearch
	if len(es.URLs) != 1 || es.URLs[0] != "http://c:9200" || es.IndexPrefix != "from-file" || es.Workers != 4 ||
		es.FlushInterval != 250*time.Millisecond || es.Username != "sensor" || string(es.Password) != "s3cret" ||
		es.SpoolDir != filepath.Join(dir, "es-spool") {
		t.Fatalf("elasticsearch config: %+v", es)
	}
	if s := fmt.Sprintf("%v %+v", cfg, cfg); strings.Contains(s, "s3cret") {
		t.Fatalf("password printed: %s", s)
	}
	_, err = resolveConfig(fs, &fromFlags, "", func(k string) string {
		if k == "FLOWSENSOR_ELASTICSEARCH_WORKERS" {
			return "two"
		}
		return ""
	})
	if err == nil || !strings.Contains(err.Error(), "FLOWSENSOR_ELASTICSEARCH_WORKERS") {
		t.Fatalf("bad env value: %v", err)
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct {
		yaml, want string
	}{
		{"idle_timeout: -1s\n", "idle_timeout"},
		{"xdp_mode: turbo\n", "xdp_mode"},
		{"ring_mib: 3\n", "ring_mib"},
		{"clock_every: 0\n", "clock_every"},
		{"interfaces: ['a/b']\n", "interfaces"},
		{"idle_timeot: 1s\n", "idle_timeot"}, // typo: unknown key
		{"idle_timeout: soon\n", "soon"},     // not a duration
	} {
		file := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(file, []byte(tc.yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		fromFlags := DefaultConfig()
		fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
		bindRunFlags(fs, &fromFlags)
		_, err := resolveConfig(fs, &fromFlags, file, func(string) string { return "" })
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one naming %q", tc.yaml, err, tc.want)
		}
	}
	fromFlags := DefaultConfig()
	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	bindRunFlags(fs, &fromFlags)
	_, err := resolveConfig(fs, &fromFlags, "", func(k string) string {
		if k == "FLOWSENSOR_DURATION" {
			return "later"
		}
		return ""
	})
	if err == nil || !strings.Contains(err.Error(), "FLOWSENSOR_DURATION") {
		t.Errorf("bad environment value: %v", err)
	}
}

func TestVersion(t *testing.T) {
	code, stdout, _ := runFlowsensor(t, "", "version")
	if code != 0 || !strings.HasPrefix(stdout, "flowsensor ") {
		t.Fatalf("version: exit %d, %q", code, stdout)
	}
}

// TestBadInput: each mistake gives one clear line on stderr, a non-zero
// exit, and leaves nothing attached or pinned.
func TestBadInput(t *testing.T) {
	lab.RequirePrivileged(t)
	ns := lab.NewNetns(t, lab.Unique("fs")+"-bad")
	ifname := lab.Unique("fsb")
	ns.Run(t, "ip", "link", "add", ifname, "type", "veth", "peer", "name", ifname+"p")
	ns.Run(t, "ip", "link", "set", ifname, "up")
	fileInTheWay := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(fileInTheWay, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown interface", []string{"run", "-i", "nosuch0", "--out", out}, "interface nosuch0: no such interface"},
		{"unwritable out", []string{"run", "-i", ifname, "--out", fileInTheWay}, "parquet output dir " + fileInTheWay},
		{"bad duration", []string{"run", "-i", ifname, "--idle-timeout", "soon"}, `invalid argument "soon" for "--idle-timeout"`},
		{"negative duration", []string{"run", "-i", ifname, "--duration", "-1s"}, "duration: -1s is too small"},
		{"bad xdp mode", []string{"run", "-i", ifname, "--xdp-mode", "turbo"}, `xdp_mode: xdp mode "turbo"`},
		{"missing config file", []string{"run", "--config", "/nonexistent.yaml"}, "config: open /nonexistent.yaml"},
		{"extra argument", []string{"run", "eth0"}, `unknown command "eth0"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runFlowsensor(t, ns.Path(), tc.args...)
			checkOneLineError(t, code, stderr, tc.want)
			checkNothingLeft(t, ns, ifname)
		})
	}
}

// TestMissingCapability runs the sensor as an unprivileged user.
func TestMissingCapability(t *testing.T) {
	lab.RequirePrivileged(t)
	ns := lab.NewNetns(t, lab.Unique("fs")+"-cap")
	ifname := lab.Unique("fsc")
	ns.Run(t, "ip", "link", "add", ifname, "type", "veth", "peer", "name", ifname+"p")
	ns.Run(t, "ip", "link", "set", ifname, "up")
	// The test binary lives in a directory only root may enter: copy it.
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "flowsensor")
	copyFile(t, os.Args[0], bin)
	cmd := flowsensorCmd(ns.Path(), "run", "-i", ifname, "--out", dir)
	// nsenter as root, then drop to nobody with no capabilities.
	cmd.Args = []string{"nsenter", "--net=" + ns.Path(), "--", "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", bin,
		"run", "-i", ifname, "--out", dir}
	outb, _ := cmd.CombinedOutput()
	code := cmd.ProcessState.ExitCode()
	checkOneLineError(t, code, string(outb), "needs root or CAP_BPF")
	checkNothingLeft(t, ns, ifname)
}

func checkOneLineError(t *testing.T, code int, stderr, want string) {
	t.Helper()
	if code == 0 {
		t.Fatalf("exit status 0, want an error; stderr: %q", stderr)
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "flowsensor: ") || !strings.Contains(lines[0], want) {
		t.Fatalf("stderr %q, want one line 'flowsensor: ...%s...'", stderr, want)
	}
}

func checkNothingLeft(t *testing.T, ns *lab.Netns, ifname string) {
	t.Helper()
	if xdpAttached(t, ns, ifname) {
		t.Errorf("XDP left attached to %s", ifname)
	}
	if _, err := os.Stat(filepath.Join(loader.DefaultPinRoot, ifname)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pins left for %s (%v)", ifname, err)
	}
}

// TestDefaultInterface: without -i the sensor watches the interface that
// holds the default route of its network namespace, and --duration stops it.
func TestDefaultInterface(t *testing.T) {
	lab.RequirePrivileged(t)
	id := lab.Unique("fs")
	host, gw := lab.NewNetns(t, id+"-host"), lab.NewNetns(t, id+"-gw")
	uplink := id + "up"
	lab.Veth(t, host, uplink, gw, "gw0")
	// A second interface with an address but no default route must not be picked.
	host.Run(t, "ip", "link", "add", id+"x", "type", "veth", "peer", "name", id+"y")
	host.Run(t, "ip", "link", "set", id+"x", "up")
	host.Run(t, "ip", "addr", "add", "10.197.0.1/24", "dev", id+"x")
	host.Run(t, "ip", "addr", "add", "10.198.0.1/24", "dev", uplink)
	host.Run(t, "ip", "route", "add", "default", "via", "10.198.0.2", "dev", uplink)

	var got string
	host.Do(t, func() {
		var err error
		got, err = loader.DefaultInterface()
		if err != nil {
			t.Fatal(err)
		}
	})
	if got != uplink {
		t.Fatalf("DefaultInterface() = %q, want %q", got, uplink)
	}

	out := t.TempDir()
	start := time.Now()
	code, _, stderr := runFlowsensor(t, host.Path(), "run", "--out", out, "--duration", "1s", "--xdp-mode", "generic")
	if code != 0 || !strings.Contains(stderr, "watching "+uplink+" ") {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	if d := time.Since(start); d < time.Second {
		t.Errorf("stopped after %v, before --duration", d)
	}
	checkNothingLeft(t, host, uplink)

	// No default route at all: a clear error.
	lone := lab.NewNetns(t, id+"-lone")
	code, _, stderr = runFlowsensor(t, lone.Path(), "run", "--out", out)
	checkOneLineError(t, code, stderr, "no default route")
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
