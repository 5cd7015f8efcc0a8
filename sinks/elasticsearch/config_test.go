package elasticsearch

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func validConfig(t *testing.T) Config {
	c := DefaultConfig()
	c.URLs = []string{"https://es1:9200", "https://es2:9200"}
	c.SetOutputDir(t.TempDir())
	return c
}

// TestSecretsNeverPrinted tries every way a config gets printed.
func TestSecretsNeverPrinted(t *testing.T) {
	const pw, key = "hunter2-pw", "c2VjcmV0LWFwaS1rZXk="
	c := validConfig(t)
	c.Username, c.Password, c.APIKey = "elastic", pw, key

	var outs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
		outs = append(outs, fmt.Sprintf(verb, c), fmt.Sprintf(verb, &c), fmt.Sprintf(verb, c.Password), fmt.Sprintf(verb, c.APIKey))
	}
	outs = append(outs, c.String(), fmt.Sprint(c), fmt.Sprintln(&c))
	var text, js bytes.Buffer
	slog.New(slog.NewTextHandler(&text, nil)).Info("cfg", "config", c, "pointer", &c, "pw", c.Password)
	slog.New(slog.NewJSONHandler(&js, nil)).Info("cfg", "config", c, "key", c.APIKey)
	outs = append(outs, text.String(), js.String())
	j, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	y, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	outs = append(outs, string(j), string(y))
	for i, out := range outs {
		if strings.Contains(out, pw) || strings.Contains(out, key) || strings.Contains(out, "hunter2") {
			t.Errorf("output %d prints a secret: %s", i, out)
		}
	}
	if !strings.Contains(text.String(), "password=[redacted]") || !strings.Contains(c.String(), "username=elastic") {
		t.Errorf("redacted output lost its shape:\n%s\n%s", text.String(), c.String())
	}
	// Empty secrets print as empty, not as "[redacted]".
	if got := fmt.Sprint(Secret("")); got != "" {
		t.Errorf("empty secret prints %q", got)
	}
	// And YAML still reads them as plain strings.
	var back struct {
		Password Secret `yaml:"password"`
	}
	if err := yaml.Unmarshal([]byte("password: s3cret\n"), &back); err != nil || string(back.Password) != "s3cret" {
		t.Errorf("yaml decode: %q, %v", string(back.Password), err)
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		change func(*Config)
		want   string // substring of the error; "" for valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"off", func(c *Config) { c.URLs = nil; c.SpoolDir = "" }, ""},
		{"scheme", func(c *Config) { c.URLs = []string{"es1:9200"} }, "elasticsearch.urls"},
		{"no host", func(c *Config) { c.URLs = []string{"http://"} }, "elasticsearch.urls"},
		{"credentials in url", func(c *Config) { c.URLs = []string{"https://u:hunter2@es:9200"} }, "not in the URL"},
		{"prefix case", func(c *Config) { c.IndexPrefix = "Flows" }, "elasticsearch.index_prefix"},
		{"prefix char", func(c *Config) { c.IndexPrefix = "flows*" }, "elasticsearch.index_prefix"},
		{"prefix start", func(c *Config) { c.IndexPrefix = "-flows" }, "elasticsearch.index_prefix"},
		{"two passwords", func(c *Config) { c.Username, c.Password, c.PasswordFile = "u", "p", pwFile }, "elasticsearch.password_file"},
		{"password without user", func(c *Config) { c.Password = "p" }, "elasticsearch.username"},
		{"key and user", func(c *Config) { c.Username, c.APIKey = "u", "k" }, "elasticsearch.api_key"},
		{"missing file", func(c *Config) { c.APIKeyFile = filepath.Join(dir, "nope") }, "elasticsearch.api_key_file"},
		{"missing ca", func(c *Config) { c.CAFile = filepath.Join(dir, "nope") }, "elasticsearch.ca_file"},
		{"bulk bytes", func(c *Config) { c.BulkBytes = 200 << 20 }, "elasticsearch.bulk_bytes"},
		{"workers", func(c *Config) { c.Workers = 0 }, "elasticsearch.workers"},
		{"queue", func(c *Config) { c.QueueBytes = 10 }, "elasticsearch.queue_bytes"},
		{"spool size", func(c *Config) { c.SpoolMaxBytes = 0 }, "elasticsearch.spool_max_bytes"},
		{"flush", func(c *Config) { c.FlushInterval = 0 }, "elasticsearch.flush_interval"},
		{"timeout", func(c *Config) { c.Timeout = time.Millisecond }, "elasticsearch.timeout"},
		{"retention", func(c *Config) { c.Retention = time.Minute }, "elasticsearch.retention"},
		{"spool dir", func(c *Config) { c.SpoolDir = "" }, "elasticsearch.spool_dir"},
		{"dead letter", func(c *Config) { c.DeadLetterPath = "" }, "elasticsearch.dead_letter_path"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := validConfig(t)
			c.change(&cfg)
			err := cfg.Validate()
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("error %v, want one naming %s", err, c.want)
			case err != nil && strings.Contains(err.Error(), "hunter2"):
				t.Fatalf("error prints the password: %v", err)
			}
		})
	}
}

func TestSecretFiles(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key")
	if err := os.WriteFile(keyFile, []byte("a2V5\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := DefaultConfig()
	c.SetOutputDir(dir)
	c.URLs, c.APIKeyFile = []string{"http://a:9200"}, keyFile
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	_, key, err := c.credentials()
	if err != nil || key != "a2V5" {
		t.Fatalf("api key from file: %q, %v", key, err)
	}
	if c.SpoolDir != filepath.Join(dir, "es-spool") || c.DeadLetterPath != filepath.Join(dir, "es-dead-letter.ndjson") {
		t.Errorf("paths %s %s", c.SpoolDir, c.DeadLetterPath)
	}
}
