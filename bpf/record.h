/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * The kernel/user contract of flowsensor. Everything user space reads from the
 * XDP program is declared here, once. bpf/record.go mirrors it field by field;
 * bpf/record_test.go pins the layout with golden bytes and the loader tests
 * compare it with the BTF of the compiled object.
 *
 * Rules: fixed-width types, largest fields first, every padding byte named,
 * size a multiple of 8, zeroed before filling.
 */
#ifndef FLOWSENSOR_RECORD_H
#define FLOWSENSOR_RECORD_H

#include <linux/types.h>

/* One per packet, in the ring buffer. 72 bytes. */
struct fs_record {
	__u64 ts_ns;         /*  0 bpf_ktime_get_ns() (CLOCK_MONOTONIC) when the program ran */
	__u8 src_addr[16];   /*  8 IPv6, or IPv4-mapped IPv6 (::ffff:a.b.c.d) */
	__u8 dst_addr[16];   /* 24 */
	__u32 ifindex;       /* 40 receiving interface */
	__u32 wire_len;      /* 44 frame length from the Ethernet header on, without FCS */
	__u32 frag_id;       /* 48 IPv4 identification or IPv6 fragment identification (fragments only) */
	__u16 src_port;      /* 52 host order; ICMP/ICMPv6: type */
	__u16 dst_port;      /* 54 host order; ICMP/ICMPv6: code */
	__u16 vlan_id;       /* 56 VID of the outermost 802.1Q/802.1ad tag, 0 when untagged */
	__u16 inner_vlan_id; /* 58 VID of the second tag (QinQ), 0 when absent */
	__u8 protocol;       /* 60 IP protocol after IPv6 extension headers */
	__u8 ip_version;     /* 61 4 or 6 */
	__u8 tcp_flags;      /* 62 FIN..CWR, byte 13 of the TCP header */
	__u8 dscp;           /* 63 */
	__u8 frag_flags;     /* 64 FS_FRAG_* */
	__u8 encap;          /* 65 FS_ENCAP_* */
	__u8 vlan_depth;     /* 66 number of VLAN tags walked (0..FS_MAX_VLAN) */
	__u8 flags;          /* 67 FS_REC_* */
	__u8 _pad[4];        /* 68 always zero */
};

/* frag_flags */
#define FS_FRAG_FRAGMENT 0x01  /* the packet is an IP fragment */
#define FS_FRAG_MORE 0x02      /* more fragments follow (IPv4 MF, IPv6 M) */
#define FS_FRAG_NOT_FIRST 0x04 /* offset != 0: no L4 header, ports are 0 */

/* encap */
#define FS_ENCAP_PPPOE 0x01 /* PPPoE session (0x8864) */
#define FS_ENCAP_MPLS 0x02  /* MPLS label stack (0x8847/0x8848) */

/* flags */
#define FS_REC_L4_TRUNCATED 0x01 /* the L4 (or an IPv6 extension / IPv4 option) header is cut short */
#define FS_REC_EXT_LIMIT 0x02    /* more IPv6 extension headers than walked; protocol is the next header left */

/* Most records in one ring sample (batching, flowsensor.c). */
#define FS_BATCH_MAX 64

/* Parser limits. */
#define FS_MAX_VLAN 4
#define FS_MAX_MPLS 8
#define FS_MAX_IPV6_EXT 8

/*
 * Per-CPU counters, indexed by this enum. Every packet lands in exactly one of
 * the outcome counters (EMITTED .. TOO_DEEP); SEEN is their sum, except for
 * records still staged in a partial batch (counted at the flush, at most
 * flush_ns later). The rest describe emitted records further.
 */
enum fs_counter {
	FS_CNT_SEEN = 0,      /* frames the program ran on */
	FS_CNT_EMITTED,       /* records submitted to the ring buffer */
	FS_CNT_RINGBUF_FULL,  /* record lost: the ring buffer was full */
	FS_CNT_NON_IP,        /* ARP, LLDP, PPPoE discovery, non-IP PPP or MPLS payload ... */
	FS_CNT_TRUNC_L2,      /* Ethernet, VLAN, PPPoE or MPLS header cut short */
	FS_CNT_TRUNC_L3,      /* fixed IPv4/IPv6 header cut short */
	FS_CNT_BAD_L3,        /* IP version nibble disagrees with the ethertype, or IHL < 5 */
	FS_CNT_TOO_DEEP,      /* more VLAN tags or MPLS labels than the parser walks */
	FS_CNT_TRUNC_L4,      /* emitted with FS_REC_L4_TRUNCATED */
	FS_CNT_FRAGMENTS,     /* emitted IP fragments */
	FS_CNT_EXT_LIMIT,     /* emitted with FS_REC_EXT_LIMIT */
	FS_CNT_MAX,
};

#endif
