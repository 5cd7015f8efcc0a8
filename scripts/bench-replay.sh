#!/usr/bin/env bash
# Replay throughput beside tshark on the same files, in the same run, as
# whole processes (start-up included for both).
#   scripts/bench-replay.sh [N] [capture...]
# Defaults: 9 rounds; large-tumblr-ipv6.pcap and many-flows-cip-ics.pcap from
# ../shared/corpus/public.
#
# Each round runs tshark then flowsensor back to back, so both see the same
# machine load; the speed-up is the median of the per-round ratios, the times
# are the medians of each tool's runs. This machine is shared: expect the
# times to move by 10-20% between invocations, the ratio much less.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-9}
shift || true
corpus=../shared/corpus/public
files=("$@")
[ ${#files[@]} -gt 0 ] || files=("$corpus/large-tumblr-ipv6.pcap" "$corpus/many-flows-cip-ics.pcap")
command -v tshark >/dev/null || { echo "tshark is not installed (apt-get install tshark)" >&2; exit 1; }
bin=$(mktemp -d)/flowsensor
CGO_ENABLED=0 go build -trimpath -o "$bin" ./cmd/flowsensor
work=$(mktemp -d)
trap 'rm -rf "$work" "$(dirname "$bin")"' EXIT

# ns CMD...: wall time of one run, in nanoseconds.
ns() {
	local s e
	s=$(date +%s%N)
	"$@" >/dev/null 2>&1
	e=$(date +%s%N)
	echo $((e - s))
}

# rounds FILE: n lines "tshark_ns flowsensor_ns", alternating the two tools.
rounds() {
	local i
	for i in $(seq "$n"); do
		rm -rf "$work/out"
		echo "$(ns tshark -n -q -z conv,tcp -z conv,udp -r "$1") $(ns "$bin" replay --out "$work/out" "$1")"
	done
}

# median of column $1 of stdin
median() { sort -g -k"$1","$1" | awk -v c="$1" '{a[NR]=$c} END {print a[int((NR+1)/2)]}'; }

# Start-up cost of each tool: a capture of one packet.
empty=testdata/corpus/qinq-8021ad.pcapng
r0=$(rounds "$empty")
ts0=$(median 1 <<<"$r0")
fs0=$(median 2 <<<"$r0")
awk -v t="$ts0" -v f="$fs0" 'BEGIN {printf "start-up (one-packet capture): tshark %.3f s, flowsensor %.3f s\n\n", t/1e9, f/1e9}'

printf '| capture | MB | packets | flows | tshark conv s | flowsensor replay s | MB/s | packets/s | flows/s | speed-up (median of %d rounds, range) | without start-up |\n' "$n"
printf '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n'
for f in "${files[@]}"; do
	size=$(stat -c %s "$f")
	rm -rf "$work/out"
	summary=$("$bin" replay --out "$work/out" "$f" 2>&1 | grep 'replay:')
	packets=$(sed -E 's/.* ([0-9]+) packets .*/\1/' <<<"$summary")
	flows=$(sed -E 's/.* ([0-9]+) flows reported.*/\1/' <<<"$summary")
	r=$(rounds "$f")
	ts=$(median 1 <<<"$r")
	fs=$(median 2 <<<"$r")
	ratios=$(awk '{print $1/$2}' <<<"$r" | sort -g)
	ratio=$(median 1 <<<"$ratios")
	lo=$(head -1 <<<"$ratios")
	hi=$(tail -1 <<<"$ratios")
	awk -v name="$(basename "$f")" -v size="$size" -v p="$packets" -v fl="$flows" -v ts="$ts" -v fs="$fs" \
		-v ts0="$ts0" -v fs0="$fs0" -v ratio="$ratio" -v lo="$lo" -v hi="$hi" 'BEGIN {
		ts /= 1e9; fs /= 1e9; ts0 /= 1e9; fs0 /= 1e9
		printf "| %s | %.1f | %d | %d | %.3f | %.3f | %.0f | %.0f | %.0f | %.1fx (%.1f-%.1f) | %.1fx |\n",
			name, size/1e6, p, fl, ts, fs, size/1e6/fs, p/fs, fl/fs, ratio, lo, hi, (ts-ts0)/(fs-fs0) }'
done
