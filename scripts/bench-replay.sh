#!/usr/bin/env bash
# Replay throughput beside tshark on the same files, in the same run, as
# whole processes (start-up included for both). Medians of N runs.
#   scripts/bench-replay.sh [N] [capture...]
# Defaults: 9 runs; large-tumblr-ipv6.pcap and many-flows-cip-ics.pcap from
# ../shared/corpus/public.
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

# median_seconds CMD... : runs CMD n times, alternating with nothing else.
median() {
	local i s e
	for i in $(seq "$n"); do
		s=$(date +%s%N)
		"$@" >/dev/null 2>&1
		e=$(date +%s%N)
		echo $((e - s))
	done | sort -n | awk '{a[NR]=$1} END {printf "%.6f", a[int((NR+1)/2)]/1e9}'
}

# Start-up cost of each tool: a capture of one packet.
empty=testdata/corpus/qinq-8021ad.pcapng
i=0
fs_empty() { i=$((i + 1)); "$bin" replay --out "$work/empty$i" "$empty"; }
ts0=$(median tshark -n -q -z conv,tcp -z conv,udp -r "$empty")
fs0=$(median fs_empty)
printf 'start-up (one-packet capture): tshark %.3f s, flowsensor %.3f s\n\n' "$ts0" "$fs0"

printf '| capture | MB | packets | flows | tshark conv s | flowsensor replay s | MB/s | packets/s | flows/s | speed-up | speed-up without start-up |\n'
printf '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n'
for f in "${files[@]}"; do
	size=$(stat -c %s "$f")
	summary=$("$bin" replay --out "$work/probe" "$f" 2>&1 | grep 'replay:')
	packets=$(sed -E 's/.* ([0-9]+) packets .*/\1/' <<<"$summary")
	flows=$(sed -E 's/.* ([0-9]+) flows reported.*/\1/' <<<"$summary")
	i=0
	fs_run() { i=$((i + 1)); "$bin" replay --out "$work/run$i" "$f"; }
	ts=$(median tshark -n -q -z conv,tcp -z conv,udp -r "$f")
	fs=$(median fs_run)
	awk -v name="$(basename "$f")" -v size="$size" -v p="$packets" -v fl="$flows" -v ts="$ts" -v fs="$fs" \
		-v ts0="$ts0" -v fs0="$fs0" 'BEGIN {
		printf "| %s | %.1f | %d | %d | %.3f | %.3f | %.0f | %.0f | %.0f | %.1fx | %.1fx |\n",
			name, size/1e6, p, fl, ts, fs, size/1e6/fs, p/fs, fl/fs, ts/fs, (ts-ts0)/(fs-fs0) }'
done
