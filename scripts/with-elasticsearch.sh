#!/usr/bin/env bash
# Runs a command with FLOWSENSOR_ES_URL pointing at an Elasticsearch: the one
# already named by FLOWSENSOR_ES_URL, the local one if it is running, or a
# local one started for the command (scripts/elasticsearch.sh) and stopped
# after it.
#   scripts/with-elasticsearch.sh go test ./...
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${FLOWSENSOR_ES_URL:-}" ]; then
	if ! scripts/elasticsearch.sh status 2>/dev/null; then
		scripts/elasticsearch.sh start
		trap 'scripts/elasticsearch.sh stop' EXIT
	fi
	FLOWSENSOR_ES_URL=$(scripts/elasticsearch.sh url)
	export FLOWSENSOR_ES_URL
fi
"$@"
