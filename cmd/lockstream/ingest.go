package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/lockstream/lockstream/clock"
	"github.com/lockstream/lockstream/completion"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/pipelines"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/schemas"
	"github.com/lockstream/lockstream/transforms"
)

func init() { register(newIngestCmd) }

// byteSize is a pflag value like "1MiB", "512KiB", "1000".
type byteSize int

func (b *byteSize) String() string { return fmt.Sprint(int(*b)) }
func (b *byteSize) Type() string   { return "size" }
func (b *byteSize) Set(s string) error {
	units := []struct {
		suffix string
		mult   int
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}
	mult := 1
	num := strings.TrimSpace(s)
	for _, u := range units {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	var n int
	if _, err := fmt.Sscanf(num, "%d", &n); err != nil || n < 1 || fmt.Sprint(n) != num {
		return fmt.Errorf("%q is not a size like 1MiB, 512KiB or 1048576", s)
	}
	*b = byteSize(n * mult)
	return nil
}

type ingestFlags struct {
	inputs        []string
	subscription  string
	out           string
	keys          string
	keyScope      string
	runID         string
	idle          time.Duration
	stopAfter     time.Duration
	maxMessages   int64
	maxPayload    byteSize
	lateness      time.Duration
	deliveryDelay time.Duration
	staleAfter    time.Duration
	streams       int
	maxOutMsgs    int
	maxOutBytes   byteSize
	pubsubRead    string
	batchSize     int
	keyRetry      time.Duration
	keyCache      keyCacheSize
	quiet         bool
	logLevel      string
	// Test hooks (hidden flags).
	testExitBeforeComplete bool
	testClockStart         string
	testClockRate          float64
}

func newIngestCmd() *cobra.Command {
	f := ingestFlags{maxPayload: byteSize(1 << 20), maxOutBytes: byteSize(transforms.DefaultMaxOutstandingBytes)}
	c := &cobra.Command{
		Use:   "ingest (--input FILE.ndjson | --subscription projects/P/subscriptions/S) --root ROOT --keys URL [flags] [beam runner flags]",
		Short: "Anonymize input messages into the raw hourly layout (Beam pipeline; prism runner locally)",
		Long: `Ingest reads Pub/Sub messages (or replay files of the same shape, one JSON message per line),
encrypts every personal field with the user's key, and writes Avro files to
  ROOT/raw/<type>/v<version>/<day>/<hour>/part-*.avro   (encrypted records)
  ROOT/deadletter/<reason>/<day>/<hour>/*.ndjson        (rejected messages, payload and attributes sealed)
  ROOT/late/<type>/v<version>/<day>/<hour>/part-*.avro  (events whose hour was already complete)
and records under ROOT/writers/<run>/ how far it has got (watermark, heartbeat, hours written).
An hour is complete (its raw _COMPLETE marker is written, by ingest or hourly) when every live
writer has passed its end plus --allowed-lateness; hourly then publishes it, and publishes late
events as numbered supplements of their hour.

Pub/Sub: --pull-streams parallel pull streams (the runner spreads them over its workers) with flow
control: a worker holds at most --max-outstanding-messages and --max-outstanding-bytes pulled and
not yet acknowledged, and pulling pauses at either limit. Every outstanding message's lease is
extended from its pull until its files are durable; then it is acknowledged. A stream's watermark
is the oldest publish time it holds, and at most the last time it found the subscription empty
minus --max-delivery-delay (how late after its publish time Pub/Sub may deliver a message; the
emulator cannot tell us). A key-service outage holds messages (leased, not late) until it ends.
Stopping: --idle-timeout drains (like a Dataflow drain: the hours the run wrote may complete);
SIGTERM or --stop-after is a planned stop: in-flight batches are written and acknowledged, each
stream records where it stopped, and later hours stay open for the next job (a second signal
aborts). --pubsub-read=dataflow uses Beam's native Pub/Sub read instead (Dataflow only).

Every run ends with an accounting table per (type, hour): in = written + dead-lettered + late,
a line of what the key caches did (size them with --key-cache-size), and the hours that are
complete or still open (and why).

Keys: --keys local:DIR (embedded key service; master key from $LOCKSTREAM_MASTER_KEY or DIR/master.key)
or http(s)://HOST:PORT (a "lockstream keys serve"; secret from $` + transforms.KeysSecretEnv + `).
Pub/Sub honours $PUBSUB_EMULATOR_HOST.

Beam flags pass through (--runner=prism is the default; e.g. --runner=dataflow --project=...).

Examples:
  lockstream ingest --input events.ndjson --root ./out --keys local:./keys
  lockstream ingest --subscription projects/p/subscriptions/events --root gs://b/ls --keys https://keys:7400
  lockstream ingest --subscription projects/p/subscriptions/events --root ./out --keys local:./keys --idle-timeout 30s`,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runIngest(cmd, &f, args)
		},
	}
	fl := c.Flags()
	fl.StringArrayVar(&f.inputs, "input", nil, "replay file (NDJSON of the message shape); repeatable")
	fl.StringVar(&f.subscription, "subscription", "", "Pub/Sub subscription projects/P/subscriptions/S")
	fl.StringVar(&f.out, "root", "", "output root: a directory or gs://bucket/prefix (required)")
	addAlias(fl, "out", "root")
	addDryRunFlag(fl, new(bool))
	fl.StringVar(&f.keys, "keys", os.Getenv("LOCKSTREAM_KEYS"), "key service: local:DIR or http(s)://HOST:PORT (default $LOCKSTREAM_KEYS)")
	fl.StringVar(&f.keyScope, "key-scope", transforms.DefaultKeyScope, "key-derivation scope (readers must use the same)")
	fl.StringVar(&f.runID, "run-id", "", "this run's id, the prefix of its file names (default: time and random; a used one is refused)")
	fl.DurationVar(&f.idle, "idle-timeout", 0, "Pub/Sub: drain after no message arrived for this long; the hours the run wrote may complete (0: run until stopped)")
	fl.DurationVar(&f.stopAfter, "stop-after", 0, "Pub/Sub: planned stop after this long, as on SIGTERM: later hours stay open for the next job (0: never)")
	fl.Int64Var(&f.maxMessages, "max-messages", 0, "Pub/Sub: planned stop after about this many messages (0: no limit)")
	fl.Var(&f.maxPayload, "max-payload", "largest payload accepted; larger ones are dead-lettered as oversized")
	fl.DurationVar(&f.lateness, "allowed-lateness", pipelines.DefaultAllowedLateness, "an hour completes when every live writer's watermark passed its end plus this (0: at its end)")
	fl.DurationVar(&f.deliveryDelay, "max-delivery-delay", transforms.DefaultMaxDeliveryDelay, "Pub/Sub: how late after its publish time a message may still be delivered (bounds the watermark)")
	fl.DurationVar(&f.staleAfter, "stale-after", completion.DefaultStaleAfter, "how long after its last heartbeat a writer of this run counts as dead (it then holds no hour; at least 40s)")
	fl.IntVar(&f.streams, "pull-streams", transforms.DefaultPullStreams, "Pub/Sub: parallel pull streams of the job (on prism, as many run at once as there are cores)")
	fl.IntVar(&f.maxOutMsgs, "max-outstanding-messages", transforms.DefaultMaxOutstandingMessages, "Pub/Sub: most messages a worker holds pulled and not yet acknowledged")
	fl.Var(&f.maxOutBytes, "max-outstanding-bytes", "Pub/Sub: most bytes a worker holds pulled and not yet acknowledged")
	fl.StringVar(&f.pubsubRead, "pubsub-read", pipelines.PubSubReadPull, "Pub/Sub: pull (lockstream's own source, any runner) or dataflow (Beam's native read, Dataflow only)")
	fl.BoolVar(&f.testExitBeforeComplete, "test-exit-before-complete", false, "tests: SIGKILL the process just before it marks an hour complete")
	fl.StringVar(&f.testClockStart, "test-clock-start", "", "tests: run on a clock that starts at this RFC 3339 time")
	fl.Float64Var(&f.testClockRate, "test-clock-rate", 1, "tests: with --test-clock-start, clock seconds per real second")
	for _, n := range []string{"test-exit-before-complete", "test-clock-start", "test-clock-rate"} {
		_ = fl.MarkHidden(n)
	}
	fl.IntVar(&f.batchSize, "batch-size", 0, fmt.Sprintf("messages per batch: one fsynced file per (type, hour) each, a key lookup per 500 messages (0: %d for files, %d for Pub/Sub, its most)", pipelines.DefaultReplayBatchSize, pipelines.DefaultBatchSize))
	fl.DurationVar(&f.keyRetry, "key-retry-budget", transforms.DefaultKeyRetryBudget, "how long a batch retries an unavailable key service: then a replay run fails with the cause (re-run it once the service answers); Pub/Sub batches are held and retried on")
	addKeyCacheSizeFlag(fl, &f.keyCache, "users")
	fl.BoolVar(&f.quiet, "quiet", false, "no progress lines on stderr")
	addLogLevelFlag(fl, &f.logLevel)
	return c
}

// splitArgs separates this command's flags from Beam's (registered on the
// standard flag set by the Beam packages).
func splitArgs(own *pflag.FlagSet, args []string) (mine, beamArgs []string, help bool, err error) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "-h" || a == "--help" || a == "-help" {
			return nil, nil, true, nil
		}
		if !strings.HasPrefix(a, "-") || a == "-" || a == "--" {
			return nil, nil, false, fmt.Errorf("unexpected argument %q (ingest takes only flags)", a)
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if fl := own.Lookup(name); fl != nil {
			mine = append(mine, a)
			if !hasValue && fl.Value.Type() != "bool" && i+1 < len(args) {
				i++
				mine = append(mine, args[i])
			}
			continue
		}
		if fl := flag.CommandLine.Lookup(name); fl != nil {
			beamArgs = append(beamArgs, a)
			if bf, ok := fl.Value.(interface{ IsBoolFlag() bool }); !hasValue && !(ok && bf.IsBoolFlag()) && i+1 < len(args) {
				i++
				beamArgs = append(beamArgs, args[i])
			}
			continue
		}
		return nil, nil, false, fmt.Errorf("unknown flag %s (see lockstream ingest --help)", a)
	}
	return mine, beamArgs, false, nil
}

// parseWithBeamFlags parses a pipeline command's own flags into its flag
// set and passes the rest to Beam's (the standard flag set). help reports
// that -h/--help was given.
func parseWithBeamFlags(cmd *cobra.Command, args []string) (help bool, err error) {
	mine, beamArgs, help, err := splitArgs(cmd.Flags(), args)
	if help || err != nil {
		return help, err
	}
	if err := cmd.Flags().Parse(mine); err != nil {
		return false, err
	}
	if err := flag.CommandLine.Parse(beamArgs); err != nil {
		return false, fmt.Errorf("beam flags: %w", err)
	}
	if f := cmd.Flags().Lookup("dry-run"); f != nil && f.Value.String() == "true" {
		if err := applyDryRun(true); err != nil {
			return false, err
		}
	}
	// --project means one GCP project to a command (hourly's BigQuery) and
	// to the Dataflow runner alike.
	if f := cmd.Flags().Lookup("project"); f != nil && f.Changed && flag.CommandLine.Lookup("project") != nil {
		if err := flag.CommandLine.Set("project", f.Value.String()); err != nil {
			return false, err
		}
	}
	return false, nil
}

// exitConfig is the exit code of a command whose configuration is wrong
// (flags, addresses, credentials): it stopped before reading any input.
const exitConfig = 2

// configError makes err a configuration error (exitConfig).
func configError(err error) error { return &exitError{code: exitConfig, err: err} }

func runIngest(cmd *cobra.Command, f *ingestFlags, args []string) error {
	if help, err := parseWithBeamFlags(cmd, args); help {
		return cmd.Help()
	} else if err != nil {
		return configError(err)
	}
	switch {
	case len(f.inputs) == 0 && f.subscription == "":
		return configError(errors.New("give --input FILE or --subscription projects/P/subscriptions/S"))
	case len(f.inputs) > 0 && f.subscription != "":
		return configError(errors.New("--input and --subscription exclude each other"))
	case f.out == "":
		return configError(errors.New("--root ROOT is required"))
	case f.keys == "":
		return configError(errors.New("--keys is required (local:DIR or http(s)://HOST:PORT[,http(s)://HOST:PORT…]; or set LOCKSTREAM_KEYS)"))
	case strings.HasPrefix(f.keys, "registered:"):
		return configError(errors.New("--keys: registered: sources exist only inside tests"))
	case f.subscription == "" && (f.idle > 0 || f.maxMessages > 0 || f.stopAfter > 0):
		return configError(errors.New("--idle-timeout, --stop-after and --max-messages apply to --subscription only"))
	}
	if err := transforms.ValidateKeysURL(f.keys); err != nil {
		return configError(fmt.Errorf("--keys: %s", keysURLProblem(err)))
	}
	if err := checkKeyAccess(cmd, f); err != nil {
		return configError(err)
	}
	if err := initBeam(f.logLevel); err != nil {
		return err
	}

	lateness := f.lateness
	if lateness == 0 {
		lateness = -1 // none (IngestConfig's 0 means the default)
	}
	cfg := pipelines.IngestConfig{
		Inputs: f.inputs, Subscription: f.subscription, Out: f.out, KeysURL: f.keys, KeyScope: f.keyScope, RunID: f.runID,
		MaxPayload: int(f.maxPayload), BatchSize: f.batchSize, KeyRetryBudget: f.keyRetry, KeyCacheSize: int(f.keyCache),
		StaleAfter: f.staleAfter, ExitBeforeComplete: f.testExitBeforeComplete,
	}
	if f.subscription != "" {
		cfg.IdleTimeout, cfg.StopAfter, cfg.MaxMessages, cfg.AllowedLateness = f.idle, f.stopAfter, f.maxMessages, lateness
		cfg.MaxDeliveryDelay, cfg.Streams, cfg.PubSubRead = f.deliveryDelay, f.streams, f.pubsubRead
		cfg.MaxOutstandingMessages, cfg.MaxOutstandingBytes = f.maxOutMsgs, int64(f.maxOutBytes)
	}
	if f.testClockStart != "" {
		start, err := time.Parse(time.RFC3339, f.testClockStart)
		if err != nil {
			return fmt.Errorf("--test-clock-start: %w", err)
		}
		cfg.Clock = clock.Starting(start, f.testClockRate)
	}
	if cfg.RunID == "" {
		cfg.RunID = pipelines.NewRunID()
	}
	if !f.quiet {
		cfg.Progress = cmd.ErrOrStderr()
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(cmd.Context()))
	defer cancel()
	stopSignals := plannedStopOnSignal(ctx, cancel, cmd.ErrOrStderr(), cfg)
	defer stopSignals()
	res, err := pipelines.Ingest(ctx, cfg)
	if errors.Is(err, pipelines.ErrDryRun) {
		return dryRunDone(cmd.ErrOrStderr())
	}
	if err != nil {
		return err
	}
	res.WriteTable(cmd.OutOrStdout())
	return nil
}

// keysURLProblem is what ValidateKeysURL's error says is wrong, without
// the packages' prefixes.
func keysURLProblem(err error) string {
	msg := strings.TrimPrefix(err.Error(), transforms.ErrKeysURL.Error())
	msg = strings.TrimPrefix(strings.TrimPrefix(msg, ":"), " ")
	return strings.TrimPrefix(msg, keyclient.ErrConfig.Error()+": ")
}

// keyAccessTimeout bounds checkKeyAccess's lookup per endpoint.
const keyAccessTimeout = 5 * time.Second

// checkKeyAccess asks a remote key service, when this process holds the
// secret ($LOCKSTREAM_KEYS_SECRET), whether it may get the keys ingest will
// ask for: a refused secret or a missing right fails the command before it
// reads input. A service that does not answer yet is not an error here
// (Pub/Sub batches wait for it; a replay fails after --key-retry-budget).
// Without the secret (on Dataflow it may live only on the workers) the job
// fails at its first refused call instead: refusals are never retried.
func checkKeyAccess(cmd *cobra.Command, f *ingestFlags) error {
	secret := os.Getenv(transforms.KeysSecretEnv)
	if !keyclient.IsRemoteURL(f.keys) || secret == "" {
		return nil
	}
	cats := []string{record.PayloadCategory}
	reg, err := schemas.Embedded()
	if err != nil {
		return err
	}
	for _, s := range reg.All() {
		for _, c := range s.Categories() {
			if !slices.Contains(cats, c) {
				cats = append(cats, c)
			}
		}
	}
	slices.Sort(cats)
	err = keyclient.CheckAccess(cmdContext(cmd), f.keys, keyclient.Options{Scope: f.keyScope, Secret: secret}, cats, keyAccessTimeout)
	switch {
	case err == nil:
		return nil
	case keyclient.IsTransient(err):
		if !f.quiet {
			fmt.Fprintf(cmd.ErrOrStderr(), "ingest: warning: the key service does not answer yet (%v); starting anyway\n", err)
		}
		return nil
	}
	return fmt.Errorf("--keys: the key service refused this service's secret or rights ($%s, --key-scope %s): %w", transforms.KeysSecretEnv, f.keyScope, err)
}

// plannedStopOnSignal turns the first SIGTERM or SIGINT of a Pub/Sub run
// into a planned stop (the run's stop object, which every stream looks
// for): in-flight batches are written and acknowledged, each stream
// records where it stopped. A second signal, or any signal during a replay
// run, aborts (cancel): nothing unwritten is acknowledged.
func plannedStopOnSignal(ctx context.Context, cancel func(), w io.Writer, cfg pipelines.IngestConfig) (stop func()) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan struct{})
	go func() {
		asked := false
		for {
			select {
			case <-done:
				return
			case sig := <-sigs:
				if asked || cfg.Subscription == "" {
					fmt.Fprintf(w, "ingest: %s: aborting\n", sig)
					cancel()
					continue
				}
				asked = true
				fmt.Fprintf(w, "ingest: %s: stopping run %s (in-flight batches are written and acknowledged; signal again to abort)\n", sig, cfg.RunID)
				if err := pipelines.RequestStop(ctx, cfg.Out, cfg.RunID); err != nil {
					fmt.Fprintf(w, "ingest: cannot ask for a planned stop (%v): aborting\n", err)
					cancel()
				}
			}
		}
	}()
	return func() { signal.Stop(sigs); close(done) }
}

// dryRunDone reports a finished dry run (Beam's --dry_run with
// --runner=dataflow): the job was built, validated and printed above.
func dryRunDone(w io.Writer) error {
	fmt.Fprintln(w, "dry run: the Dataflow job above was built and validated, not submitted; nothing was read, written or published")
	return nil
}
