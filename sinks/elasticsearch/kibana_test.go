package elasticsearch

import (
	"bufio"
	"encoding/json"
	"os"
	"slices"
	"testing"
)

const kibanaObjects = "../../deploy/kibana/flowsensor.ndjson"

type savedObject struct {
	ID         string         `json:"id"`
	Type       string         `json:"type"`
	Attributes map[string]any `json:"attributes"`
	References []reference    `json:"references"`
}

type reference struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Type string `json:"type"`
}

// lensTypes: the Lens column data type each mapping type shows as.
var lensTypes = map[string]string{"ip": "ip", "long": "number", "keyword": "string", "date_nanos": "date", "boolean": "boolean"}

// TestKibanaObjects parses deploy/kibana/flowsensor.ndjson and checks that
// the data view, the Lens visualizations and the dashboard reference only
// fields the index template maps (with the types it gives them) and only
// objects the file holds.
func TestKibanaObjects(t *testing.T) {
	mapped := mappedFields(t)
	f, err := os.Open(kibanaObjects)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	objs := map[string]savedObject{}
	var order []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var o savedObject
		if err := json.Unmarshal(sc.Bytes(), &o); err != nil {
			t.Fatalf("line %d: %v", len(order)+1, err)
		}
		if o.ID == "" || o.Type == "" || o.Attributes == nil {
			t.Fatalf("line %d: no id, type or attributes", len(order)+1)
		}
		objs[o.Type+"/"+o.ID] = o
		order = append(order, o.Type+"/"+o.ID)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}

	dv, ok := objs["index-pattern/flowsensor-flows"]
	if !ok {
		t.Fatalf("no data view flowsensor-flows among %v", order)
	}
	if dv.Attributes["title"] != DefaultIndexPrefix+"-*" {
		t.Errorf("data view pattern %v, want %s-*", dv.Attributes["title"], DefaultIndexPrefix)
	}
	if tf, _ := dv.Attributes["timeFieldName"].(string); mapped[tf] != "date_nanos" {
		t.Errorf("data view time field %q is not a mapped date", tf)
	}
	var formats map[string]any
	if err := json.Unmarshal([]byte(dv.Attributes["fieldFormatMap"].(string)), &formats); err != nil {
		t.Fatal(err)
	}
	for field := range formats {
		if mapped[field] == "" {
			t.Errorf("data view formats unmapped field %s", field)
		}
	}

	lenses := 0
	for _, key := range order {
		o := objs[key]
		if o.Type != "lens" {
			continue
		}
		lenses++
		state := o.Attributes["state"].(map[string]any)
		layers := state["datasourceStates"].(map[string]any)["formBased"].(map[string]any)["layers"].(map[string]any)
		for layerID, l := range layers {
			if !slices.ContainsFunc(o.References, func(r reference) bool {
				return r.Name == "indexpattern-datasource-layer-"+layerID && r.Type == "index-pattern" && r.ID == dv.ID
			}) {
				t.Errorf("%s: layer %s does not reference data view %s", o.ID, layerID, dv.ID)
			}
			layer := l.(map[string]any)
			cols := layer["columns"].(map[string]any)
			for _, id := range layer["columnOrder"].([]any) {
				if cols[id.(string)] == nil {
					t.Errorf("%s: column order names missing column %v", o.ID, id)
				}
			}
			for colID, c := range cols {
				col := c.(map[string]any)
				field, _ := col["sourceField"].(string)
				if field == "___records___" {
					continue
				}
				typ, ok := mapped[field]
				if !ok {
					t.Errorf("%s: column %s uses %q, which the template does not map", o.ID, colID, field)
					continue
				}
				want := lensTypes[typ]
				if col["operationType"] == "sum" || col["operationType"] == "unique_count" {
					want = "number"
				}
				if col["dataType"] != want {
					t.Errorf("%s: column %s on %s (%s) has data type %v, want %s", o.ID, colID, field, typ, col["dataType"], want)
				}
				if params, ok := col["params"].(map[string]any); ok {
					if orderBy, ok := params["orderBy"].(map[string]any); ok && orderBy["type"] == "column" && cols[orderBy["columnId"].(string)] == nil {
						t.Errorf("%s: column %s orders by missing column %v", o.ID, colID, orderBy["columnId"])
					}
				}
			}
		}
	}
	if lenses != 4 {
		t.Errorf("%d Lens visualizations, want 4", lenses)
	}

	dash, ok := objs["dashboard/flowsensor-flows-dashboard"]
	if !ok {
		t.Fatal("no dashboard")
	}
	var panels []struct {
		PanelIndex   string `json:"panelIndex"`
		PanelRefName string `json:"panelRefName"`
		Type         string `json:"type"`
	}
	if err := json.Unmarshal([]byte(dash.Attributes["panelsJSON"].(string)), &panels); err != nil {
		t.Fatal(err)
	}
	var shown []string
	for _, p := range panels {
		i := slices.IndexFunc(dash.References, func(r reference) bool {
			return r.Name == p.PanelIndex+":"+p.PanelRefName
		})
		if i < 0 {
			t.Errorf("panel %s: no reference %s:%s", p.PanelIndex, p.PanelIndex, p.PanelRefName)
			continue
		}
		r := dash.References[i]
		if _, ok := objs[r.Type+"/"+r.ID]; !ok || r.Type != p.Type {
			t.Errorf("panel %s refers to %s/%s, not in the file", p.PanelIndex, r.Type, r.ID)
		}
		shown = append(shown, r.ID)
	}
	slices.Sort(shown)
	want := []string{"flowsensor-bytes-by-port", "flowsensor-flows-by-vlan", "flowsensor-protocols-over-time", "flowsensor-top-talkers"}
	if !slices.Equal(shown, want) {
		t.Errorf("dashboard shows %v, want %v", shown, want)
	}
}
