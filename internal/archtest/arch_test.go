// Package archtest checks that package dependencies point the way DESIGN.md
// draws them. It holds tests only.
package archtest

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/flowsensor/flowsensor"

// allowed lists, per package (path below the module), the non-standard
// imports its production code may use, as path prefixes. Packages not listed
// may import nothing outside the standard library.
var allowed = map[string][]string{
	"bpf":        {},
	"loader":     {module + "/bpf", "github.com/cilium/ebpf", "github.com/vishvananda/netlink", "golang.org/x/sys"},
	"aggregator": {module + "/bpf"},
	"pcapwriter": {module + "/bpf", "github.com/gopacket/gopacket"},
	"capture":    {module + "/bpf"}, // offline input: capture files (see TestBinaryWithoutGopacketLayers)
	"sinks":      {module + "/aggregator"},
	"sinks/":     {module + "/aggregator", module + "/sinks", "github.com/parquet-go/parquet-go", "github.com/elastic/go-elasticsearch"},
	"cmd/":       {"*"}, // wires everything together
}

type pkg struct {
	ImportPath string
	Imports    []string
	Standard   bool
}

func TestDependencyDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-json", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		if strings.HasPrefix(rel, "internal/") {
			continue // test helpers; checked from the other side below
		}
		rules, ok := allowed[rel]
		if !ok {
			for prefix, r := range allowed {
				if strings.HasSuffix(prefix, "/") && strings.HasPrefix(rel, prefix) {
					rules, ok = r, true
				}
			}
		}
		if !ok {
			t.Errorf("%s: package not in the dependency table of DESIGN.md (add it to archtest)", rel)
			continue
		}
		for _, imp := range p.Imports {
			if !strings.Contains(strings.Split(imp, "/")[0], ".") {
				continue // standard library
			}
			if strings.HasPrefix(imp, module+"/internal/") {
				t.Errorf("%s imports test helper %s", rel, imp)
				continue
			}
			if strings.HasPrefix(imp, module+"/cmd") {
				t.Errorf("%s imports %s: nothing imports cmd", rel, imp)
				continue
			}
			if !permitted(imp, rules) {
				t.Errorf("%s imports %s, which DESIGN.md does not allow", rel, imp)
			}
		}
	}
}

// TestBinaryWithoutGopacketLayers: gopacket/layers initialises 5 MB of
// pointer tables, which every flowsensor process would pay for at start-up
// (about 2 ms, a tenth of a small replay) and every garbage collection would
// scan. The tests use gopacket to craft frames and as a second pcapng reader;
// the binary must not link it.
func TestBinaryWithoutGopacketLayers(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", module+"/cmd/flowsensor").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "github.com/gopacket/gopacket") {
			t.Errorf("the flowsensor binary links %s", dep)
		}
	}
}

func permitted(imp string, prefixes []string) bool {
	for _, p := range prefixes {
		if p == "*" || imp == p || strings.HasPrefix(imp, strings.TrimSuffix(p, "/")+"/") || strings.HasSuffix(p, "/") && strings.HasPrefix(imp, p) {
			return true
		}
	}
	return false
}
