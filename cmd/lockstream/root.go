package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// subcommands are registered by each command file's init so that files for
// different areas (keys, ingest, hourly, …) never have to edit one list.
var subcommands []func() *cobra.Command

func register(f func() *cobra.Command) { subcommands = append(subcommands, f) }

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "lockstream",
		Short:         "Streaming anonymization and hourly event datasets with crypto-shredding",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	for _, f := range subcommands {
		root.AddCommand(f())
	}
	return root
}

// exitError carries a process exit code chosen by a command (for example the
// scheduler-facing codes of `hourly`).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func exitCode(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}
