package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/bq"
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
	bigquery                 string // dataset to load each published hour into ("" = none)
	bq                       bqCommon
	logLevel                 string
	gcsRoot                  string
}

func newHourlyCmd() *cobra.Command {
	f := hourlyFlags{}
	c := &cobra.Command{
		Use:   "hourly --root ROOT (--hour 2026-11-23T06 | --since T [--until T]) [flags] [beam runner flags]",
		Short: "Publish closed hours as immutable, deduplicated datasets (Beam pipeline; prism runner locally)",
		Long: `hourly publishes one (type, version, hour) at a time: it dedupes the raw and late records of the
hour by event id (and drops event ids already published in the --lookback hours before), writes
  ROOT/datasets/<type>/v<version>/<day>/<hour>/part-*.avro
then _MANIFEST.json (counts, files, sha256, schema fingerprint, input accounting, lineage) and
last _SUCCESS. A published hour is never rewritten: a re-run finds _SUCCESS and does nothing
(--verify re-checks its checksums). Without the raw _COMPLETE marker an hour is not ready
(use --force to publish anyway). Leftovers of a crashed run are removed and rewritten
(byte-identical: the output is a pure function of the input).

--since/--until process every hour in [since, until) in order (until defaults to the current
hour): the catch-up mode a scheduler calls every hour.

Exit codes: 0 done (published or already published), 3 nothing ready (some hour lacks
_COMPLETE and nothing was published), 1 failed.

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

func hourlyFlagSet(fl *pflag.FlagSet, f *hourlyFlags) {
	fl.StringVar(&f.root, "root", "", "output root of ingest: a directory or gs://bucket/prefix (required)")
	fl.StringVar(&f.hour, "hour", "", "the hour to publish, e.g. 2026-11-23T06 (UTC)")
	fl.StringVar(&f.since, "since", "", "publish every hour from this one on (catch-up mode)")
	fl.StringVar(&f.until, "until", "", "with --since: stop before this hour (default: the current hour)")
	fl.StringSliceVar(&f.types, "type", nil, "event types (default: every type with raw data in the hour)")
	fl.IntVar(&f.version, "version", 0, "schema version (default: every version with raw data)")
	fl.BoolVar(&f.force, "force", false, "publish without the raw _COMPLETE marker")
	fl.BoolVar(&f.verify, "verify", false, "for already published hours, re-check every file against the manifest")
	fl.DurationVar(&f.lookback, "lookback", time.Hour, "drop event ids already published this far back (0: none)")
	fl.IntVar(&f.shards, "shards", pipelines.DefaultShards, "dataset files per hour (keep it fixed: it is part of the output)")
	fl.StringVar(&f.keyScope, "key-scope", transforms.DefaultKeyScope, "key scope the data was written with (recorded in the lineage)")
	fl.DurationVar(&f.watch, "watch", 0, "with --since: keep running, checking for newly closed hours this often")
	fl.StringVar(&f.bigquery, "bigquery", "", "after publishing, load each hour into this BigQuery dataset (see lockstream bq load); needs --project")
	fl.StringVar(&f.bq.project, "project", "", "GCP project of --bigquery (default $GOOGLE_CLOUD_PROJECT)")
	fl.StringVar(&f.bq.endpoint, "bigquery-endpoint", "", "BigQuery API endpoint (a test server; no authentication is sent)")
	addLogLevelFlag(fl, &f.logLevel)
	fl.StringVar(&f.gcsRoot, "gcs-root", "", "with --bigquery and a local --root: the gs:// location of the same root")
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
			return errors.New("--bigquery loads from GCS: give a gs:// --root (or --gcs-root)")
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
	for {
		end := to
		if end.IsZero() {
			end = time.Now().UTC().Truncate(time.Hour)
		}
		published, notReady, err := publishRange(ctx, b, stdout, stderr, f, from, end, lookback, loader)
		if err != nil {
			return &exitError{code: 1, err: err}
		}
		if f.watch == 0 {
			if published == 0 && notReady > 0 {
				return &exitError{code: exitNothingReady, err: fmt.Errorf("nothing ready: %d hour(s) lack their _COMPLETE marker", notReady)}
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

// publishRange publishes every (type, version) of every hour in [from, to).
// A not-ready hour stops the range: later hours wait for it (lookback needs
// the hours before to be published first).
func publishRange(ctx context.Context, b blob.Bucket, stdout, stderr io.Writer, f hourlyFlags, from, to time.Time, lookback time.Duration, loader *bq.Loader) (published, notReady int, err error) {
	wantType := map[string]bool{}
	for _, t := range f.types {
		wantType[t] = true
	}
	header := false
	for hr := from; hr.Before(to); hr = hr.Add(time.Hour) {
		hs, err := pipelines.RawHours(ctx, b, hr)
		if err != nil {
			return published, notReady, err
		}
		var cfgs []pipelines.HourlyConfig
		for _, h := range hs {
			if len(wantType) > 0 && !wantType[h.Type] || f.version > 0 && h.Version != f.version {
				continue
			}
			cfgs = append(cfgs, pipelines.HourlyConfig{Root: f.root, Type: h.Type, Version: h.Version, Hour: h.Hour,
				Force: f.force, Lookback: lookback, Shards: f.shards, KeyScope: f.keyScope, Log: stderr})
		}
		// The types of one hour are published by one Beam job.
		outcomes := pipelines.HourlyMany(ctx, cfgs)
		stop := false
		for k, o := range outcomes {
			h := layout.Hour{Type: cfgs[k].Type, Version: cfgs[k].Version, Hour: cfgs[k].Hour}
			res, err := o.Result, o.Err
			if errors.Is(err, pipelines.ErrDryRun) {
				return published, notReady, dryRunDone(stderr)
			}
			if errors.Is(err, pipelines.ErrNotReady) {
				fmt.Fprintf(stderr, "hourly %s: not ready (no raw _COMPLETE yet)\n", h)
				notReady++
				stop = true // later hours wait for this one
				continue
			}
			if err != nil {
				return published, notReady, err
			}
			if res.State == pipelines.StateAlreadyPublished && f.verify {
				if err := pipelines.VerifyHour(ctx, b, h); err != nil {
					return published, notReady, err
				}
			}
			if res.State == pipelines.StatePublished {
				published++
			}
			if loader != nil {
				// Idempotent: an hour already loaded (its marker exists) issues no job.
				lr, err := loader.LoadHour(ctx, b, h, f.gcsRoot)
				if err != nil {
					return published, notReady, fmt.Errorf("bigquery load %s: %w", h, err)
				}
				if !lr.Skipped {
					fmt.Fprintf(stderr, "hourly %s: loaded %d rows into %s (job %s)\n", h, lr.Records, lr.Table, lr.JobID)
				}
			}
			if !header {
				fmt.Fprintf(stdout, "%-16s %-3s %-13s %-17s %9s %9s %9s %9s %7s\n", "TYPE", "V", "HOUR", "STATE", "IN", "PUBLISHED", "DUPS", "LOOKBACK", "LATE")
				header = true
			}
			a := res.Manifest.Input
			fmt.Fprintf(stdout, "%-16s %-3d %-13s %-17s %9d %9d %9d %9d %7d\n", h.Type, h.Version, layout.FormatHour(h.Hour), res.State,
				a.RawRecords+a.LateRecords, res.Manifest.Records, a.DuplicatesDropped, a.LookbackDropped, a.LateRecords)
		}
		if stop {
			return published, notReady, nil
		}
	}
	if !header {
		fmt.Fprintln(stderr, "hourly: no raw data in the given hours")
	}
	return published, notReady, nil
}
