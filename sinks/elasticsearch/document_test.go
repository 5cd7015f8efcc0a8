package elasticsearch

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestDocument pins the document of the first sample flow field by field.
func TestDocument(t *testing.T) {
	f := sampleFlows()[0]
	var got map[string]any
	if err := json.Unmarshal(appendDocument(nil, &f, "sensor1"), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"@timestamp": "2024-02-29T23:59:30.123456789Z",
		"ecs":        map[string]any{"version": ecsVersion},
		"event": map[string]any{
			"kind": "event", "category": []any{"network"}, "type": []any{"connection"}, "dataset": "flowsensor.flow",
			"start": "2024-02-29T23:59:30.123456789Z", "end": "2024-02-29T23:59:30.373456789Z",
			"duration": 250e6, "reason": "tcp_close",
		},
		"flow":        map[string]any{"id": "0000000000000001", "final": true},
		"source":      map[string]any{"ip": "192.0.2.1", "port": 51234.0, "packets": 10.0, "bytes": 1500.0},
		"destination": map[string]any{"ip": "198.51.100.7", "port": 443.0, "packets": 8.0, "bytes": 9000.0},
		"network": map[string]any{
			"type": "ipv4", "transport": "tcp", "iana_number": "6", "packets": 18.0, "bytes": 10500.0,
			"community_id": "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
		},
		"observer": map[string]any{"hostname": "sensor1", "ingress": map[string]any{"interface": map[string]any{"name": "eth0", "id": "2"}}},
		"related":  map[string]any{"ip": []any{"192.0.2.1", "198.51.100.7"}},
		"flowsensor": map[string]any{
			"seq":         0.0,
			"source":      map[string]any{"tcp_flags": []any{"fin", "syn", "psh", "ack"}, "tcp_flags_value": 27.0},
			"destination": map[string]any{"tcp_flags": []any{"fin", "syn", "rst", "psh", "ack", "urg", "ece", "cwr"}, "tcp_flags_value": 255.0},
		},
	}
	if !reflect.DeepEqual(got, want) {
		g, _ := json.MarshalIndent(got, "", " ")
		w, _ := json.MarshalIndent(want, "", " ")
		t.Errorf("document:\n%s\nwant:\n%s", g, w)
	}
}

// TestDocumentShapes checks the branches: IPv4-mapped addresses unmapped,
// ICMP type/code instead of ports, VLAN tags as strings, unknown protocol
// numbers, and that every document is valid JSON.
func TestDocumentShapes(t *testing.T) {
	flows := sampleFlows()
	docs := make([]map[string]any, len(flows))
	for i := range flows {
		b := appendDocument(nil, &flows[i], "h")
		if !json.Valid(b) {
			t.Fatalf("flow %d: invalid JSON %s", i, b)
		}
		if err := json.Unmarshal(b, &docs[i]); err != nil {
			t.Fatal(err)
		}
	}
	get := func(d map[string]any, path string) any {
		var v any = d
		for _, k := range strings.Split(path, ".") {
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		}
		return v
	}
	for _, c := range []struct {
		doc  int
		path string
		want any
	}{
		{1, "flow.id", "fedcba9876543210"},
		{1, "flow.final", false},
		{1, "source.bytes", float64(1 << 50)},
		{1, "network.type", "ipv6"},
		{1, "event.reason", "active"},
		{1, "flowsensor.seq", 3.0},
		{2, "source.ip", "203.0.113.9"},
		{2, "source.port", nil},
		{2, "flowsensor.icmp", map[string]any{"type": 8.0, "code": 0.0}},
		{2, "network.transport", "icmp"},
		{3, "network.transport", "ipv6-icmp"},
		{3, "network.iana_number", "58"},
		{3, "flowsensor.icmp", map[string]any{"type": 128.0, "code": 3.0}},
		{3, "@timestamp", "2024-03-01T00:15:01.000000001Z"},
		{3, "observer.ingress.interface", map[string]any{"name": "eth1"}},
		{4, "network.vlan.id", "100"},
		{4, "network.inner.vlan.id", "4094"},
		{4, "network.transport", "sctp"},
		{4, "destination.port", 2905.0},
		{4, "flowsensor.source", nil}, // flags only for TCP
		{4, "observer.ingress.interface", map[string]any{"name": "bond0.100", "id": "7"}},
		{5, "network.transport", "gre"},
		{5, "event.reason", "unknown"},
		{5, "related.ip", []any{"192.0.2.2"}},
		{5, "observer.ingress", nil},
		{5, "destination.packets", 0.0},
		{6, "network.transport", "253"},
		{6, "observer.ingress.interface.name", "we\"ird\\\x01\ufffd"},
		{6, "event.duration", 1000.0},
	} {
		if got := get(docs[c.doc], c.path); !reflect.DeepEqual(got, c.want) {
			t.Errorf("flow %d %s = %#v, want %#v", c.doc, c.path, got, c.want)
		}
	}
}

func TestDocIDAndIndex(t *testing.T) {
	flows := sampleFlows()
	if got := docID(&flows[0]); got != "0000000000000001-0" {
		t.Errorf("docID = %q", got)
	}
	if got := docID(&flows[1]); got != "fedcba9876543210-3" {
		t.Errorf("docID = %q", got)
	}
	if got := indexDay(flows[3].Start); got != "2024.03.01" {
		t.Errorf("index day of a CET start = %q, want the UTC day", got)
	}
	if got := indexDay(flows[0].Start); got != "2024.02.29" {
		t.Errorf("index day = %q", got)
	}
}

// TestAppendString agrees with encoding/json on every string, including
// control characters and invalid UTF-8.
func TestAppendString(t *testing.T) {
	for _, s := range []string{"", "eth0", `a"b\c`, "tab\tnl\nlf\rnul\x00\x1f", "ünïcødé ☃", "bad\xffutf8\xc3", "\u2028", strings.Repeat("x", 300)} {
		var got string
		if err := json.Unmarshal(appendString(nil, s), &got); err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		if want := strings.ToValidUTF8(s, string(utf8.RuneError)); got != want {
			t.Errorf("round trip of %q = %q, want %q", s, got, want)
		}
	}
}

func FuzzAppendDocument(f *testing.F) {
	f.Add("eth0", "1:abc=", "host")
	f.Add("\xff\x00\"", "", "\\")
	f.Fuzz(func(t *testing.T, iface, cid, host string) {
		fl := sampleFlows()[0]
		fl.Interface, fl.CommunityID = iface, cid
		if b := appendDocument(nil, &fl, host); !json.Valid(b) {
			t.Fatalf("invalid JSON: %s", b)
		}
	})
}

// The json.Marshal twin of the document, for BenchmarkEncode's comparison.
type jsonDoc struct {
	Timestamp string `json:"@timestamp"`
	ECS       struct {
		Version string `json:"version"`
	} `json:"ecs"`
	Event struct {
		Kind     string   `json:"kind"`
		Category []string `json:"category"`
		Type     []string `json:"type"`
		Dataset  string   `json:"dataset"`
		Start    string   `json:"start"`
		End      string   `json:"end"`
		Duration int64    `json:"duration"`
		Reason   string   `json:"reason"`
	} `json:"event"`
	Flow struct {
		ID    string `json:"id"`
		Final bool   `json:"final"`
	} `json:"flow"`
	Source, Destination struct {
		IP      string `json:"ip"`
		Port    uint16 `json:"port"`
		Packets uint64 `json:"packets"`
		Bytes   uint64 `json:"bytes"`
	}
	Network struct {
		Type        string `json:"type"`
		Transport   string `json:"transport"`
		IANANumber  string `json:"iana_number"`
		Packets     uint64 `json:"packets"`
		Bytes       uint64 `json:"bytes"`
		CommunityID string `json:"community_id,omitempty"`
	} `json:"network"`
	Observer struct {
		Hostname string `json:"hostname"`
	} `json:"observer"`
}

func BenchmarkEncode(b *testing.B) {
	flows := genFlows(1024, day2, 1)
	b.Run("append", func(b *testing.B) {
		buf := make([]byte, 0, 1<<20)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			buf = appendDocument(buf[:0], &flows[i%len(flows)], "sensor1")
			i++
		}
		b.ReportMetric(float64(len(buf)), "B/doc")
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			f := &flows[i%len(flows)]
			var d jsonDoc
			d.Timestamp = f.Start.UTC().Format("2006-01-02T15:04:05.000000000Z")
			d.ECS.Version = ecsVersion
			d.Event.Kind, d.Event.Category, d.Event.Type, d.Event.Dataset = "event", []string{"network"}, []string{"connection"}, "flowsensor.flow"
			d.Event.Start, d.Event.End = d.Timestamp, f.End.UTC().Format("2006-01-02T15:04:05.000000000Z")
			d.Event.Duration, d.Event.Reason = int64(f.End.Sub(f.Start)), f.EndReason.String()
			d.Flow.ID, d.Flow.Final = string(appendHex16(nil, f.ID)), f.Final
			d.Source.IP, d.Source.Port, d.Source.Packets, d.Source.Bytes = f.Src.Unmap().String(), f.SrcPort, f.SrcPackets, f.SrcBytes
			d.Destination.IP, d.Destination.Port, d.Destination.Packets, d.Destination.Bytes = f.Dst.Unmap().String(), f.DstPort, f.DstPackets, f.DstBytes
			d.Network.Type, d.Network.Transport, d.Network.IANANumber = "ipv4", transports[f.Protocol], "6"
			d.Network.Packets, d.Network.Bytes, d.Network.CommunityID = f.Packets(), f.Bytes(), f.CommunityID
			d.Observer.Hostname = "sensor1"
			if _, err := json.Marshal(&d); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}
