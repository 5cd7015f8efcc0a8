// Command flowsensor is a passive network flow sensor: an XDP program on each
// chosen interface reports every packet, flows are built in user space and
// written to date-partitioned Parquet files.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"reflect"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "flowsensor: %v\n", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "flowsensor",
		Short:         "eBPF/XDP network flow sensor",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newRunCmd(), newReplayCmd(), newCompactCmd(), newVersionCmd())
	return root
}

// flagFields maps each configuration flag to its Config field (by yaml name),
// so that only flags given on the command line override file and environment.
var flagFields = map[string]string{
	"interface":        "interfaces",
	"out":              "out",
	"xdp-mode":         "xdp_mode",
	"idle-timeout":     "idle_timeout",
	"active-timeout":   "active_timeout",
	"tcp-linger":       "tcp_linger",
	"duration":         "duration",
	"status-interval":  "status_interval",
	"ring-mib":         "ring_mib",
	"clock-every":      "clock_every",
	"batch":            "batch",
	"pin-root":         "pin_root",
	"parquet-max-rows": "parquet_max_rows",
	"parquet-max-age":  "parquet_max_age",
	"shards":           "shards",
	"state":            "state_file",
	"poll":             "watch_poll",
	"interface-name":   "replay_interface",
}

// bindRunFlags binds the flags of `flowsensor run`.
func bindRunFlags(fs *pflag.FlagSet, c *Config) {
	fs.StringArrayVarP(&c.Interfaces, "interface", "i", nil, "interface to watch (repeatable; default: the one holding the default route)")
	fs.StringVar(&c.XDPMode, "xdp-mode", c.XDPMode, "XDP attach mode: auto (native, else generic), native or generic")
	fs.DurationVar(&c.Duration, "duration", c.Duration, "stop after this long (0: run until SIGINT/SIGTERM)")
	fs.DurationVar(&c.StatusInterval, "status-interval", c.StatusInterval, "print a status line to stderr this often (0: never)")
	fs.IntVar(&c.RingMiB, "ring-mib", c.RingMiB, "ring buffer size per interface in MiB (power of two)")
	fs.IntVar(&c.ClockEvery, "clock-every", c.ClockEvery, "a busy CPU timestamps every Nth packet with a fresh clock reading (1: every packet)")
	fs.StringVar(&c.PinRoot, "pin-root", c.PinRoot, `pin maps under PIN-ROOT/<interface>/ ("-": do not pin)`)
	fs.IntVar(&c.Batch, "batch", c.Batch, "records each CPU hands over per ring-buffer sample (0: 16 on kernels >= 6.7, else 1)")
	bindFlowFlags(fs, c)
}

// bindReplayFlags binds the flags of `flowsensor replay`.
func bindReplayFlags(fs *pflag.FlagSet, c *Config) {
	fs.StringVar(&c.StateFile, "state", c.StateFile, "with --watch: file remembering finished captures (default OUT/replay-state.jsonl)")
	fs.DurationVar(&c.WatchPoll, "poll", c.WatchPoll, "with --watch: how often to look for new files")
	fs.StringVar(&c.ReplayInterface, "interface-name", c.ReplayInterface, "interface name for captures that carry none (default: the file name)")
	bindFlowFlags(fs, c)
}

// bindFlowFlags binds what run and replay share: flow timeouts and output.
func bindFlowFlags(fs *pflag.FlagSet, c *Config) {
	fs.StringVar(&c.Out, "out", c.Out, "output directory; Parquet flows go to OUT/flows/dt=YYYY-MM-DD/hour=HH/")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", c.IdleTimeout, "end a flow after this long without packets")
	fs.DurationVar(&c.ActiveTimeout, "active-timeout", c.ActiveTimeout, "report a long flow this often (final=false rows)")
	fs.DurationVar(&c.TCPLinger, "tcp-linger", c.TCPLinger, "keep a TCP flow this long after FIN both ways or RST")
	fs.IntVar(&c.ParquetRows, "parquet-max-rows", c.ParquetRows, "close a Parquet file after this many rows")
	fs.DurationVar(&c.ParquetAge, "parquet-max-age", c.ParquetAge, "close a Parquet file when its oldest row is this old")
	fs.IntVar(&c.Shards, "shards", c.Shards, "flow table shards (0: one per CPU)")
}

// setup resolves the configuration of a command and returns a context
// cancelled by SIGINT or SIGTERM.
func setup(cmd *cobra.Command, fromFlags *Config, configFile string) (Config, context.Context, context.CancelFunc, error) {
	cfg, err := resolveConfig(cmd.Flags(), fromFlags, configFile, os.Getenv)
	if err != nil {
		return cfg, nil, nil, err
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	return cfg, ctx, stop, nil
}

// resolveConfig layers defaults, the YAML file, the environment and the flags
// that were set explicitly, then validates the result.
func resolveConfig(fs *pflag.FlagSet, fromFlags *Config, file string, getenv func(string) string) (Config, error) {
	cfg := DefaultConfig()
	if file != "" {
		if err := cfg.LoadFile(file); err != nil {
			return cfg, err
		}
	}
	if err := cfg.LoadEnv(getenv); err != nil {
		return cfg, err
	}
	dst, src := reflect.ValueOf(&cfg).Elem(), reflect.ValueOf(fromFlags).Elem()
	var err error
	fs.Visit(func(f *pflag.Flag) {
		yamlName, ok := flagFields[f.Name]
		if !ok {
			return
		}
		i := fieldByYAML(dst.Type(), yamlName)
		if i < 0 {
			err = fmt.Errorf("flag --%s has no config field", f.Name)
			return
		}
		dst.Field(i).Set(src.Field(i))
	})
	if err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

func fieldByYAML(t reflect.Type, name string) int {
	for i := 0; i < t.NumField(); i++ {
		if strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0] == name {
			return i
		}
	}
	return -1
}

// version is set at build time with -ldflags "-X main.version=..."; otherwise
// it comes from the module's build information.
var version = ""

func versionString() string {
	v, rev, dirty := version, "", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	if v == "" {
		v = "(devel)"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	s := "flowsensor " + v
	if rev != "" {
		s += " " + rev
	}
	return s + " " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), versionString())
		},
	}
}
