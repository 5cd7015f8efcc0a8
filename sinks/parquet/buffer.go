package parquet

import (
	"sync"

	"github.com/flowsensor/flowsensor/aggregator"
)

// chunkLen is the number of flows per buffer chunk, about 750 KB.
const chunkLen = 4096

// chunks recycles buffer chunks between partitions: each hour gets a new
// partition, and a million-row partition would otherwise be regrown, and
// copied, from nothing.
var chunks = sync.Pool{New: func() any { return new([chunkLen]aggregator.Flow) }}

// buffer is a FIFO of flows held in fixed-size chunks, so that it grows
// without copying and without a transient second copy of itself.
type buffer struct {
	chunks [][]aggregator.Flow // all full but the last
	head   int                 // flows of chunks[0] already removed
	n      int
}

func (b *buffer) len() int { return b.n }

func (b *buffer) append(flows []aggregator.Flow) {
	b.n += len(flows)
	for len(flows) > 0 {
		last := len(b.chunks) - 1
		if last < 0 || len(b.chunks[last]) == chunkLen {
			b.chunks = append(b.chunks, chunks.Get().(*[chunkLen]aggregator.Flow)[:0])
			last++
		}
		k := min(len(flows), chunkLen-len(b.chunks[last]))
		b.chunks[last] = append(b.chunks[last], flows[:k]...)
		flows = flows[k:]
	}
}

// visit calls fn with the first n flows, in order, a chunk at a time.
func (b *buffer) visit(n int, fn func([]aggregator.Flow) error) error {
	head := b.head
	for _, c := range b.chunks {
		if n == 0 {
			break
		}
		c = c[head:min(len(c), head+n)]
		if err := fn(c); err != nil {
			return err
		}
		n -= len(c)
		head = 0
	}
	return nil
}

// drop removes the first n flows and recycles the chunks it empties.
func (b *buffer) drop(n int) {
	b.n -= n
	for n > 0 {
		c := b.chunks[0]
		k := min(n, len(c)-b.head)
		b.head += k
		n -= k
		if b.head == len(c) {
			clear(c) // release Interface strings before pooling
			chunks.Put((*[chunkLen]aggregator.Flow)(c[:chunkLen]))
			b.chunks[0] = nil
			b.chunks = b.chunks[1:]
			b.head = 0
		}
	}
}
