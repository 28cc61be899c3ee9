// Command lockstream is the one CLI of the project: ingest, hourly, view,
// key administration and the demo. Flags live only here.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "lockstream:", err)
		os.Exit(exitCode(err))
	}
}
