//go:build ignore

/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Feature probe run once by the loader through BPF_PROG_TEST_RUN: can a BPF
 * timer be pinned to the CPU that starts it (BPF_F_TIMER_CPU_PIN, kernel
 * >= 6.7)? flowsensor batches records per CPU only if it can: an unpinned
 * timer may fire on another CPU while this one writes the batch.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char __license[] SEC("license") = "Dual MIT/GPL";

#define CLOCK_MONOTONIC_ 1
#define BPF_F_TIMER_CPU_PIN_ (1ULL << 1)

struct probe_timer {
	struct bpf_timer timer;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct probe_timer);
	__uint(max_entries, 1);
} fs_probe_timers SEC(".maps");

static int probe_cb(void *map, __u32 *key, struct probe_timer *t)
{
	return 0;
}

/* XDP_PASS when a pinned timer starts, XDP_ABORTED when it does not. */
SEC("xdp")
int fs_probe_timer_pin(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct probe_timer *t = bpf_map_lookup_elem(&fs_probe_timers, &zero);

	if (!t || bpf_timer_init(&t->timer, &fs_probe_timers, CLOCK_MONOTONIC_) != 0 ||
	    bpf_timer_set_callback(&t->timer, probe_cb) != 0)
		return XDP_ABORTED;
	/* Old kernels reject the unknown flag with -EINVAL. */
	long err = bpf_timer_start(&t->timer, 1000000000ULL, BPF_F_TIMER_CPU_PIN_);
	bpf_timer_cancel(&t->timer);
	return err == 0 ? XDP_PASS : XDP_ABORTED;
}
