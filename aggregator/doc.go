// Package aggregator turns per-packet records (bpf.Record) into bidirectional
// flow reports (Flow).
//
// Table is the flow table: single-threaded, driven by the caller's clock
// (record timestamps for Add, an explicit now for Expire), so offline replay
// and unit tests run it deterministically. Aggregator runs one Table per
// shard goroutine and routes each record to its shard by flow key, so the hot
// path takes no locks.
//
// Flows end on the idle timeout, on TCP close (RST, or FIN both ways, after a
// short linger), when a closed TCP tuple is reused by a new SYN, when the table
// is full, or at shutdown. Long flows are reported every active timeout with
// Final false; every report carries only the counts since the previous one.
//
// Expiry costs O(expired flows), not O(table): every flow sits on intrusive
// lists ordered by last packet, by report start and by close time, and Expire
// pops from their old ends. The lists are ordered by arrival, so a record that
// arrives with an older timestamp than records before it can delay the expiry
// of flows behind it by that much; it never makes a flow expire early.
package aggregator
