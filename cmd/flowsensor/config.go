package main

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/flowsensor/flowsensor/loader"
	"github.com/flowsensor/flowsensor/sinks/elasticsearch"
)

// Config is everything `flowsensor run` can be told. Values come from, in
// order: the defaults below, a YAML file (--config), FLOWSENSOR_* environment
// variables (the yaml name in upper case: FLOWSENSOR_IDLE_TIMEOUT=30s,
// FLOWSENSOR_INTERFACES=eth1,eth2), then command-line flags.
type Config struct {
	Interfaces     []string      `yaml:"interfaces"`      // default: the interface holding the default route
	Out            string        `yaml:"out"`             // output root; Parquet goes to <out>/flows/
	XDPMode        string        `yaml:"xdp_mode"`        // auto, native or generic
	IdleTimeout    time.Duration `yaml:"idle_timeout"`    // a flow without packets for this long is final
	ActiveTimeout  time.Duration `yaml:"active_timeout"`  // a longer flow is reported this often (final=false)
	TCPLinger      time.Duration `yaml:"tcp_linger"`      // after FIN both ways or RST, wait this long for stragglers
	Duration       time.Duration `yaml:"duration"`        // stop after this long; 0 runs until SIGINT/SIGTERM
	StatusInterval time.Duration `yaml:"status_interval"` // status line period on stderr; 0 disables it
	RingMiB        int           `yaml:"ring_mib"`        // ring buffer per interface, MiB, a power of two
	ClockEvery     int           `yaml:"clock_every"`     // a busy CPU reads the clock every N packets; 1 = always
	Batch          int           `yaml:"batch"`           // records per ring sample; 0 = 16 where the kernel allows (>= 6.7)
	PinRoot        string        `yaml:"pin_root"`        // bpffs directory for pinned maps; "-" disables pinning
	ParquetRows    int           `yaml:"parquet_max_rows"`
	ParquetAge     time.Duration `yaml:"parquet_max_age"`
	Shards         int           `yaml:"shards"` // flow table shards; default one per CPU

	// replay
	StateFile       string        `yaml:"state_file"`       // --watch: finished files; default <out>/replay-state.jsonl
	WatchPoll       time.Duration `yaml:"watch_poll"`       // --watch: how often to look for new files
	ReplayInterface string        `yaml:"replay_interface"` // interface name for captures without one

	// Elasticsearch is off until it has a URL.
	Elasticsearch elasticsearch.Config `yaml:"elasticsearch"`
}

// DefaultConfig is the embedded default: no external service needed.
func DefaultConfig() Config {
	return Config{
		Out:            "./flowdata",
		XDPMode:        string(loader.ModeAuto),
		IdleTimeout:    15 * time.Second,
		ActiveTimeout:  60 * time.Second,
		TCPLinger:      2 * time.Second,
		StatusInterval: 5 * time.Second,
		RingMiB:        16,
		ClockEvery:     16,
		PinRoot:        loader.DefaultPinRoot,
		ParquetRows:    1_000_000,
		ParquetAge:     time.Minute,
		WatchPoll:      2 * time.Second,
		Elasticsearch:  elasticsearch.DefaultConfig(),
	}
}

// Validate names the first field that is wrong.
func (c *Config) Validate() error {
	if _, err := loader.ParseXDPMode(c.XDPMode); err != nil {
		return fmt.Errorf("xdp_mode: %w", err)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
		min  time.Duration
	}{
		{"idle_timeout", c.IdleTimeout, time.Millisecond},
		{"active_timeout", c.ActiveTimeout, time.Millisecond},
		{"tcp_linger", c.TCPLinger, 0},
		{"duration", c.Duration, 0},
		{"status_interval", c.StatusInterval, 0},
		{"parquet_max_age", c.ParquetAge, time.Millisecond},
		{"watch_poll", c.WatchPoll, time.Millisecond},
	} {
		if d.v < d.min {
			return fmt.Errorf("%s: %v is too small (minimum %v)", d.name, d.v, d.min)
		}
	}
	if c.Out == "" {
		return errors.New("out: empty")
	}
	if c.RingMiB < 1 || c.RingMiB&(c.RingMiB-1) != 0 {
		return fmt.Errorf("ring_mib: %d is not a power of two", c.RingMiB)
	}
	if c.Batch < 0 || c.Batch > loader.MaxBatch {
		return fmt.Errorf("batch: %d, want 0 (automatic) to %d", c.Batch, loader.MaxBatch)
	}
	if c.ClockEvery < 1 {
		return fmt.Errorf("clock_every: %d, want at least 1", c.ClockEvery)
	}
	if c.ParquetRows < 1 {
		return fmt.Errorf("parquet_max_rows: %d, want at least 1", c.ParquetRows)
	}
	if c.Shards < 0 {
		return fmt.Errorf("shards: %d is negative", c.Shards)
	}
	for _, name := range c.Interfaces {
		if name == "" || len(name) > 15 || strings.ContainsAny(name, "/ \t") {
			return fmt.Errorf("interfaces: %q is not an interface name", name)
		}
	}
	return c.Elasticsearch.Validate()
}

// LoadFile applies a YAML file over c. Unknown keys are errors, so a typo
// does not silently leave a default in place.
func (c *Config) LoadFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// LoadEnv applies FLOWSENSOR_<YAML NAME> variables over c; a nested section
// adds its name: FLOWSENSOR_ELASTICSEARCH_URLS, FLOWSENSOR_ELASTICSEARCH_PASSWORD.
func (c *Config) LoadEnv(getenv func(string) string) error {
	return loadEnv(reflect.ValueOf(c).Elem(), "FLOWSENSOR_", getenv)
}

func loadEnv(v reflect.Value, prefix string, getenv func(string) string) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		name := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
		if name == "" || name == "-" {
			continue
		}
		env := prefix + strings.ToUpper(name)
		if f := v.Field(i); f.Kind() == reflect.Struct && f.Type() != reflect.TypeOf(time.Duration(0)) {
			if err := loadEnv(f, env+"_", getenv); err != nil {
				return err
			}
			continue
		}
		s := getenv(env)
		if s == "" {
			continue
		}
		if err := setField(v.Field(i), s); err != nil {
			return fmt.Errorf("%s: %w", env, err)
		}
	}
	return nil
}

func setField(f reflect.Value, s string) error {
	if f.Type() == reflect.TypeOf(time.Duration(0)) {
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		f.SetInt(int64(d))
		return nil
	}
	switch f.Kind() {
	case reflect.String: // also secrets
		f.SetString(s)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return err
		}
		f.SetInt(n)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return err
		}
		f.SetBool(b)
	case reflect.Slice:
		if f.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("unsupported type %s", f.Type())
		}
		f.Set(reflect.ValueOf(strings.Split(s, ",")).Convert(f.Type()))
	default:
		return fmt.Errorf("unsupported type %s", f.Type())
	}
	return nil
}
