# lockstream — the targets everyone recognizes. `make demo` and `make test`
# are the two that must work on a fresh machine.
SHELL     := /bin/bash
GO        ?= go
PKGS      ?= ./...
FUZZTIME  ?= 30s
BENCHTIME ?= 1s
BENCH_EVENTS ?= 200000
BENCH_KEY_CALLS ?= 30000
BENCH_PATH_CALLS ?= 2000
DEMO_OUT  ?= ./demo-out

.PHONY: all demo test test-race test-integration soak bench fuzz lint generate build clean

all: lint test

build:
	$(GO) build ./...

## demo: run the main job end to end on this machine (no cloud account).
demo:
	$(GO) run ./cmd/lockstream demo --out $(DEMO_OUT)

## test: lint, then every test with the race detector: the unit and
## package tests, then the end-to-end and fault-scenario suite (emulator-
## backed tests start their own emulators unless *_EMULATOR_HOST is set;
## see .ci/run).
test: lint test-race test-integration

## test-race: the unit and package tests. The streaming pipeline tests do
## not call t.Parallel: prism (Beam v2.77) stages the artifacts of jobs
## submitted at once into one unguarded map, a data race the race detector
## fails them on (jobservices/artifact.go, ReverseArtifactRetrievalService).
## fieldcrypt runs again without the race detector (under it sync.Pool
## drops at random, so its allocation counts are not checked), and with
## insecurekeyset with -tags purego: AES through crypto/aes and
## crypto/cipher, as where the CPU has no AES-NI.
test-race:
	$(GO) test -race -count=1 -timeout 30m $$($(GO) list $(PKGS) | grep -v '/integration')
	$(GO) test -count=1 ./fieldcrypt
	$(GO) test -race -count=1 -tags purego ./fieldcrypt ./insecurekeyset

## test-integration: the end-to-end and fault-matrix scenarios against
## real emulators, with a 2-minute soak (SOAK; `make soak` runs the long one),
## as two `go test -race` processes side by side (integration/run.sh: which
## tests go in which, and why that is safe). Prints the tests' own lines
## prefixed with their shard, and the race detector's reports; the whole
## output goes to INTEGRATION_LOG.a and .b, and a failing shard's last lines
## are printed too.
INTEGRATION_LOG ?= /tmp/lockstream-integration.log
SOAK ?= 2m
test-integration:
	LOCKSTREAM_SOAK=$(SOAK) INTEGRATION_LOG=$(INTEGRATION_LOG) GO=$(GO) bash integration/run.sh

## soak: the 10-minute soak alone (scenario 9: RSS, goroutines and the key
## server's p99 sampled every 30 s; SOAK=30m for longer).
soak:
	LOCKSTREAM_SOAK=$(if $(filter command line,$(origin SOAK)),$(SOAK),10m) $(GO) test -race -count=1 -timeout 90m -v -run 'TestScenario09_Soak' ./integration/

## bench: benchmarks that print numbers (never pass/fail on time).
## BENCH_EVENTS=1000000 gives the 1M-event end-to-end figure;
## LOCKSTREAM_BENCH_KEY_LATENCY=2ms puts its fake key service 2 ms away. The key
## server's load benchmarks make a fixed number of calls per load level
## (BENCH_KEY_CALLS): a p99 over the ~4k calls of a 1 s run moved by
## milliseconds with where the server's few GC cycles fell.
## LOCKSTREAM_BENCH_SERVER_FLAGS passes flags to the key server the load
## benchmark starts (e.g. "--gc-percent=1000"); LOCKSTREAM_BENCH_CLIENT
## picks its load generator (wire, raw, connect).
## BENCH_PATH_CALLS (default 2000) batches of 100 per row: the key server's
## get-or-create latency split into existing keychains and batches that
## create them (BenchmarkGetOrCreatePaths, p50/p99), and keyclient over two
## endpoints, both up and with one refusing or stalled (keys/s, p99;
## BenchmarkKeyclientEndpoints).
## Pub/Sub ingest (BenchmarkPubSubIngest, ~2.5 min on 2 cores) drains a
## backlog with 1 and 4 pull streams on pstest and on the Pub/Sub emulator
## (started from the gcloud SDK unless PUBSUB_EMULATOR_HOST is set; skipped
## without one), BENCH_PUBSUB_ROUNDS rounds (default 3; it reports medians:
## on a shared 2-core VM identical rounds differed by up to 3.8x);
## LOCKSTREAM_BENCH_PUBSUB_EVENTS, LOCKSTREAM_BENCH_EMULATOR_EVENTS and
## LOCKSTREAM_BENCH_PUBSUB_STREAMS (e.g. 1,4,8) change it. See BENCHMARKS.md.
bench:
	LOCKSTREAM_BENCH_EVENTS=$(BENCH_EVENTS) $(GO) test -run '^$$' -bench . -skip PubSubIngest -benchmem -benchtime $(BENCHTIME) ./fieldcrypt ./schemas ./record ./keyservice ./keyclient/... ./transforms ./pipelines
	$(GO) test -run '^$$' -bench 'Batch100|SingleKey' -benchtime $(BENCH_KEY_CALLS)x ./keyservice/server
	$(GO) test -run '^$$' -bench 'KeyclientRPCsPer10k' -benchtime $(BENCHTIME) ./keyservice/server
	$(GO) test -run '^$$' -bench 'GetOrCreatePaths|KeyclientEndpoints' -benchtime $(BENCH_PATH_CALLS)x ./keyservice/server
	$(GO) test -run '^$$' -bench '^BenchmarkPubSubIngest$$' -benchtime $(or $(BENCH_PUBSUB_ROUNDS),3)x -timeout 60m ./pipelines

## fuzz: bounded fuzzing of the payload decoder, AES-GCM against
## crypto/cipher, the key client's cache (cache.Blobs) against a map, the
## message-line parser and the key server's batch-request decoder.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./schemas
	$(GO) test -run '^$$' -fuzz '^FuzzGCM$$' -fuzztime $(FUZZTIME) ./fieldcrypt
	$(GO) test -run '^$$' -fuzz '^FuzzBlobs$$' -fuzztime $(FUZZTIME) ./cache
	$(GO) test -run '^$$' -fuzz '^FuzzParseLine$$' -fuzztime $(FUZZTIME) ./record
	$(GO) test -run '^$$' -fuzz '^FuzzBatchCodec$$' -fuzztime $(FUZZTIME) ./keyservice/server

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

## generate: regenerate committed code (protobuf / connect).
generate:
	bash proto/generate.sh

clean:
	rm -rf $(DEMO_OUT)
