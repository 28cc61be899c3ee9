// Command lockstream is the one CLI of the project: ingest, hourly, view,
// key administration and the demo. Flags live only here.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"strings"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
)

func main() {
	if workerMode(os.Args[1:]) {
		// A portable runner (Dataflow) starts this same binary as its SDK
		// worker, with Beam's worker flags and no subcommand: hand over to
		// the Beam harness, which serves the job and exits.
		flag.Parse()
		beam.Init()
		fmt.Fprintln(os.Stderr, "lockstream: worker mode ended without the Beam harness taking over")
		os.Exit(1)
	}
	stop := startCPUProfile(os.Getenv("LOCKSTREAM_CPUPROFILE"))
	err := newRootCmd().Execute()
	stop()
	writeAllocProfile(os.Getenv("LOCKSTREAM_MEMPROFILE"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "lockstream:", err)
		os.Exit(exitCode(err))
	}
}

// writeAllocProfile writes the allocations of the whole command to path
// ($LOCKSTREAM_MEMPROFILE; `go tool pprof -sample_index=alloc_space`).
// "" does nothing.
func writeAllocProfile(path string) {
	if path == "" {
		return
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.Lookup("allocs").WriteTo(f, 0)
		f.Close()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "lockstream: $LOCKSTREAM_MEMPROFILE:", err)
	}
}

// startCPUProfile writes a CPU profile of the whole command to path
// ($LOCKSTREAM_CPUPROFILE; read it with `go tool pprof`), for finding where
// a slow run spends its time. "" does nothing.
func startCPUProfile(path string) (stop func()) {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "lockstream: $LOCKSTREAM_CPUPROFILE:", err)
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

// workerMode reports whether args are a Beam worker invocation: --worker
// (or --worker=true) before any subcommand.
func workerMode(args []string) bool {
	for _, a := range args {
		if !strings.HasPrefix(a, "-") {
			return false // a subcommand comes first: a CLI invocation
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if name == "worker" {
			return !hasVal || val == "true" || val == "1"
		}
	}
	return false
}
