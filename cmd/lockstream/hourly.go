package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/bq"
	"github.com/lockstream/lockstream/dataset"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/pipelines"
	"github.com/lockstream/lockstream/transforms"
)

func init() { register(newHourlyCmd) }

// Exit codes of `hourly` for schedulers.
const (
	exitNothingReady = 3
)

type hourlyFlags struct {
	root, hour, since, until string
	types                    []string
	version                  int
	force, verify            bool
	lookback                 time.Duration
	shards                   int
	keyScope                 string
	watch                    time.Duration
	supplementHorizon        time.Duration
	bigquery                 string // dataset to load each published hour into ("" = none)
	bq                       bqCommon
	logLevel                 string
	gcsRoot                  string
	// now is the time the range and the supplement horizon end at (tests;
	// nil = the system clock).
	now func() time.Time
}

func newHourlyCmd() *cobra.Command {
	f := hourlyFlags{}
	c := &cobra.Command{
		Use:   "hourly --root ROOT (--hour 2026-11-23T06 | --since T [--until T]) [flags] [beam runner flags]",
		Short: "Publish closed hours as immutable, deduplicated datasets (Beam pipeline; prism runner locally)",
		Long: `hourly publishes one (type, version, hour) at a time: it dedupes the raw and late records of the
hour by event id (and drops event ids already published in the neighbouring --lookback hours),
writes
  ROOT/datasets/<type>/v<version>/<day>/<hour>/part-*.avro
then _MANIFEST.json (counts, files, sha256, schema fingerprint, input accounting, the raw and
late part files consumed, lineage, run id) and last _SUCCESS. A published part is never
rewritten. An hour is published once it is complete: every ingest writer that could still add
to it has passed it (the writers' records under ROOT/writers/ decide; the _COMPLETE marker shows
the decision). A not-ready hour prints why; --force publishes it anyway.

Late data is published, not dropped: part files of a published hour that no manifest lists yet
(late events, a writer that missed the hour's end) become a numbered supplement,
  ROOT/datasets/<type>/v<version>/<day>/<hour>/late-0001/ (part-*.avro, _MANIFEST.json, _SUCCESS)
deduplicated against the hour's earlier parts and the neighbouring hours. A re-run with nothing
pending does nothing (--verify re-checks the checksums of every part).

Concurrent runs are safe: each (type, version, hour) is published under a lease
(ROOT/leases/...), renewed while the run works and taken over by another run only once it
expired; files are staged under ROOT/tmp/hourly/<run>/ and copied into place, and the lease is
re-checked before _MANIFEST.json and before _SUCCESS. An hour whose lease another run holds is
skipped with one line ("skipped: run X ... is publishing it"), and no later hour of that type
and version is published in this run (their dedupe needs it); that is not a failure.

--since/--until process every hour in [since, until) in order (until defaults to the current
hour): the catch-up mode a scheduler calls every hour. A not-ready hour stops the later hours of
its type and version only. After the range (and on every --watch round), pending supplements of
every published hour within --supplement-horizon before now are published too, whatever
--since says, oldest first.

Exit codes: 0 done (published, already published, or skipped because another run holds the
lease), 3 nothing ready (nothing was published and some hour is not complete), 1 failed.

Examples:
  lockstream hourly --root ./out --hour 2026-11-23T06
  lockstream hourly --root gs://bucket/ls --since 2026-11-23T00 --type PlaybackEvent
  lockstream hourly --root ./out --since 2026-11-23T00 --watch 5m     # no scheduler: poll`,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if help, err := parseWithBeamFlags(cmd, args); help {
				return cmd.Help()
			} else if err != nil {
				return err
			}
			if err := initBeam(f.logLevel); err != nil {
				return err
			}
			return runHourly(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), f)
		},
	}
	fl := c.Flags()
	hourlyFlagSet(fl, &f)
	return c
}

// defaultSupplementHorizon is --supplement-horizon's default: a week.
const defaultSupplementHorizon = 7 * 24 * time.Hour

func hourlyFlagSet(fl *pflag.FlagSet, f *hourlyFlags) {
	fl.StringVar(&f.root, "root", "", "output root of ingest: a directory or gs://bucket/prefix (required)")
	fl.StringVar(&f.hour, "hour", "", "the hour to publish, e.g. 2026-11-23T06 (UTC)")
	fl.StringVar(&f.since, "since", "", "publish every hour from this one on (catch-up mode)")
	fl.StringVar(&f.until, "until", "", "with --since: stop before this hour (default: the current hour)")
	fl.StringSliceVar(&f.types, "type", nil, "event types (default: every type with raw data in the hour)")
	fl.IntVar(&f.version, "version", 0, "schema version (default: every version with raw data)")
	fl.BoolVar(&f.force, "force", false, "publish hours that are not complete yet (and mark them complete)")
	fl.BoolVar(&f.verify, "verify", false, "for already published hours, re-check every file of every part against its manifest")
	fl.DurationVar(&f.lookback, "lookback", time.Hour, "drop event ids already published this far before and after the hour (0: none)")
	fl.IntVar(&f.shards, "shards", pipelines.DefaultShards, "dataset files per part (keep it fixed: it is part of the output)")
	fl.StringVar(&f.keyScope, "key-scope", transforms.DefaultKeyScope, "key scope the data was written with (recorded in the lineage)")
	fl.DurationVar(&f.watch, "watch", 0, "with --since: keep running, checking for newly closed hours this often")
	fl.DurationVar(&f.supplementHorizon, "supplement-horizon", defaultSupplementHorizon,
		"with --since: also publish the pending late supplements of every published hour this far before now (0: none)")
	fl.StringVar(&f.bigquery, "bigquery-dataset", "", "after publishing, load each hour into this BigQuery dataset (see lockstream bq load); needs --project")
	fl.StringVar(&f.bq.project, "project", "", "GCP project of --bigquery-dataset (default $GOOGLE_CLOUD_PROJECT)")
	fl.StringVar(&f.bq.endpoint, "bigquery-endpoint", "", "BigQuery API endpoint (a test server; no authentication is sent)")
	addLogLevelFlag(fl, &f.logLevel)
	fl.StringVar(&f.gcsRoot, "gcs-root", "", "with --bigquery-dataset and a local --root: the gs:// location of the same root")
	addAlias(fl, "bigquery", "bigquery-dataset")
	addDryRunFlag(fl, new(bool))
}

func runHourly(ctx context.Context, stdout, stderr io.Writer, f hourlyFlags) error {
	if ctx == nil {
		ctx = context.Background()
	}
	if f.root == "" {
		return errors.New("--root is required")
	}
	if (f.hour == "") == (f.since == "") {
		return errors.New("give --hour H or --since H (exactly one)")
	}
	if f.watch > 0 && f.since == "" {
		return errors.New("--watch needs --since")
	}
	if f.supplementHorizon < 0 {
		return errors.New("--supplement-horizon must not be negative")
	}
	if f.now == nil {
		f.now = time.Now
	}
	lookback := f.lookback
	if lookback == 0 {
		lookback = -1 // none
	}
	b, err := blob.Open(ctx, f.root)
	if err != nil {
		return err
	}
	var loader *bq.Loader
	if f.bigquery != "" {
		if f.bq.project == "" {
			f.bq.project = os.Getenv("GOOGLE_CLOUD_PROJECT")
		}
		if f.gcsRoot == "" {
			f.gcsRoot = f.root
		}
		if !strings.HasPrefix(f.gcsRoot, "gs://") {
			return errors.New("--bigquery-dataset loads from GCS: give a gs:// --root (or --gcs-root)")
		}
		client, err := f.bq.client(ctx)
		if err != nil {
			return err
		}
		defer client.Close()
		// Its own logger: one line per load job at info, whatever
		// --log-level does to Beam's.
		loader = &bq.Loader{Client: client, Dataset: f.bigquery, Log: slog.New(slog.NewTextHandler(stderr, nil))}
	}
	var from, to time.Time
	if f.hour != "" {
		if from, err = layout.ParseHour(f.hour); err != nil {
			return err
		}
		to = from.Add(time.Hour)
	} else {
		if from, err = layout.ParseHour(f.since); err != nil {
			return err
		}
		if f.until != "" {
			if to, err = layout.ParseHour(f.until); err != nil {
				return err
			}
		}
	}
	p := &hourlyPublisher{ctx: ctx, b: b, stdout: stdout, stderr: stderr, f: f, lookback: lookback, loader: loader}
	for {
		// A round is a run: its own run id, and the (type, version)s it
		// stopped at start again.
		p.newRound()
		now := f.now().UTC()
		end := to
		if end.IsZero() {
			end = now.Truncate(time.Hour)
		}
		err := p.publishHours(from, end)
		if err == nil && f.since != "" && f.supplementHorizon > 0 {
			err = p.publishSupplements(now.Add(-f.supplementHorizon), now)
		}
		if errors.Is(err, errDryRunDone) {
			return dryRunDone(stderr)
		}
		if err != nil {
			return &exitError{code: 1, err: err}
		}
		if f.watch == 0 {
			if p.published == 0 && p.notReady > 0 {
				return &exitError{code: exitNothingReady, err: fmt.Errorf("nothing ready: %d hour(s) not complete yet", p.notReady)}
			}
			if p.handled == 0 {
				fmt.Fprintln(stderr, "hourly: no raw data in the given hours")
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(f.watch):
		}
	}
}

// publishRange publishes every (type, version) of every hour in [from, to)
// as one run (see hourlyPublisher.publishHours).
func publishRange(ctx context.Context, b blob.Bucket, stdout, stderr io.Writer, f hourlyFlags, from, to time.Time, lookback time.Duration, loader *bq.Loader) (published, notReady int, err error) {
	p := &hourlyPublisher{ctx: ctx, b: b, stdout: stdout, stderr: stderr, f: f, lookback: lookback, loader: loader}
	p.newRound()
	err = p.publishHours(from, to)
	if errors.Is(err, errDryRunDone) {
		err = dryRunDone(stderr)
	}
	if err == nil && p.handled == 0 {
		fmt.Fprintln(stderr, "hourly: no raw data in the given hours")
	}
	return p.published, p.notReady, err
}

// errDryRunDone: a dry run printed its job; the command ends there.
var errDryRunDone = errors.New("dry run done")

type typeVersion struct {
	typ     string
	version int
}

// hourlyPublisher publishes hours and prints one table row per
// (type, version, hour) part.
type hourlyPublisher struct {
	ctx            context.Context
	b              blob.Bucket
	stdout, stderr io.Writer
	f              hourlyFlags
	lookback       time.Duration
	loader         *bq.Loader

	runID string
	// stopped are the (type, version)s this run publishes no more hours of:
	// an hour of it was not ready or another run holds its lease, and a
	// later hour's dedupe needs that one published first.
	stopped map[typeVersion]bool
	// published counts parts published, notReady hours not complete,
	// handled every hour reported (whatever its outcome).
	published, notReady, handled int
	header                       bool
}

func (p *hourlyPublisher) newRound() {
	p.runID = pipelines.NewRunID()
	p.stopped = map[typeVersion]bool{}
}

func (p *hourlyPublisher) wanted(h layout.Hour) bool {
	if len(p.f.types) > 0 && !slices.Contains(p.f.types, h.Type) || p.f.version > 0 && h.Version != p.f.version {
		return false
	}
	return !p.stopped[typeVersion{h.Type, h.Version}]
}

// publishHours publishes every (type, version) of every hour in [from, to),
// in order: the main part of an hour not published yet, a supplement of
// one with pending late data. A not-ready hour, or one another run is
// publishing, stops the later hours of its (type, version) in this run.
func (p *hourlyPublisher) publishHours(from, to time.Time) error {
	for hr := from; hr.Before(to); hr = hr.Add(time.Hour) {
		hs, err := pipelines.RawHours(p.ctx, p.b, hr)
		if err != nil {
			return err
		}
		if err := p.publish(hs); err != nil {
			return err
		}
	}
	return nil
}

// publishSupplements publishes the pending supplements of the published
// hours in [from, to), oldest first.
func (p *hourlyPublisher) publishSupplements(from, to time.Time) error {
	hs, err := pipelines.PendingSupplements(p.ctx, p.b, from, to)
	if err != nil {
		return err
	}
	for len(hs) > 0 {
		n := 1
		for n < len(hs) && hs[n].Hour.Equal(hs[0].Hour) {
			n++
		}
		if err := p.publish(hs[:n]); err != nil {
			return err
		}
		hs = hs[n:]
	}
	return nil
}

// publish publishes the wanted ones of hs (of one hour: one Beam job) and
// reports each.
func (p *hourlyPublisher) publish(hs []layout.Hour) error {
	f := p.f
	var cfgs []pipelines.HourlyConfig
	for _, h := range hs {
		if p.wanted(h) {
			cfgs = append(cfgs, pipelines.HourlyConfig{Root: f.root, Type: h.Type, Version: h.Version, Hour: h.Hour,
				Force: f.force, Lookback: p.lookback, Shards: f.shards, KeyScope: f.keyScope, Log: p.stderr, RunID: p.runID})
		}
	}
	if len(cfgs) == 0 {
		return nil
	}
	var firstErr error
	for k, o := range pipelines.HourlyMany(p.ctx, cfgs) {
		h := layout.Hour{Type: cfgs[k].Type, Version: cfgs[k].Version, Hour: cfgs[k].Hour}
		if err := p.report(h, o); err != nil {
			if errors.Is(err, errDryRunDone) {
				return err
			}
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	return firstErr
}

// report prints the outcome of one hour (and loads it into BigQuery).
func (p *hourlyPublisher) report(h layout.Hour, o pipelines.HourlyOutcome) error {
	res, err := o.Result, o.Err
	if !errors.Is(err, pipelines.ErrDryRun) {
		p.handled++
	}
	var held *dataset.HeldError
	var notReady *pipelines.NotReadyError
	switch {
	case errors.Is(err, pipelines.ErrDryRun):
		return errDryRunDone
	case errors.As(err, &notReady):
		fmt.Fprintf(p.stderr, "hourly %s: not ready: %s; later hours of %s v%d wait\n", h, notReady.Decision.Reason, h.Type, h.Version)
		p.notReady++
		p.stopped[typeVersion{h.Type, h.Version}] = true
		return nil
	case errors.As(err, &held):
		fmt.Fprintf(p.stderr, "hourly %s: skipped: run %s (%s) is publishing it, lease until %s; later hours of %s v%d are left to it\n",
			h, held.RunID, held.Holder, held.Expires.UTC().Format(time.RFC3339), h.Type, h.Version)
		p.stopped[typeVersion{h.Type, h.Version}] = true
		return nil
	case err != nil:
		p.stopped[typeVersion{h.Type, h.Version}] = true
		return err
	}
	if res.State == pipelines.StateAlreadyPublished && p.f.verify {
		if err := pipelines.VerifyHour(p.ctx, p.b, h); err != nil {
			return err
		}
	}
	if res.State == pipelines.StatePublished || res.State == pipelines.StatePublishedSupplement {
		p.published++
	}
	if p.loader != nil {
		// Idempotent: an hour already loaded as it is now issues no job.
		lr, err := p.loader.LoadHour(p.ctx, p.b, h, p.f.gcsRoot)
		if err != nil {
			return fmt.Errorf("bigquery load %s: %w", h, err)
		}
		if !lr.Skipped {
			fmt.Fprintf(p.stderr, "hourly %s: loaded %d rows into %s (job %s)\n", h, lr.Records, lr.Table, lr.JobID)
		}
	}
	if !p.header {
		fmt.Fprintf(p.stdout, "%-16s %-3s %-13s %-20s %9s %9s %9s %9s %7s\n", "TYPE", "V", "HOUR", "STATE", "IN", "PUBLISHED", "DUPS", "LOOKBACK", "LATE")
		p.header = true
	}
	state := res.State
	if res.State == pipelines.StatePublishedSupplement {
		state += " " + res.Part
	}
	a := res.Manifest.Input
	fmt.Fprintf(p.stdout, "%-16s %-3d %-13s %-20s %9d %9d %9d %9d %7d\n", h.Type, h.Version, layout.FormatHour(h.Hour), state,
		a.RawRecords+a.LateRecords, res.Manifest.Records, a.DuplicatesDropped, a.LookbackDropped, a.LateRecords)
	return nil
}
