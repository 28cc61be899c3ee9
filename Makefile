# lockstream — the targets everyone recognizes. `make demo` and `make test`
# are the two that must work on a fresh machine.
SHELL     := /bin/bash
GO        ?= go
PKGS      ?= ./...
FUZZTIME  ?= 30s
BENCHTIME ?= 1s
BENCH_EVENTS ?= 200000
BENCH_KEY_CALLS ?= 30000
DEMO_OUT  ?= ./demo-out

.PHONY: all demo test test-race test-integration bench fuzz lint generate build clean

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

test-race:
	$(GO) test -race -count=1 -timeout 30m $$($(GO) list $(PKGS) | grep -v '/integration')

## test-integration: the end-to-end and fault-matrix scenarios (issue 7)
## against real emulators; LOCKSTREAM_SOAK shortens the 10-minute soak.
## Prints the tests' own lines whatever they contain, and the race
## detector's reports; prism's log lines ("time=...") are left out. The
## whole output goes to INTEGRATION_LOG; when the suite fails, its last
## lines that are not prism's are printed too (a panic's or timeout's stacks).
INTEGRATION_LOG ?= /tmp/lockstream-integration.log
test-integration:
	@echo "full output: $(INTEGRATION_LOG)"
	$(GO) test -race -count=1 -timeout 60m -v ./integration/... 2>&1 | tee $(INTEGRATION_LOG) | grep -E '^(=== RUN|--- |ok|FAIL|PASS|panic|WARNING: DATA RACE|==================|(Read|Write|Previous [a-z]+) at |Goroutine )|^[[:space:]]' ; \
	rc=$${PIPESTATUS[0]}; if [ $$rc -ne 0 ]; then echo "--- the last lines of $(INTEGRATION_LOG) that are not prism's:"; grep -v '^time=' $(INTEGRATION_LOG) | tail -n 60; fi; exit $$rc

## bench: benchmarks that print numbers (never pass/fail on time).
## BENCH_EVENTS=1000000 gives the 1M-event end-to-end figure. The key
## server's load benchmarks make a fixed number of calls per load level
## (BENCH_KEY_CALLS): a p99 over the ~4k calls of a 1 s run moved by
## milliseconds with where the server's few GC cycles fell.
## LOCKSTREAM_BENCH_SERVER_FLAGS passes flags to the key server the load
## benchmark starts (e.g. "--gc-percent=1000"); LOCKSTREAM_BENCH_CLIENT
## picks its load generator (wire, raw, connect).
bench:
	LOCKSTREAM_BENCH_EVENTS=$(BENCH_EVENTS) $(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./fieldcrypt ./schemas ./record ./keyservice ./keyclient/... ./pipelines
	$(GO) test -run '^$$' -bench 'Batch100|SingleKey' -benchtime $(BENCH_KEY_CALLS)x ./keyservice/server
	$(GO) test -run '^$$' -bench 'KeyclientRPCsPer10k' -benchtime $(BENCHTIME) ./keyservice/server

## fuzz: bounded fuzzing of the payload decoder, the message-line parser and
## the key server's batch-request decoder.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./schemas
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
