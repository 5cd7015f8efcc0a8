#!/usr/bin/env bash
# Installs what building, running and testing flowsensor need on Debian or
# Ubuntu. Idempotent and quick when everything is there already.
#   scripts/install-deps.sh run    # running the sensor: nothing beyond Go
#   scripts/install-deps.sh test   # every test layer
#   scripts/install-deps.sh gen    # regenerating the BPF objects (clang)
set -euo pipefail
what=${1:-test}

need=()
want() { dpkg -s "$1" >/dev/null 2>&1 || need+=("$1"); }
case "$what" in
run) ;;
gen) want clang; want llvm; want libbpf-dev; want linux-libc-dev ;;
test)
	want clang; want llvm; want libbpf-dev; want linux-libc-dev; want bpftool
	want iproute2; want iputils-ping; want util-linux; want python3-pip; want tshark
	;;
*) echo "usage: $0 run|test|gen" >&2; exit 2 ;;
esac

if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "missing Debian packages: ${need[*]} (run as root, or: sudo apt-get install ${need[*]})" >&2
		exit 1
	fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ "$what" = test ]; then
	# DuckDB reads our Parquet in the end-to-end tests, as an independent reader.
	if ! python3 -c 'import duckdb' 2>/dev/null; then
		python3 -m pip install --quiet --disable-pip-version-check duckdb==2.0.1 2>/dev/null ||
			python3 -m pip install --quiet --disable-pip-version-check --break-system-packages duckdb==2.0.1
	fi
fi
go mod download
