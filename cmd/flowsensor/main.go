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

	"github.com/flowsensor/flowsensor/sinks/elasticsearch"
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

	"es-url":                  "elasticsearch.urls",
	"es-index-prefix":         "elasticsearch.index_prefix",
	"es-username":             "elasticsearch.username",
	"es-password-file":        "elasticsearch.password_file",
	"es-api-key-file":         "elasticsearch.api_key_file",
	"es-ca-file":              "elasticsearch.ca_file",
	"es-insecure-skip-verify": "elasticsearch.insecure_skip_verify",
	"es-bulk-bytes":           "elasticsearch.bulk_bytes",
	"es-workers":              "elasticsearch.workers",
	"es-flush-interval":       "elasticsearch.flush_interval",
	"es-spool-dir":            "elasticsearch.spool_dir",
	"es-spool-max-bytes":      "elasticsearch.spool_max_bytes",
	"es-dead-letter":          "elasticsearch.dead_letter_path",
	"es-retention":            "elasticsearch.retention",
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
	bindESFlags(fs, &c.Elasticsearch)
}

// bindESFlags binds the Elasticsearch sink's flags. Passwords and API keys
// have no flags (they would show in process listings): use the files, the
// environment or the configuration file.
func bindESFlags(fs *pflag.FlagSet, e *elasticsearch.Config) {
	fs.StringArrayVar(&e.URLs, "es-url", nil, "Elasticsearch URL (repeatable); enables the Elasticsearch sink")
	fs.StringVar(&e.IndexPrefix, "es-index-prefix", e.IndexPrefix, "daily indices PREFIX-YYYY.MM.DD and the index template's name")
	fs.StringVar(&e.Username, "es-username", e.Username, "basic authentication user (password from --es-password-file or FLOWSENSOR_ELASTICSEARCH_PASSWORD)")
	fs.StringVar(&e.PasswordFile, "es-password-file", e.PasswordFile, "file holding the basic authentication password")
	fs.StringVar(&e.APIKeyFile, "es-api-key-file", e.APIKeyFile, "file holding an API key (base64 id:key), instead of a user")
	fs.StringVar(&e.CAFile, "es-ca-file", e.CAFile, "PEM file of the certificate authorities to trust for https")
	fs.BoolVar(&e.InsecureSkipVerify, "es-insecure-skip-verify", e.InsecureSkipVerify, "do not verify the server certificate (testing only)")
	fs.IntVar(&e.BulkBytes, "es-bulk-bytes", e.BulkBytes, "bytes of documents per bulk request")
	fs.IntVar(&e.Workers, "es-workers", e.Workers, "bulk requests in flight at once")
	fs.DurationVar(&e.FlushInterval, "es-flush-interval", e.FlushInterval, "longest a document waits for its bulk request")
	fs.StringVar(&e.SpoolDir, "es-spool-dir", e.SpoolDir, "spool for documents while Elasticsearch is down (default OUT/es-spool)")
	fs.Int64Var(&e.SpoolMaxBytes, "es-spool-max-bytes", e.SpoolMaxBytes, "size limit of the spool")
	fs.StringVar(&e.DeadLetterPath, "es-dead-letter", e.DeadLetterPath, "NDJSON file for documents Elasticsearch rejects (default OUT/es-dead-letter.ndjson)")
	fs.DurationVar(&e.Retention, "es-retention", e.Retention, "delete daily indices this long after creation (ILM, where the cluster has it)")
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
		path, ok := flagFields[f.Name]
		if !ok {
			return
		}
		d, s := fieldByYAML(dst, path), fieldByYAML(src, path)
		if !d.IsValid() || !s.IsValid() {
			err = fmt.Errorf("flag --%s has no config field", f.Name)
			return
		}
		d.Set(s)
	})
	if err != nil {
		return cfg, err
	}
	cfg.Elasticsearch.SetOutputDir(cfg.Out)
	return cfg, cfg.Validate()
}

// fieldByYAML finds the field at a dotted path of yaml names in a struct
// value ("elasticsearch.urls"); the zero Value when there is none.
func fieldByYAML(v reflect.Value, path string) reflect.Value {
	for _, name := range strings.Split(path, ".") {
		if v.Kind() != reflect.Struct {
			return reflect.Value{}
		}
		found := reflect.Value{}
		for i := 0; i < v.NumField(); i++ {
			if strings.Split(v.Type().Field(i).Tag.Get("yaml"), ",")[0] == name {
				found = v.Field(i)
				break
			}
		}
		if !found.IsValid() {
			return found
		}
		v = found
	}
	return v
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
