// Command lockstream is the one CLI of the project: ingest, hourly, view,
// key administration and the demo. Flags live only here.
package main

import (
	"flag"
	"fmt"
	"os"
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
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "lockstream:", err)
		os.Exit(exitCode(err))
	}
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
