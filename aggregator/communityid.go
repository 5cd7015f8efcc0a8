package aggregator

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"

	"github.com/flowsensor/flowsensor/bpf"
)

// communityID returns the Community ID v1 (seed 0) of a flow key:
// "1:" + base64(SHA-1(seed, saddr, daddr, proto, 0, sport, dport)), see
// github.com/corelight/community-id-spec. The key's endpoints are already in
// the spec's order (lower address, then port, first; one-way ICMP as sent)
// and its ICMP ports are the spec's port equivalents, so this only
// serialises. Protocols without ports hash the addresses and protocol alone.
func communityID(k *flowKey) string {
	var b [2 + 16 + 16 + 2 + 4]byte // seed 0 stays zero
	n := 2
	if k.ipVersion == 4 {
		n += copy(b[n:], k.loAddr[12:])
		n += copy(b[n:], k.hiAddr[12:])
	} else {
		n += copy(b[n:], k.loAddr[:])
		n += copy(b[n:], k.hiAddr[:])
	}
	b[n] = k.protocol
	n += 2 // protocol and one byte of padding
	switch k.protocol {
	case bpf.ProtoTCP, bpf.ProtoUDP, bpf.ProtoSCTP, bpf.ProtoICMP, bpf.ProtoICMPv6:
		binary.BigEndian.PutUint16(b[n:], k.loPort)
		binary.BigEndian.PutUint16(b[n+2:], k.hiPort)
		n += 4
	}
	sum := sha1.Sum(b[:n])
	return "1:" + base64.StdEncoding.EncodeToString(sum[:])
}
