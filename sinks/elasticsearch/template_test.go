package elasticsearch

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"sort"
	"strings"
	"testing"
)

// templateDigests records the SHA-256 of templateBody("p", "") for each
// templateVersion. Changing the template without bumping the version fails
// TestTemplateVersion: an installed template of the same version would then
// silently stay in place on upgraded sensors.
var templateDigests = map[int]string{
	1: "96d967e62380cda09eab783cec666f3a51cd30d447b33ea338172a4c63cb593b",
}

func TestTemplateVersion(t *testing.T) {
	sum := sha256.Sum256(templateBody("p", ""))
	got := hex.EncodeToString(sum[:])
	if want, ok := templateDigests[templateVersion]; !ok || want != got {
		t.Fatalf("the index template changed (sha256 %s) but templateVersion is still %d: bump it and record the digest in templateDigests", got, templateVersion)
	}
}

// mappedFields flattens mappings.json to dotted paths and their types.
func mappedFields(t *testing.T) map[string]string {
	t.Helper()
	var m struct {
		Dynamic    string         `json:"dynamic"`
		Properties map[string]any `json:"properties"`
	}
	if err := json.Unmarshal(mappingsJSON, &m); err != nil {
		t.Fatal(err)
	}
	if m.Dynamic != "strict" {
		t.Fatalf("mappings: dynamic is %q, want strict", m.Dynamic)
	}
	fields := map[string]string{}
	var walk func(prefix string, props map[string]any)
	walk = func(prefix string, props map[string]any) {
		for name, v := range props {
			def := v.(map[string]any)
			if sub, ok := def["properties"].(map[string]any); ok {
				walk(prefix+name+".", sub)
				continue
			}
			fields[prefix+name] = def["type"].(string)
		}
	}
	walk("", m.Properties)
	return fields
}

// docFields flattens a document to dotted paths and the JSON kinds of their
// values ("string", "number", "bool"; arrays give their elements' kind).
func docFields(t *testing.T, body []byte, into map[string]map[string]bool) {
	t.Helper()
	var d map[string]any
	if err := json.Unmarshal(body, &d); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, sub := range v {
				walk(prefix+"."+k, sub)
			}
			return
		case []any:
			for _, e := range v {
				walk(prefix, e)
			}
			return
		}
		kind := "string"
		switch v.(type) {
		case float64:
			kind = "number"
		case bool:
			kind = "bool"
		case nil:
			kind = "null"
		}
		path := strings.TrimPrefix(prefix, ".")
		if into[path] == nil {
			into[path] = map[string]bool{}
		}
		into[path][kind] = true
	}
	walk("", d)
}

// compatible: the JSON kinds each mapping type takes without coercion.
var compatible = map[string][]string{
	"keyword":    {"string"},
	"ip":         {"string"},
	"date_nanos": {"string"},
	"long":       {"number"},
	"boolean":    {"bool"},
}

// TestTemplateCoversDocuments: every field any document can hold is mapped,
// with a type that takes its values, and every mapped field is used. With
// "dynamic": "strict" this makes mapping conflicts impossible.
func TestTemplateCoversDocuments(t *testing.T) {
	mapped := mappedFields(t)
	seen := map[string]map[string]bool{}
	flows := append(sampleFlows(), genFlows(400, day2, 7)...)
	for i := range flows {
		docFields(t, appendDocument(nil, &flows[i], "sensor"), seen)
	}
	for path, kinds := range seen {
		typ, ok := mapped[path]
		if !ok {
			t.Errorf("documents hold %s, which mappings.json does not map", path)
			continue
		}
		for kind := range kinds {
			if !slices.Contains(compatible[typ], kind) {
				t.Errorf("%s is mapped as %s but documents give it a %s", path, typ, kind)
			}
		}
	}
	var unused []string
	for path := range mapped {
		if seen[path] == nil {
			unused = append(unused, path)
		}
	}
	sort.Strings(unused)
	if len(unused) > 0 {
		t.Errorf("mapped but never written (remove them, or cover them in sampleFlows): %v", unused)
	}
}

func TestTemplateBody(t *testing.T) {
	type body struct {
		IndexPatterns []string `json:"index_patterns"`
		Priority      int      `json:"priority"`
		Version       int      `json:"version"`
		Template      struct {
			Settings map[string]any `json:"settings"`
			Mappings map[string]any `json:"mappings"`
		} `json:"template"`
	}
	var tb body
	if err := json.Unmarshal(templateBody("flows-lab", "flows-lab"), &tb); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tb.IndexPatterns, []string{"flows-lab-*"}) || tb.Version != templateVersion || tb.Priority != 109 {
		t.Errorf("template %+v", tb)
	}
	if tb.Template.Settings["index.lifecycle.name"] != "flows-lab" {
		t.Errorf("settings %v, want the ILM policy", tb.Template.Settings)
	}
	tb = body{}
	if err := json.Unmarshal(templateBody("flows", ""), &tb); err != nil {
		t.Fatal(err)
	}
	if tb.Priority >= 109 || len(tb.Template.Settings) != 0 {
		t.Errorf("shorter prefix: priority %d, settings %v", tb.Priority, tb.Template.Settings)
	}
}
