# flowsensor. `make help` lists the targets.
GO      ?= go
BIN     ?= bin/flowsensor
OUT     ?= ./flowdata
ARGS    ?=
# CI sets FLOWSENSOR_REQUIRE_PRIVILEGED=1 so that no kernel-level test can skip.
TESTFLAGS ?= -race -count=1 -timeout 20m

.PHONY: help deps generate build run test bench lint fuzz clean es es-stop

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

deps: ## install what the tests need (Debian packages, DuckDB, Go modules)
	scripts/install-deps.sh test

generate: ## recompile the XDP program and regenerate its Go bindings (needs clang)
	scripts/install-deps.sh gen
	$(GO) generate ./loader/

build: ## build bin/flowsensor (no clang needed: the BPF objects are committed)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/flowsensor

run: build ## run the sensor on the default-route interface, Parquet under ./flowdata (root)
	$(BIN) run --out $(OUT) $(ARGS)

test: deps ## run every test layer: units, BPF_PROG_TEST_RUN, netns lab, oracles, Elasticsearch (root)
	scripts/with-elasticsearch.sh $(GO) test $(TESTFLAGS) ./...

bench: ## kernel ns/packet beside an empty XDP program, and the Go hot paths (root)
	$(GO) test -run='^$$' -bench='XDP|RingDrain' -benchtime=15x ./loader/
	$(GO) test -run='^$$' -bench=. -benchmem ./bpf/ ./aggregator/ ./sinks/ ./sinks/parquet/
	$(GO) test -run='^$$' -bench=Replay -benchtime=20x ./cmd/flowsensor/
	@if [ -d ../shared/corpus/public ]; then scripts/bench-replay.sh 9; else echo "bench-replay: ../shared/corpus/public not here, skipped"; fi
	scripts/with-elasticsearch.sh $(GO) test -run='^$$' -bench='ESBulk|Encode' -benchmem -benchtime=4x ./sinks/elasticsearch/

lint: ## gofmt, go vet, and the dependency arrows of DESIGN.md
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '_bpfe[lb]\.go$$')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) test -count=1 -run TestDependencyDirection ./internal/archtest/

es: ## start a local Elasticsearch (Maven Central integ-test zip); then export FLOWSENSOR_ES_URL=http://127.0.0.1:9200
	scripts/elasticsearch.sh start

es-stop: ## stop the local Elasticsearch
	scripts/elasticsearch.sh stop

clean: ## remove build output
	rm -rf bin
