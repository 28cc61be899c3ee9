package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/runners"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/lockstream/lockstream/transforms"
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

// logLevelFor is --log-level's default for a Beam runner ("" is prism).
// Locally it is warn, which hides prism's lines for every job (its start,
// stages and end) and still shows every warning and error, the pipelines'
// own included (a key service that stays down, a failed ack). On other
// runners it is info: Dataflow's runner says at info what it submitted
// (the job id and console link, or with --dry_run the job itself).
func logLevelFor(runner string) slog.Level {
	switch runner {
	case "", "prism", "direct":
		return slog.LevelWarn
	}
	return slog.LevelInfo
}

// keyCacheSize is the value of --key-cache-size: a count of at least 1.
type keyCacheSize int

func (k *keyCacheSize) String() string { return strconv.Itoa(int(*k)) }
func (k *keyCacheSize) Type() string   { return "int" }
func (k *keyCacheSize) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return fmt.Errorf("%q is not a count of at least 1", s)
	}
	*k = keyCacheSize(n)
	return nil
}

// addKeyCacheSizeFlag adds --key-cache-size (default
// transforms.DefaultKeyCacheSize) to a command whose workers cache the
// keys of whom ("users" or "subjects") and their built ciphers.
func addKeyCacheSizeFlag(fl *pflag.FlagSet, p *keyCacheSize, whom string) {
	*p = transforms.DefaultKeyCacheSize
	fl.Var(p, "key-cache-size", "how many "+whom+"' keys, and as many built ciphers, a worker caches (~1.2 KB each): raise it for hours with more of them, lower it on small workers")
}

// addLogLevelFlag adds --log-level to a command that runs Beam pipelines.
func addLogLevelFlag(fl *pflag.FlagSet, p *string) {
	fl.StringVar(p, "log-level", "", "level of the Beam runner's and SDK's log lines on stderr: debug, info, warn or error (default warn on prism, info on other runners)")
}

// initBeam runs Beam's initialization (beam.Init) and then puts its
// logger at level ("" picks logLevelFor the --runner given). The lines keep
// Beam's format (text on stderr). Beam's own level variable is left alone:
// a runner's goroutines of an earlier job in the process may still read it.
func initBeam(level string) error {
	l := logLevelFor(*runners.Runner)
	if level != "" {
		// slog's own names (any case); its offsets such as "info+2" pass too.
		if err := l.UnmarshalText([]byte(level)); err != nil {
			return fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
		}
	}
	beam.Init()
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l, AddSource: l <= slog.LevelDebug})))
	return nil
}
