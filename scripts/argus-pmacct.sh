#!/usr/bin/env bash
# Writes X.argus-flows.csv and X.pmacct-flows.csv beside each capture X, as
# the corpus' stored ones were made (../shared/corpus/regen_oracles.sh), so
# that TestOracleArgusPmacctOwnCaptures can compare flowsensor with them:
#   scripts/argus-pmacct.sh DIR/*.pcap
#   FLOWSENSOR_ORACLE_DIR=DIR go test -run OwnCaptures -v ./cmd/flowsensor/
# Needs: apt-get install argus-server argus-client pmacct
set -u
export TZ=UTC LC_ALL=C
for tool in argus racluster pmacctd; do
	command -v "$tool" >/dev/null || { echo "$tool is not installed (apt-get install argus-server argus-client pmacct)" >&2; exit 1; }
done
for f in "$@"; do
	f=$(realpath "$f")
	tmp=$(mktemp -d)
	# argus: bidirectional flows merged per 5-tuple by racluster; frame bytes; VLAN not in the key.
	argus -r "$f" -w "$tmp/a.argus" >"$tmp/argus.err" 2>&1
	{
		cat "$tmp/argus.err"
		[ -s "$tmp/a.argus" ] || echo "# argus wrote no records"
		racluster -r "$tmp/a.argus" -nn -u -c , \
			-s stime ltime proto saddr sport dir daddr dport spkts dpkts sbytes dbytes state - not man 2>&1
	} >"$f.argus-flows.csv"
	# pmacctd on the savefile: unidirectional, keyed by outer VLAN and 5-tuple, IP bytes.
	cat >"$tmp/pm.conf" <<CONF
daemonize: false
pcap_savefile: $f
pcap_savefile_wait: false
plugins: print
aggregate: vlan, proto, src_host, dst_host, src_port, dst_port
print_output: csv
print_output_file: $tmp/pm.csv
print_refresh_time: 300
CONF
	timeout 300 pmacctd -f "$tmp/pm.conf" >"$tmp/pm.log" 2>&1
	if [ -s "$tmp/pm.csv" ]; then
		{ head -1 "$tmp/pm.csv"; tail -n +2 "$tmp/pm.csv" | sort; } >"$f.pmacct-flows.csv"
	else
		{ echo "# pmacctd produced no flows; log tail:"; grep -v INFO "$tmp/pm.log" | tail -5; } >"$f.pmacct-flows.csv"
	fi
	rm -rf "$tmp"
done
