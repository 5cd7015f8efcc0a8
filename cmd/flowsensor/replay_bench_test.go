package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/flowsensor/flowsensor/internal/corpus"
)

// BenchmarkReplay measures replay in-process (no process start-up): reading,
// decoding, the flow table and the Parquet output, in packets/s and MB/s.
func BenchmarkReplay(b *testing.B) {
	dir, ok := corpus.SharedDir()
	if !ok {
		b.Skip("needs the shared corpus")
	}
	for _, name := range []string{"large-tumblr-ipv6.pcap", "many-flows-cip-ics.pcap"} {
		path := filepath.Join(dir, name)
		st, err := os.Stat(path)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(st.Size())
			for b.Loop() {
				cfg := DefaultConfig()
				cfg.Out = b.TempDir()
				if err := runReplay(context.Background(), cfg, []string{path}, false, io.Discard); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
