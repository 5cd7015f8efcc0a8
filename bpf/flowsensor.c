//go:build ignore

/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * flowsensor XDP program: parse every frame and emit one struct fs_record per
 * IP packet into a ring buffer. It never changes a packet and always returns
 * XDP_PASS. Written for kernels >= 5.15 (ring buffer, bounded loops).
 *
 * With batch_size > 1 (kernels >= 6.7, see "Batching" below) each CPU gathers
 * records in its own slot of fs_stage and writes them to the ring buffer as one
 * sample of batch_size records; a CPU-pinned timer writes a partial batch
 * flush_ns after its first record.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "record.h"

char __license[] SEC("license") = "Dual MIT/GPL";

/*
 * Set by the loader before load. The verifier sees them as constants, so
 * disabled branches cost nothing.
 *
 * wakeup_bytes: submit without waking the reader, except when the producer
 * position crosses a multiple of this many bytes (a power of two); the reader
 * also polls on a timer. Waking per record costs ~5 us in this VM and halves
 * the packet rate (KERNEL-NOTES.md). 0 leaves wakeups to the kernel.
 */
volatile const __u32 wakeup_bytes = 1024 * 1024;

/*
 * Reading the clock (bpf_ktime_get_ns) costs more than parsing a packet in a
 * VM (30 ns measured here, KERNEL-NOTES.md). Each CPU reads it for every
 * packet until it has seen exact_per_tick packets in the current jiffy; past
 * that rate it reads it every clock_every packets and the packets in between
 * share the last reading, so a timestamp lags by at most clock_every - 1
 * packet gaps. clock_every = 1 reads the clock for every packet.
 */
volatile const __u32 exact_per_tick = 64;
volatile const __u32 clock_every = 16;

/*
 * Records per ring sample (1..FS_BATCH_MAX). 1 reserves a ring slot per
 * record and leaves every batching branch dead, so the verifier never sees
 * the timer code: the loader sets 1 on kernels without BPF_F_TIMER_CPU_PIN.
 * flush_ns bounds how long a record waits in a partial batch.
 */
volatile const __u32 batch_size = 1;
volatile const __u64 flush_ns = 1000000;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20); /* the loader may resize it */
} fs_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, FS_CNT_MAX);
} fs_counters SEC(".maps");

/* Per-CPU state of the clock cache and the wakeup policy. */
struct fs_cpu {
	__u64 clock_ns;      /* last bpf_ktime_get_ns() reading */
	__u64 jiffies;       /* tick of tick_packets */
	__u64 ring_bytes;    /* bytes this CPU submitted, for the wakeup policy */
	__u32 tick_packets;  /* packets seen in that tick */
	__u32 since_clock;   /* packets since the last reading */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct fs_cpu);
	__uint(max_entries, 1);
} fs_cpu SEC(".maps");

/*
 * Batching. Each CPU owns one slot of fs_stage (indexed by
 * bpf_get_smp_processor_id(); a bpf_timer cannot live in a per-CPU map, so
 * this is an array with one entry per possible CPU, sized by the loader). The
 * program parses into recs[n]; at n == batch_size it writes recs[0..n) with
 * one bpf_ringbuf_output. The first record staged while no timer is pending
 * arms the slot's timer, pinned to this CPU (BPF_F_TIMER_CPU_PIN), for
 * flush_ns; its callback writes whatever is staged. So a record waits at most
 * flush_ns, and a busy CPU restarts its timer once per flush_ns, not per batch.
 *
 * Concurrency: only the owning CPU touches a slot. XDP runs with bottom halves
 * disabled (NAPI, generic XDP, and BPF_PROG_TEST_RUN since 6.4: "bpf: Disable
 * bh in bpf_test_run for xdp and tc prog"; batching needs 6.7 anyway) and the
 * timer callback runs in softirq on the pinned CPU, so the two never
 * interleave there. Should the program ever run with BH enabled, or be
 * preempted mid-update, busy marks the slot: an invocation that finds it set
 * writes its record directly instead, and a callback that finds it set
 * retries flush_ns later, so no record is written twice or lost. (It costs
 * nothing measurable.) A CPU going offline hands its pending timer to another
 * CPU, whose callback then writes a slot no invocation can touch any more.
 *
 * Order: records of one CPU stay in order; records of different CPUs reach
 * the ring up to flush_ns out of order (user space goes by ts_ns).
 *
 * Counters: a staged record is counted nowhere yet; at the flush it goes
 * into FS_CNT_SEEN and FS_CNT_EMITTED (with its TRUNC_L4/FRAGMENTS/EXT_LIMIT),
 * or FS_CNT_SEEN and FS_CNT_RINGBUF_FULL when the batch does not fit. So the
 * outcome counters always sum to FS_CNT_SEEN, and a staged record costs no
 * counter update of its own. User space sees staged records in fs_stage.n.
 */
struct fs_stage {
	struct bpf_timer timer;
	struct fs_cpu cpu;     /* clock cache and wakeup bytes of the batched path */
	__u32 n;               /* records staged in recs */
	__u32 busy;            /* an invocation is updating this slot */
	__u32 armed;           /* the timer is pending */
	__u32 timer_ready;     /* bpf_timer_init and set_callback done */
	__u32 trunc_l4;        /* staged records with FS_REC_L4_TRUNCATED */
	__u32 fragments;       /* staged fragments */
	__u32 ext_limit;       /* staged records with FS_REC_EXT_LIMIT */
	__u32 _pad;
	struct fs_record recs[FS_BATCH_MAX];
} __attribute__((aligned(64))); /* no cache line shared between two CPUs' counts */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct fs_stage);
	__uint(max_entries, 1); /* the loader sets the number of possible CPUs */
} fs_stage SEC(".maps");

/* Force BTF for the types user space mirrors (bpf2go -type). */
const struct fs_record *unused_fs_record __attribute__((unused));
const enum fs_counter *unused_fs_counter __attribute__((unused));

/* Bytes a record occupies in the ring: 8-byte header plus the record. */
#define FS_RB_SLOT (8 + sizeof(struct fs_record))

#define CLOCK_MONOTONIC_ 1
#define BPF_F_TIMER_CPU_PIN_ (1ULL << 1) /* enum in uapi >= 6.7, not in older headers */

#define barrier() asm volatile("" ::: "memory")

#define ETH_P_8021AD_ 0x88A8
#define ETH_P_QINQ9100 0x9100
#define ETH_P_PPP_SES_ 0x8864
#define ETH_P_MPLS_UC_ 0x8847
#define ETH_P_MPLS_MC_ 0x8848
#define PPP_IP 0x0021
#define PPP_IPV6 0x0057

#define IPPROTO_HOPOPTS_ 0
#define IPPROTO_ROUTING_ 43
#define IPPROTO_FRAGMENT_ 44
#define IPPROTO_AH_ 51
#define IPPROTO_ICMPV6_ 58
#define IPPROTO_DSTOPTS_ 60

static __always_inline void count_n(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&fs_counters, &idx);

	if (v)
		*v += n;
}

static __always_inline void count(__u32 idx)
{
	count_n(idx, 1);
}

/*
 * Wake the reader only each time this CPU's queued bytes cross a multiple of
 * wakeup_bytes.
 */
static __always_inline __u64 wakeup_flags(__u64 *ring_bytes, __u32 len)
{
	if (!wakeup_bytes)
		return 0;
	__u64 old = *ring_bytes;
	__u64 new = old + len;
	*ring_bytes = new;
	return ((old ^ new) & ~(__u64)(wakeup_bytes - 1)) ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

/* Outcome of parsing one frame: FS_CNT_EMITTED means "emit a record". */
static __always_inline __u32 parse(void *pos, void *end, struct fs_record *rec)
{
	__u16 proto;
	__u8 nh;

	/* Ethernet: 14 bytes, ethertype at 12. */
	if (pos + ETH_HLEN > end)
		return FS_CNT_TRUNC_L2;
	proto = *(__u16 *)(pos + 12);
	pos += ETH_HLEN;

	/* 802.1Q / 802.1ad tags: 2-byte TCI then the next ethertype. */
#pragma unroll
	for (int i = 0; i < FS_MAX_VLAN; i++) {
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD_) &&
		    proto != bpf_htons(ETH_P_QINQ9100))
			break;
		if (pos + 4 > end)
			return FS_CNT_TRUNC_L2;
		__u16 vid = bpf_ntohs(*(__u16 *)pos) & 0x0fff;
		if (i == 0)
			rec->vlan_id = vid;
		else if (i == 1)
			rec->inner_vlan_id = vid;
		rec->vlan_depth = i + 1;
		proto = *(__u16 *)(pos + 2);
		pos += 4;
	}

	if (proto == bpf_htons(ETH_P_IP))
		goto ipv4;
	if (proto == bpf_htons(ETH_P_IPV6))
		goto ipv6;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD_) ||
	    proto == bpf_htons(ETH_P_QINQ9100))
		return FS_CNT_TOO_DEEP;

	if (proto == bpf_htons(ETH_P_PPP_SES_)) {
		/* PPPoE session header (6 bytes), then the 2-byte PPP protocol. */
		if (pos + 8 > end)
			return FS_CNT_TRUNC_L2;
		rec->encap |= FS_ENCAP_PPPOE;
		__u16 ppp = *(__u16 *)(pos + 6);
		pos += 8;
		if (ppp == bpf_htons(PPP_IP))
			goto ipv4;
		if (ppp == bpf_htons(PPP_IPV6))
			goto ipv6;
		return FS_CNT_NON_IP;
	}

	if (proto == bpf_htons(ETH_P_MPLS_UC_) || proto == bpf_htons(ETH_P_MPLS_MC_)) {
		/* 4-byte label stack entries; bottom of stack is bit 0 of byte 2. */
		rec->encap |= FS_ENCAP_MPLS;
#pragma unroll
		for (int i = 0; i < FS_MAX_MPLS; i++) {
			if (pos + 4 > end)
				return FS_CNT_TRUNC_L2;
			__u8 bos = *(__u8 *)(pos + 2) & 1;
			pos += 4;
			if (bos)
				goto mpls_payload;
		}
		return FS_CNT_TOO_DEEP;
mpls_payload:
		/* No payload type in MPLS: guess from the IP version nibble. */
		if (pos + 1 > end)
			return FS_CNT_TRUNC_L3;
		__u8 ver = *(__u8 *)pos >> 4;
		if (ver == 4)
			goto ipv4;
		if (ver == 6)
			goto ipv6;
		return FS_CNT_NON_IP;
	}
	return FS_CNT_NON_IP;

ipv4: {
	if (pos + 20 > end)
		return FS_CNT_TRUNC_L3;
	__u8 vihl = *(__u8 *)pos;
	__u32 ihl = (vihl & 0x0f) * 4;
	if ((vihl >> 4) != 4 || ihl < 20)
		return FS_CNT_BAD_L3;
	rec->ip_version = 4;
	rec->dscp = *(__u8 *)(pos + 1) >> 2;
	nh = *(__u8 *)(pos + 9);
	/* IPv4-mapped IPv6: ::ffff:a.b.c.d; bytes 0..7 stay zero. */
	*(__u32 *)&rec->src_addr[8] = bpf_htonl(0x0000ffff);
	*(__u32 *)&rec->src_addr[12] = *(__u32 *)(pos + 12);
	*(__u32 *)&rec->dst_addr[8] = bpf_htonl(0x0000ffff);
	*(__u32 *)&rec->dst_addr[12] = *(__u32 *)(pos + 16);
	__u16 frag = bpf_ntohs(*(__u16 *)(pos + 6));
	if (frag & 0x3fff) { /* MF or a non-zero offset */
		rec->frag_flags = FS_FRAG_FRAGMENT | ((frag & 0x2000) ? FS_FRAG_MORE : 0);
		rec->frag_id = bpf_ntohs(*(__u16 *)(pos + 4));
		if (frag & 0x1fff) {
			rec->frag_flags |= FS_FRAG_NOT_FIRST;
			rec->protocol = nh;
			return FS_CNT_EMITTED;
		}
	}
	/* Options: the header must be complete before L4 can be found. */
	if (pos + ihl > end) {
		rec->protocol = nh;
		rec->flags |= FS_REC_L4_TRUNCATED;
		return FS_CNT_EMITTED;
	}
	pos += ihl;
	goto l4;
}

ipv6: {
	if (pos + 40 > end)
		return FS_CNT_TRUNC_L3;
	__u8 b0 = *(__u8 *)pos;
	if ((b0 >> 4) != 6)
		return FS_CNT_BAD_L3;
	rec->ip_version = 6;
	/* Traffic class straddles bytes 0 and 1; DSCP is its upper 6 bits. */
	rec->dscp = (((b0 & 0x0f) << 4) | (*(__u8 *)(pos + 1) >> 4)) >> 2;
	nh = *(__u8 *)(pos + 6);
	__builtin_memcpy(rec->src_addr, pos + 8, 16);
	__builtin_memcpy(rec->dst_addr, pos + 24, 16);
	pos += 40;

	/* Walk the extension-header chain up to FS_MAX_IPV6_EXT headers. */
#pragma unroll
	for (int i = 0; i < FS_MAX_IPV6_EXT; i++) {
		__u32 len;

		switch (nh) {
		case IPPROTO_HOPOPTS_:
		case IPPROTO_ROUTING_:
		case IPPROTO_DSTOPTS_:
			/* next header, length in 8-byte units not counting the first 8 */
			if (pos + 2 > end)
				goto ext_truncated;
			len = ((__u32) * (__u8 *)(pos + 1) + 1) * 8;
			break;
		case IPPROTO_AH_:
			/* length in 4-byte units minus 2 */
			if (pos + 2 > end)
				goto ext_truncated;
			len = ((__u32) * (__u8 *)(pos + 1) + 2) * 4;
			break;
		case IPPROTO_FRAGMENT_: {
			if (pos + 8 > end)
				goto ext_truncated;
			__u16 off_m = bpf_ntohs(*(__u16 *)(pos + 2));
			rec->frag_flags = FS_FRAG_FRAGMENT | ((off_m & 1) ? FS_FRAG_MORE : 0);
			rec->frag_id = bpf_ntohl(*(__u32 *)(pos + 4));
			nh = *(__u8 *)pos;
			pos += 8;
			if (off_m & 0xfff8) {
				rec->frag_flags |= FS_FRAG_NOT_FIRST;
				rec->protocol = nh;
				return FS_CNT_EMITTED;
			}
			continue;
		}
		default:
			goto l4;
		}
		if (pos + len > end)
			goto ext_truncated;
		nh = *(__u8 *)pos;
		pos += len;
	}
	if (nh == IPPROTO_HOPOPTS_ || nh == IPPROTO_ROUTING_ || nh == IPPROTO_DSTOPTS_ ||
	    nh == IPPROTO_AH_ || nh == IPPROTO_FRAGMENT_) {
		rec->protocol = nh;
		rec->flags |= FS_REC_EXT_LIMIT;
		return FS_CNT_EMITTED;
	}
	goto l4;
ext_truncated:
	rec->protocol = nh;
	rec->flags |= FS_REC_L4_TRUNCATED;
	return FS_CNT_EMITTED;
}

l4:
	rec->protocol = nh;
	/* Each case checks the protocol's fixed header size before reading. */
	switch (nh) {
	case IPPROTO_TCP:
		if (pos + 20 > end)
			goto tcp_truncated;
		rec->tcp_flags = *(__u8 *)(pos + 13);
		goto ports;
	case IPPROTO_UDP:
	case IPPROTO_UDPLITE:
		if (pos + 8 > end)
			goto ports_truncated;
		goto ports;
	case IPPROTO_SCTP:
	case IPPROTO_DCCP:
		if (pos + 12 > end)
			goto ports_truncated;
		goto ports;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6_:
		/* type and code go in the port fields */
		if (pos + 2 <= end) {
			rec->src_port = *(__u8 *)pos;
			rec->dst_port = *(__u8 *)(pos + 1);
		}
		if (pos + 4 > end)
			rec->flags |= FS_REC_L4_TRUNCATED;
		return FS_CNT_EMITTED;
	default:
		return FS_CNT_EMITTED;
	}

ports:
	/* All port-carrying protocols start with source and destination port. */
	rec->src_port = bpf_ntohs(*(__u16 *)pos);
	rec->dst_port = bpf_ntohs(*(__u16 *)(pos + 2));
	return FS_CNT_EMITTED;

	/* Cut short: keep what is there, so the packet still joins its flow. */
tcp_truncated:
	if (pos + 14 <= end)
		rec->tcp_flags = *(__u8 *)(pos + 13);
ports_truncated:
	rec->flags |= FS_REC_L4_TRUNCATED;
	if (pos + 4 <= end) {
		rec->src_port = bpf_ntohs(*(__u16 *)pos);
		rec->dst_port = bpf_ntohs(*(__u16 *)(pos + 2));
	}
	return FS_CNT_EMITTED;
}

/* Reads the clock, or reuses the last reading when this CPU is busy (see clock_every). */
static __always_inline __u64 packet_time(struct fs_cpu *cpu)
{
	/* bpf_jiffies64 is inlined: a load, not a clock read. */
	__u64 j = bpf_jiffies64();

	if (j != cpu->jiffies) {
		cpu->jiffies = j;
		cpu->tick_packets = 0;
	}
	cpu->tick_packets++;
	if (cpu->tick_packets <= exact_per_tick || ++cpu->since_clock >= clock_every) {
		cpu->since_clock = 0;
		cpu->clock_ns = bpf_ktime_get_ns();
	}
	return cpu->clock_ns;
}

/* Parses one frame straight into a reserved ring slot and submits it. */
static __always_inline int emit_one(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	__u32 outcome;

	count(FS_CNT_SEEN);
	/*
	 * Parse straight into the ring buffer: no stack copy. A frame that
	 * yields no record gives its slot back (discard).
	 */
	struct fs_record *rec = bpf_ringbuf_reserve(&fs_events, sizeof(*rec), 0);
	if (!rec) {
		/* Ring full: still classify the frame so every counter stays exact. */
		struct fs_record tmp;
		__builtin_memset(&tmp, 0, sizeof(tmp));
		outcome = parse(data, data_end, &tmp);
		count(outcome == FS_CNT_EMITTED ? FS_CNT_RINGBUF_FULL : outcome);
		return XDP_PASS;
	}
	__builtin_memset(rec, 0, sizeof(*rec));
	outcome = parse(data, data_end, rec);
	struct fs_cpu *cpu = bpf_map_lookup_elem(&fs_cpu, &zero);
	if (outcome != FS_CNT_EMITTED || !cpu) { /* !cpu cannot happen: one entry per CPU */
		bpf_ringbuf_discard(rec, BPF_RB_NO_WAKEUP);
		count(outcome);
		return XDP_PASS;
	}

	rec->ts_ns = packet_time(cpu);
	rec->ifindex = ctx->ingress_ifindex;
	rec->wire_len = data_end - data;
	if (rec->flags & FS_REC_L4_TRUNCATED)
		count(FS_CNT_TRUNC_L4);
	if (rec->frag_flags)
		count(FS_CNT_FRAGMENTS);
	if (rec->flags & FS_REC_EXT_LIMIT)
		count(FS_CNT_EXT_LIMIT);

	bpf_ringbuf_submit(rec, wakeup_flags(&cpu->ring_bytes, FS_RB_SLOT));
	count(FS_CNT_EMITTED);
	return XDP_PASS;
}

/* Writes the staged records as one ring sample and settles their counters. */
static __always_inline void flush(struct fs_stage *st)
{
	__u32 n = st->n;

	if (n == 0 || n > FS_BATCH_MAX) /* > cannot happen; bounds the size for the verifier */
		return;
	__u32 size = n * sizeof(struct fs_record);
	__u64 flags = wakeup_flags(&st->cpu.ring_bytes, 8 + size);
	if (bpf_ringbuf_output(&fs_events, st->recs, size, flags) == 0) {
		count_n(FS_CNT_SEEN, n);
		count_n(FS_CNT_EMITTED, n);
		if (st->trunc_l4)
			count_n(FS_CNT_TRUNC_L4, st->trunc_l4);
		if (st->fragments)
			count_n(FS_CNT_FRAGMENTS, st->fragments);
		if (st->ext_limit)
			count_n(FS_CNT_EXT_LIMIT, st->ext_limit);
	} else {
		count_n(FS_CNT_SEEN, n);
		count_n(FS_CNT_RINGBUF_FULL, n);
	}
	st->n = 0;
	st->trunc_l4 = 0;
	st->fragments = 0;
	st->ext_limit = 0;
}

/* Timer callback, in softirq on the slot's CPU. */
static int flush_timer(void *map, __u32 *key, struct fs_stage *st)
{
	if (st->busy) {
		/* It interrupted an invocation mid-update (BH enabled): come back later. */
		st->armed = bpf_timer_start(&st->timer, flush_ns, BPF_F_TIMER_CPU_PIN_) == 0;
		return 0;
	}
	st->armed = 0;
	flush(st);
	return 0;
}

/*
 * Arms the slot's timer. 0 when it cannot be (no BPF_F_TIMER_CPU_PIN on this
 * kernel, or the map is going away): the caller then writes the batch at once,
 * so a record never waits for a timer that will not come.
 */
static __always_inline int arm(struct fs_stage *st)
{
	if (!st->timer_ready) {
		if (bpf_timer_init(&st->timer, &fs_stage, CLOCK_MONOTONIC_) != 0 ||
		    bpf_timer_set_callback(&st->timer, flush_timer) != 0)
			return 0;
		st->timer_ready = 1;
	}
	st->armed = bpf_timer_start(&st->timer, flush_ns, BPF_F_TIMER_CPU_PIN_) == 0;
	return st->armed;
}

/* Parses one frame into this CPU's batch, at recs[n] (n < FS_BATCH_MAX). */
static __always_inline int stage(struct xdp_md *ctx, struct fs_stage *st, __u32 n)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	st->busy = 1;
	barrier(); /* busy is set before recs[n] is touched, cleared after n is final */

	struct fs_record *rec = &st->recs[n];
	__builtin_memset(rec, 0, sizeof(*rec));
	__u32 outcome = parse(data, data_end, rec);
	if (outcome != FS_CNT_EMITTED) {
		count(FS_CNT_SEEN);
		count(outcome);
		goto out;
	}
	rec->ts_ns = packet_time(&st->cpu);
	rec->ifindex = ctx->ingress_ifindex;
	rec->wire_len = data_end - data;
	if (rec->flags | rec->frag_flags) { /* rare: one test for the common record */
		st->trunc_l4 += rec->flags & FS_REC_L4_TRUNCATED;
		st->fragments += rec->frag_flags != 0;
		st->ext_limit += (rec->flags & FS_REC_EXT_LIMIT) != 0;
	}
	st->n = ++n;
	if (n >= batch_size || (!st->armed && !arm(st)))
		flush(st);
out:
	barrier();
	st->busy = 0;
	return XDP_PASS;
}

SEC("xdp")
int flowsensor_xdp(struct xdp_md *ctx)
{
	if (batch_size > 1) {
		__u32 cpu = bpf_get_smp_processor_id();
		struct fs_stage *st = bpf_map_lookup_elem(&fs_stage, &cpu);

		/*
		 * !st cannot happen (one slot per possible CPU), nor can a full
		 * batch (it is written when it fills); busy: see Batching.
		 */
		if (st && !st->busy) {
			__u32 n = st->n;
			if (n < batch_size && n < FS_BATCH_MAX)
				return stage(ctx, st, n);
		}
	}
	return emit_one(ctx);
}
