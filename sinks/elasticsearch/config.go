package elasticsearch

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Config configures the Elasticsearch sink. The yaml names are those of the
// `elasticsearch:` section of the flowsensor configuration; errors from
// Validate name the setting as elasticsearch.<yaml name>.
type Config struct {
	// URLs of Elasticsearch nodes, http:// or https://. Empty: the sink is off.
	URLs []string `yaml:"urls"`
	// IndexPrefix names the daily indices <prefix>-YYYY.MM.DD (UTC day of
	// the flow's start), the index template and the ILM policy.
	IndexPrefix string `yaml:"index_prefix"`

	// Basic authentication, or an API key (the base64 "id:key" form that
	// Elasticsearch returns as "encoded"). Secrets can also be read from
	// files (and, in flowsensor, from FLOWSENSOR_ELASTICSEARCH_PASSWORD and
	// FLOWSENSOR_ELASTICSEARCH_API_KEY); they are never printed.
	Username     string `yaml:"username"`
	Password     Secret `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
	APIKey       Secret `yaml:"api_key"`
	APIKeyFile   string `yaml:"api_key_file"`

	// CAFile is a PEM bundle of the certificate authorities to trust for
	// https URLs, instead of the system's. InsecureSkipVerify disables
	// certificate checks altogether (testing only).
	CAFile             string `yaml:"ca_file"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`

	// A bulk request carries about BulkBytes of documents; Workers requests
	// run at once. Documents wait at most FlushInterval for a request to
	// fill. Timeout bounds each request.
	BulkBytes     int           `yaml:"bulk_bytes"`
	Workers       int           `yaml:"workers"`
	FlushInterval time.Duration `yaml:"flush_interval"`
	Timeout       time.Duration `yaml:"timeout"`
	// MaxBackoff caps the wait between attempts while Elasticsearch fails.
	MaxBackoff time.Duration `yaml:"max_backoff"`

	// QueueBytes bounds the documents held in memory. Beyond it, and
	// whenever Elasticsearch is failing, documents go to the spool in
	// SpoolDir, which holds at most SpoolMaxBytes; documents that do not fit
	// are refused, counted and logged.
	QueueBytes    int64  `yaml:"queue_bytes"`
	SpoolDir      string `yaml:"spool_dir"`
	SpoolMaxBytes int64  `yaml:"spool_max_bytes"`

	// DeadLetterPath receives, as NDJSON, the documents Elasticsearch
	// rejects for their content, with the reason; at most DeadLetterMaxBytes.
	DeadLetterPath     string `yaml:"dead_letter_path"`
	DeadLetterMaxBytes int64  `yaml:"dead_letter_max_bytes"`

	// Retention, if set, installs an ILM policy deleting each daily index
	// this long after its creation, on clusters that have ILM.
	Retention time.Duration `yaml:"retention"`

	// ObserverHostname is observer.hostname in every document; default the
	// host name.
	ObserverHostname string `yaml:"observer_hostname"`

	// Logger receives warnings and errors; default slog.Default().
	Logger *slog.Logger `yaml:"-"`
}

// Defaults, chosen for a sensor next to a modest cluster: bulk requests of
// about 5 MB (about 7,000 flows; the size Elasticsearch's tuning guide
// starts from), two at a time, and a spool that holds about 1.4 million
// flows.
const (
	DefaultIndexPrefix        = "flowsensor-flows"
	DefaultBulkBytes          = 5 << 20
	DefaultWorkers            = 2
	DefaultFlushInterval      = time.Second
	DefaultTimeout            = time.Minute
	DefaultMaxBackoff         = 30 * time.Second
	DefaultQueueBytes         = 64 << 20
	DefaultSpoolMaxBytes      = 1 << 30
	DefaultDeadLetterMaxBytes = 256 << 20

	// maxBulkBytes stays under Elasticsearch's default http.max_content_length.
	maxBulkBytes = 100 << 20
)

// DefaultConfig returns the defaults; URLs is empty, so the sink is off.
// SpoolDir and DeadLetterPath depend on the output directory: see
// SetOutputDir.
func DefaultConfig() Config {
	return Config{
		IndexPrefix:        DefaultIndexPrefix,
		BulkBytes:          DefaultBulkBytes,
		Workers:            DefaultWorkers,
		FlushInterval:      DefaultFlushInterval,
		Timeout:            DefaultTimeout,
		MaxBackoff:         DefaultMaxBackoff,
		QueueBytes:         DefaultQueueBytes,
		SpoolMaxBytes:      DefaultSpoolMaxBytes,
		DeadLetterMaxBytes: DefaultDeadLetterMaxBytes,
	}
}

// SetOutputDir fills SpoolDir and DeadLetterPath, when empty, with
// <out>/es-spool and <out>/es-dead-letter.ndjson.
func (c *Config) SetOutputDir(out string) {
	if c.SpoolDir == "" {
		c.SpoolDir = filepath.Join(out, "es-spool")
	}
	if c.DeadLetterPath == "" {
		c.DeadLetterPath = filepath.Join(out, "es-dead-letter.ndjson")
	}
}

// Enabled reports whether any URL is configured.
func (c *Config) Enabled() bool { return len(c.URLs) > 0 }

// Validate names the first setting that is wrong. A config without URLs is
// valid: the sink is off.
func (c *Config) Validate() error {
	if !c.Enabled() {
		return nil
	}
	for _, u := range c.URLs {
		if err := checkURL(u); err != nil {
			return fmt.Errorf("elasticsearch.urls: %w", err)
		}
	}
	if err := checkIndexPrefix(c.IndexPrefix); err != nil {
		return fmt.Errorf("elasticsearch.index_prefix: %w", err)
	}
	if c.Password != "" && c.PasswordFile != "" {
		return errors.New("elasticsearch.password_file: password is set too; use one")
	}
	if c.APIKey != "" && c.APIKeyFile != "" {
		return errors.New("elasticsearch.api_key_file: api_key is set too; use one")
	}
	if (c.APIKey != "" || c.APIKeyFile != "") && (c.Username != "" || c.Password != "" || c.PasswordFile != "") {
		return errors.New("elasticsearch.api_key: username/password are set too; use one way to authenticate")
	}
	if c.Username == "" && (c.Password != "" || c.PasswordFile != "") {
		return errors.New("elasticsearch.username: empty, but a password is set")
	}
	for _, f := range []struct{ name, path string }{
		{"password_file", c.PasswordFile}, {"api_key_file", c.APIKeyFile}, {"ca_file", c.CAFile},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return fmt.Errorf("elasticsearch.%s: %w", f.name, err)
		}
	}
	for _, n := range []struct {
		name string
		v    int64
		min  int64
		max  int64
	}{
		{"bulk_bytes", int64(c.BulkBytes), 1 << 10, maxBulkBytes},
		{"workers", int64(c.Workers), 1, 64},
		{"queue_bytes", c.QueueBytes, 1 << 20, 1 << 40},
		{"spool_max_bytes", c.SpoolMaxBytes, 1 << 20, 1 << 50},
		{"dead_letter_max_bytes", c.DeadLetterMaxBytes, 1 << 10, 1 << 50},
	} {
		if n.v < n.min || n.v > n.max {
			return fmt.Errorf("elasticsearch.%s: %d is out of range [%d, %d]", n.name, n.v, n.min, n.max)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
		min  time.Duration
	}{
		{"flush_interval", c.FlushInterval, time.Millisecond},
		{"timeout", c.Timeout, time.Second},
		{"max_backoff", c.MaxBackoff, 10 * time.Millisecond},
		{"retention", c.Retention, 0},
	} {
		if d.v < d.min {
			return fmt.Errorf("elasticsearch.%s: %v is too small (minimum %v)", d.name, d.v, d.min)
		}
	}
	if c.Retention > 0 && c.Retention < time.Hour {
		return fmt.Errorf("elasticsearch.retention: %v is less than an hour, a daily index would be deleted while written", c.Retention)
	}
	if c.SpoolDir == "" {
		return errors.New("elasticsearch.spool_dir: empty")
	}
	if c.DeadLetterPath == "" {
		return errors.New("elasticsearch.dead_letter_path: empty")
	}
	return nil
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q: %w", redactURL(s), err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%q: scheme must be http or https", redactURL(s))
	}
	if u.Host == "" {
		return fmt.Errorf("%q: no host", redactURL(s))
	}
	if u.User != nil {
		// URLs end up in logs and process listings; credentials do not belong there.
		return fmt.Errorf("%q: put credentials in username/password or api_key, not in the URL", redactURL(s))
	}
	return nil
}

// checkIndexPrefix applies Elasticsearch's index name rules to the prefix,
// leaving room for the date.
func checkIndexPrefix(p string) error {
	switch {
	case p == "":
		return errors.New("empty")
	case len(p) > 200:
		return errors.New("longer than 200 bytes")
	case p != strings.ToLower(p):
		return fmt.Errorf("%q has upper-case letters", p)
	case strings.ContainsAny(p, `\/*?"<>| ,#:`):
		return fmt.Errorf(`%q contains one of \/*?"<>| ,#:`, p)
	case strings.IndexAny(p[:1], "-_+.") == 0:
		return fmt.Errorf("%q starts with one of -_+.", p)
	}
	return nil
}

// credentials returns the password and API key, read from their files when
// given there.
func (c *Config) credentials() (password, apiKey string, err error) {
	password, apiKey = string(c.Password), string(c.APIKey)
	if c.PasswordFile != "" {
		if password, err = readSecret(c.PasswordFile); err != nil {
			return "", "", fmt.Errorf("elasticsearch.password_file: %w", err)
		}
	}
	if c.APIKeyFile != "" {
		if apiKey, err = readSecret(c.APIKeyFile); err != nil {
			return "", "", fmt.Errorf("elasticsearch.api_key_file: %w", err)
		}
	}
	return password, apiKey, nil
}

func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}

// String prints the configuration with secrets redacted.
func (c Config) String() string {
	var b strings.Builder
	b.WriteString("elasticsearch{")
	for i, a := range c.LogValue().Group() {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%v", a.Key, a.Value)
	}
	b.WriteByte('}')
	return b.String()
}

// GoString keeps %#v from printing the secrets.
func (c Config) GoString() string { return c.String() }

// LogValue logs the configuration with secrets redacted.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Any("urls", c.redactedURLs()),
		slog.String("index_prefix", c.IndexPrefix),
		slog.String("username", c.Username),
		slog.Any("password", c.Password),
		slog.String("password_file", c.PasswordFile),
		slog.Any("api_key", c.APIKey),
		slog.String("api_key_file", c.APIKeyFile),
		slog.String("ca_file", c.CAFile),
		slog.Bool("insecure_skip_verify", c.InsecureSkipVerify),
		slog.Int("bulk_bytes", c.BulkBytes),
		slog.Int("workers", c.Workers),
		slog.Duration("flush_interval", c.FlushInterval),
		slog.Duration("timeout", c.Timeout),
		slog.Duration("max_backoff", c.MaxBackoff),
		slog.Int64("queue_bytes", c.QueueBytes),
		slog.String("spool_dir", c.SpoolDir),
		slog.Int64("spool_max_bytes", c.SpoolMaxBytes),
		slog.String("dead_letter_path", c.DeadLetterPath),
		slog.Int64("dead_letter_max_bytes", c.DeadLetterMaxBytes),
		slog.Duration("retention", c.Retention),
		slog.String("observer_hostname", c.ObserverHostname),
	)
}

func (c *Config) redactedURLs() []string {
	urls := make([]string, len(c.URLs))
	for i, u := range c.URLs {
		urls[i] = redactURL(u)
	}
	return urls
}

// redactURL hides a password embedded in a URL; Validate rejects such URLs,
// but they must not be printed on the way.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		if i := strings.LastIndex(s, "@"); i >= 0 {
			return "xxxxx" + s[i:]
		}
		return s
	}
	return u.Redacted()
}

// Secret is a string that never prints: fmt, slog, JSON, YAML and text
// encodings all show "[redacted]" (or "" when empty). YAML and environment
// variables set it like a string.
type Secret string

const redacted = "[redacted]"

func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

func (s Secret) GoString() string              { return strconv.Quote(s.String()) }
func (s Secret) LogValue() slog.Value          { return slog.StringValue(s.String()) }
func (s Secret) MarshalText() ([]byte, error)  { return []byte(s.String()), nil }
func (s Secret) MarshalYAML() (any, error)     { return s.String(), nil }
func (s Secret) Format(f fmt.State, verb rune) { fmt.Fprint(f, s.String()) }
