#!/usr/bin/env bash
# Compare flowsensor binaries on one capture: each round runs every binary
# once, in turn, so they share the machine's load; prints each one's median
# wall time. Build the variants first, e.g.
#   go build -o /tmp/before ./cmd/flowsensor   (on the old commit)
#   go build -o /tmp/after ./cmd/flowsensor
#   scripts/ab-replay.sh 21 ../shared/corpus/public/many-flows-cip-ics.pcap /tmp/before /tmp/after
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 ROUNDS CAPTURE BINARY..." >&2; exit 2; }
n=$1 capture=$2
shift 2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for _ in $(seq "$n"); do
	for b in "$@"; do
		rm -rf "$work/out"
		s=$(date +%s%N)
		"$b" replay --out "$work/out" "$capture" >/dev/null 2>&1
		e=$(date +%s%N)
		echo "$b $((e - s))" >>"$work/times"
	done
done
for b in "$@"; do
	grep -F "$b " "$work/times" | awk '{print $2}' | sort -n |
		awk -v b="$b" '{a[NR]=$1} END {printf "%s: median %.2f ms of %d runs\n", b, a[int((NR+1)/2)]/1e6, NR}'
done
