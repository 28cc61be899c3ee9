#!/usr/bin/env bash
# Runs the integration suite as two `go test` processes side by side (most
# of its tests wait on emulators, timers and child processes rather than
# compute): shard A the tests named in INTEGRATION_SHARD_A, shard B the
# rest. Each process has its own globals, prism and key caches, so the
# split changes what runs beside what, never what a test checks; the
# emulators are shared, and every test works in a project and topics of
# its own.
#
# Prints the tests' own lines, prefixed with their shard, and the race
# detector's reports; prism's log lines ("time=...") are left out. The
# whole output of shard X goes to $INTEGRATION_LOG.X; when a shard fails,
# its last lines that are not prism's are printed too (a panic's or
# timeout's stacks). Exits non-zero when either shard fails.
set -uo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
LOG=${INTEGRATION_LOG:-/tmp/lockstream-integration.log}
# About half of the suite's time each: measured side by side on 2 cores,
# shard A took 524 s and B 438 s with scenarios 6, 8 and 10 (47 s) in A.
A=${INTEGRATION_SHARD_A:-'TestScenario09_Soak|TestScenario01_KeyServiceDownAndSlow|TestDisasterKeyServiceGroups|TestIngestHourlyOnGCSWithFaults|TestBQCommandsEndToEnd|TestDataflowDryRun|TestWorkerInvocationReachesBeamHarness'}
keep='^(=== RUN|--- |ok|FAIL|PASS|panic|WARNING: DATA RACE|==================|(Read|Write|Previous [a-z]+) at |Goroutine )|^[[:space:]]'

# shard NAME FLAG PATTERN: the integration package's tests that FLAG (-run
# or -skip) PATTERN selects, then, for -skip, the invariants package. One
# package per go test: go test streams -v output only then.
shard() {
  local name=$1 flag=$2 pattern=$3 rc
  (
    "$GO" test -race -count=1 -timeout 60m -v "$flag" "^($pattern)\$" ./integration/
    rc=$?
    if [ "$flag" = -skip ]; then
      "$GO" test -race -count=1 -timeout 10m -v ./integration/invariants/ || rc=1
    fi
    exit $rc
  ) >"$LOG.$name" 2>&1
  rc=$?
  if [ $rc -ne 0 ]; then
    echo "[$name] --- the last lines of $LOG.$name that are not prism's:"
    grep -v '^time=' "$LOG.$name" | tail -n 60 | sed "s/^/[$name] /"
  fi
  return $rc
}

echo "full output: $LOG.a and $LOG.b"
: >"$LOG.a"; : >"$LOG.b"
shard a -run "$A" &
pa=$!
shard b -skip "$A" &
pb=$!
# Live progress: each shard's kept lines as they come; each tail ends with
# its shard.
tail -n +1 -F --pid=$pa "$LOG.a" 2>/dev/null | grep --line-buffered -E "$keep" | sed -u 's/^/[a] /' &
tail -n +1 -F --pid=$pb "$LOG.b" 2>/dev/null | grep --line-buffered -E "$keep" | sed -u 's/^/[b] /' &
wait $pa; ra=$?
wait $pb; rb=$?
wait
echo "integration: shard a rc=$ra, shard b rc=$rb"
[ $ra -eq 0 ] && [ $rb -eq 0 ]
