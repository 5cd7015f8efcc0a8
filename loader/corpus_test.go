package loader

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flowsensor/flowsensor/bpf"
	"github.com/flowsensor/flowsensor/capture"
	"github.com/flowsensor/flowsensor/internal/corpus"
)

// maxTestRunFrame is what BPF_PROG_TEST_RUN accepts for XDP (a page less
// head and tail room). Longer frames (captures from hosts with GRO) are
// compared on their first maxTestRunFrame bytes, in both parsers.
const maxTestRunFrame = 3000

// TestDifferentialCorpus runs every frame of every corpus capture through the
// XDP program (BPF_PROG_TEST_RUN) and through its Go twin, and requires the
// same verdict, record and counters. Frames of other link types are given to
// the kernel behind a synthetic Ethernet header carrying their ethertype.
func TestDifferentialCorpus(t *testing.T) {
	dir, shared := corpus.Dir()
	if !shared {
		t.Logf("shared corpus not present: using the copy in testdata/corpus")
	}
	compareCaptures(t, dir, true)
}

// TestDifferentialOwnCaptures does the same for a folder of the user's
// captures: FLOWSENSOR_ORACLE_DIR=/some/pcaps go test -run OwnCaptures
// ./loader/. Damaged files are compared up to the damage; frames of link
// types flowsensor does not read are left out.
func TestDifferentialOwnCaptures(t *testing.T) {
	dir := os.Getenv("FLOWSENSOR_ORACLE_DIR")
	if dir == "" {
		t.Skip("set FLOWSENSOR_ORACLE_DIR to a folder of captures to compare the two parsers on")
	}
	compareCaptures(t, dir, false)
}

// TestDifferentialUnseen does the same on testdata/unseen, captures from
// other projects' test suites.
func TestDifferentialUnseen(t *testing.T) {
	compareCaptures(t, filepath.Join(corpus.RepoRoot(), "testdata", "unseen"), true)
}

// compareCaptures compares every frame of every capture in dir. With strict,
// every file must read to its end (but the corrupt-* ones) and every link
// type must be supported; otherwise files are compared up to any damage and
// frames of unsupported link types are skipped.
func compareCaptures(t *testing.T, dir string, strict bool) {
	p := loadTestProgram(t, Options{RingBytes: 1 << 20, Batch: 1}) // exact per frame: no batching
	captures, err := corpus.Captures(dir)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, path := range captures {
		t.Run(filepath.Base(path), func(t *testing.T) {
			mayFail := !strict || strings.HasPrefix(filepath.Base(path), "corrupt-")
			r, err := capture.Open(path)
			if err != nil {
				if mayFail {
					t.Skipf("unreadable: %v", err)
				}
				t.Fatal(err)
			}
			defer r.Close()
			var pkt capture.Packet
			for i := 1; ; i++ {
				err := r.Next(&pkt)
				if err == io.EOF || err != nil && mayFail {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if !strict && !capture.Supported(pkt.LinkType) {
					continue
				}
				compareFrame(t, p, i, &pkt)
				total++
				if t.Failed() {
					return // one mismatch explains the rest
				}
			}
		})
	}
	t.Logf("%d frames compared", total)
}

func compareFrame(t *testing.T, p *testProgram, i int, pkt *capture.Packet) {
	t.Helper()
	data := pkt.Data
	if len(data) > maxTestRunFrame {
		data = data[:maxTestRunFrame]
	}
	var frame []byte
	var goRec bpf.Record
	var goOut bpf.Counter
	if pkt.LinkType == capture.LinkTypeEthernet {
		if len(data) < 14 {
			return // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header
		}
		frame = data
		goOut = bpf.Decode(frame, &goRec)
	} else {
		etherType, payload, ok, supported := capture.L3(pkt.LinkType, data)
		if !supported {
			t.Fatalf("frame %d: link type %v not supported", i, pkt.LinkType)
		}
		if !ok {
			return // the link header itself is cut short: nothing for the kernel to see
		}
		frame = capture.EthernetFrame(etherType, payload)
		goOut = bpf.DecodeEtherType(etherType, payload, &goRec)
	}
	var want bpf.Counters
	want.Count(goOut, &goRec)

	res := p.run(t, frame)
	if res.verdict != xdpPass {
		t.Errorf("frame %d: verdict %d", i, res.verdict)
	}
	if res.delta != want {
		t.Errorf("frame %d: kernel counters %v, Go %v", i, nonZero(res.delta), nonZero(want))
	}
	if goOut != bpf.CounterEmitted {
		return
	}
	if len(res.records) != 1 {
		t.Fatalf("frame %d: %d kernel records", i, len(res.records))
	}
	k := res.records[0]
	k.Ts, k.Ifindex, k.WireLen = 0, 0, 0
	goRec.WireLen = 0
	if k != goRec {
		t.Errorf("frame %d (% x):\nkernel %+v\n    go %+v", i, frame[:min(len(frame), 64)], k, goRec)
	}
}
