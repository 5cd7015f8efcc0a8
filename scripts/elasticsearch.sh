#!/usr/bin/env bash
# A local single-node Elasticsearch for the tests and for trying the sensor:
# the integ-test distribution from Maven Central (no bundled JDK: it runs on
# the system's Java 17+), on 127.0.0.1, security off, small heap.
#
#   scripts/elasticsearch.sh start    # fetch (once), unpack (once), start, wait for health; prints the URL
#   scripts/elasticsearch.sh stop     # stop it and wait until it has exited
#   scripts/elasticsearch.sh status   # exit 0 if it is running and answering
#   scripts/elasticsearch.sh url      # print the URL (whether running or not)
#
# Every command is idempotent. Settings (environment):
#   ES_VERSION            distribution version, default 8.19.21 (newest 8.x on Maven Central)
#   ES_PORT               HTTP port, default 9200
#   ES_HEAP               JVM heap, default 512m
#   ES_START_TIMEOUT      seconds to wait for health, default 180
#   FLOWSENSOR_ES_HOME    cache dir holding the distribution, data, logs and pid file;
#                         default /var/cache/flowsensor/elasticsearch as root,
#                         ${XDG_CACHE_HOME:-~/.cache}/flowsensor/elasticsearch otherwise
#
# Elasticsearch refuses to run as root: as root, the script runs it as the
# system user flowsensor-es, which it creates if missing.
set -euo pipefail

version=${ES_VERSION:-8.19.21}
port=${ES_PORT:-9200}
heap=${ES_HEAP:-512m}
timeout=${ES_START_TIMEOUT:-180}
url="http://127.0.0.1:${port}"
artifact="org.elasticsearch.distribution.integ-test-zip:elasticsearch:${version}:zip"
es_user=flowsensor-es

if [ "$(id -u)" -eq 0 ]; then
	base=${FLOWSENSOR_ES_HOME:-/var/cache/flowsensor/elasticsearch}
else
	base=${FLOWSENSOR_ES_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/flowsensor/elasticsearch}
fi
home="$base/elasticsearch-$version"
data="$base/data-$version"
logs="$base/logs"
pidfile="$base/elasticsearch.pid"

say() { printf 'elasticsearch: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

pid() { [ -s "$pidfile" ] && cat "$pidfile"; }

running() {
	local p
	p=$(pid) || return 1
	kill -0 "$p" 2>/dev/null
}

healthy() {
	curl -fsS -m 10 "$url/_cluster/health?wait_for_status=yellow&timeout=5s" >/dev/null 2>&1
}

# need installs the Debian package providing a missing command, as root.
need() {
	local cmd=$1 pkg=$2
	command -v "$cmd" >/dev/null && return
	[ "$(id -u)" -eq 0 ] || die "$cmd not found: install $pkg (sudo apt-get install $pkg)"
	say "installing $pkg"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
}

java_home() {
	local java major
	java=$(readlink -f "$(command -v java)")
	major=$("$java" -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $2}')
	[ "${major%%.*}" -ge 17 ] 2>/dev/null || die "Java 17 or later needed, found $java (version ${major:-unknown})"
	dirname "$(dirname "$java")"
}

install() {
	[ -x "$home/bin/elasticsearch" ] && return
	need java openjdk-17-jre-headless
	need mvn maven
	need unzip unzip
	mkdir -p "$base"
	local dl
	dl=$(mktemp -d "$base/download.XXXXXX")
	say "fetching $artifact from Maven Central (cached in ~/.m2)"
	if ! mvn -B -q org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
		-Dartifact="$artifact" -DoutputDirectory="$dl" >"$dl/mvn.log" 2>&1; then
		cat "$dl/mvn.log" >&2
		rm -rf "$dl"
		die "cannot fetch $artifact"
	fi
	unzip -q "$dl/elasticsearch-$version.zip" -d "$dl"
	# Rename into place only when complete, so that a half-unpacked tree is never used.
	mv "$dl/elasticsearch-$version" "$home"
	rm -rf "$dl"
}

configure() {
	mkdir -p "$data" "$logs"
	# Loopback only and single-node, so the production bootstrap checks
	# (vm.max_map_count, ...) do not apply. The disk watermarks are off:
	# a test machine's full disk must not turn indices read-only.
	cat >"$home/config/elasticsearch.yml" <<-EOF
		cluster.name: flowsensor-test
		node.name: flowsensor-test
		discovery.type: single-node
		network.host: 127.0.0.1
		http.port: $port
		transport.port: $((port + 100))
		path.data: $data
		path.logs: $logs
		xpack.security.enabled: false
		cluster.routing.allocation.disk.threshold_enabled: false
	EOF
	if [ "$(id -u)" -eq 0 ]; then
		id "$es_user" >/dev/null 2>&1 ||
			useradd --system --no-create-home --home-dir "$base" --shell /usr/sbin/nologin "$es_user"
		chown -R "$es_user:" "$base"
	fi
}

start() {
	if running; then
		if healthy; then
			echo "$url"
			return
		fi
	else
		rm -f "$pidfile"
		if curl -fsS -m 5 "$url" >/dev/null 2>&1; then
			die "something else answers on $url; set ES_PORT to use another port"
		fi
		need curl curl
		install
		configure
		local jh
		jh=$(java_home)
		say "starting $version on $url (heap $heap, data $data)"
		local run=(env ES_JAVA_HOME="$jh" ES_JAVA_OPTS="-Xms$heap -Xmx$heap" "$home/bin/elasticsearch" -d -p "$pidfile")
		if [ "$(id -u)" -eq 0 ]; then
			runuser -u "$es_user" -- "${run[@]}" >"$logs/console.log" 2>&1
		else
			"${run[@]}" >"$logs/console.log" 2>&1
		fi
	fi
	local deadline=$((SECONDS + timeout))
	until healthy; do
		if ! running; then
			tail -n 40 "$logs/flowsensor-test.log" >&2 2>/dev/null || true
			die "exited during start-up; log: $logs/flowsensor-test.log"
		fi
		[ $SECONDS -lt $deadline ] || die "not healthy after ${timeout}s; log: $logs/flowsensor-test.log"
		sleep 1
	done
	say "ready on $url (pid $(pid))"
	echo "$url"
}

stop() {
	if ! running; then
		rm -f "$pidfile"
		say "not running"
		return
	fi
	local p
	p=$(pid)
	kill -TERM "$p"
	local deadline=$((SECONDS + 60))
	while kill -0 "$p" 2>/dev/null; do
		if [ $SECONDS -ge $deadline ]; then
			say "pid $p still running after 60s: killing it"
			kill -KILL "$p" 2>/dev/null || true
		fi
		sleep 0.5
	done
	rm -f "$pidfile"
	say "stopped (pid $p)"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status)
	if running && healthy; then
		say "running on $url (pid $(pid))"
	else
		say "not running"
		exit 1
	fi
	;;
url) echo "$url" ;;
*) echo "usage: $0 start|stop|status|url" >&2; exit 2 ;;
esac
