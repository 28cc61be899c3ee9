package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"cloud.google.com/go/bigquery"
	"github.com/spf13/cobra"
	"google.golang.org/api/option"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/bq"
	"github.com/lockstream/lockstream/keyclient"
	_ "github.com/lockstream/lockstream/keyclient/local" // local:DIR key service URLs
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/schemas"
)

func init() { register(newBQCmd) }

// bqKeyScope is the key-derivation scope export-keys asks for unless told:
// the one ingest encrypts under by default.
const bqKeyScope = "lockstream"

type bqCommon struct {
	project, endpoint string
}

func (c *bqCommon) flags(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&c.project, "project", os.Getenv("GOOGLE_CLOUD_PROJECT"), "GCP project of the BigQuery datasets and jobs (default $GOOGLE_CLOUD_PROJECT)")
	fl.StringVar(&c.endpoint, "bigquery-endpoint", "", "BigQuery API endpoint (an emulator or test server; no authentication is sent)")
	addAlias(fl, "endpoint", "bigquery-endpoint")
}

func (c *bqCommon) client(ctx context.Context) (*bigquery.Client, error) {
	if c.project == "" {
		return nil, errors.New("--project is required (or set GOOGLE_CLOUD_PROJECT)")
	}
	var opts []option.ClientOption
	if c.endpoint != "" {
		opts = append(opts, option.WithEndpoint(strings.TrimSuffix(c.endpoint, "/")+"/bigquery/v2/"), option.WithoutAuthentication())
	}
	return bigquery.NewClient(ctx, c.project, opts...)
}

func newBQCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "bq",
		Short: "Load published hours into BigQuery; maintain the keys table and decrypted views",
		Long: `BigQuery side of lockstream.

  load         load published hours into <dataset>.<Type>_v<N> (hour partitions, idempotent)
  export-keys  replace the restricted keys table with the live keys of every subject in the datasets
  views        create or update one <Type>_decrypted view per type, all versions (SAFE.AEAD.DECRYPT_BYTES over the keys table)

Credentials: Application Default Credentials (gcloud auth application-default login, or a service
account on GCE/Dataflow). A shred reaches BigQuery when export-keys runs next; BigQuery time travel
(up to 7 days) and fail-safe (7 more days) keep the old keys table recoverable until then — see
package bq.`,
	}
	c.AddCommand(newBQLoadCmd(), newBQExportKeysCmd(), newBQViewsCmd())
	return c
}

// ---- load ----

func newBQLoadCmd() *cobra.Command {
	var (
		common                 bqCommon
		root, gcsRoot, dataset string
		hours, types           []string
		maxAttempts            int
		backoff                time.Duration
	)
	c := &cobra.Command{
		Use:   "load --root ROOT --project P --bigquery-dataset D [--hour 2026-11-23T06 ...]",
		Short: "Load published hours into hour-partitioned BigQuery tables (skips hours already loaded)",
		Long: `Load published hours (those with _SUCCESS) into <dataset>.<Type>_v<N>, one load job per hour
from the Avro files of every published part of the hour (the main part and its late supplements
late-0001/, late-0002/, …), into the partition <table>$YYYYMMDDHH with WRITE_TRUNCATE: the partition is
always the union of the parts. The table is created if missing (HOUR partitions on _hour, clustered on
_subject). A marker next to _SUCCESS naming the parts loaded (_BQ_LOADED.<project>.<dataset>.json for
the main part alone, ….parts-<n>.json for n parts) makes re-runs issue no job; a supplement published
later makes the next run reload the whole partition. Failed jobs with reason
backendError, rateLimitExceeded, internalError (also jobBackendError, jobInternalError) are retried with
backoff; other reasons fail at once. Exit status 1 if any hour failed.`,
		Example: `  lockstream bq load --root gs://my-bucket/ls --project my-proj --bigquery-dataset events
  lockstream bq load --root gs://my-bucket/ls --project my-proj --bigquery-dataset events --hour 2026-11-23T06 --type PlaybackEvent
  lockstream bq load --root ./out --gcs-root gs://my-bucket/ls --project my-proj --bigquery-dataset events   # local copy of a GCS root`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if root == "" || dataset == "" {
				return errors.New("--root and --bigquery-dataset are required")
			}
			if gcsRoot == "" {
				if !strings.HasPrefix(root, "gs://") {
					return errors.New("--gcs-root gs://bucket/prefix is required when --root is not a gs:// root (BigQuery loads from GCS)")
				}
				gcsRoot = root
			}
			b, err := blob.Open(ctx, root)
			if err != nil {
				return err
			}
			client, err := common.client(ctx)
			if err != nil {
				return err
			}
			defer client.Close()
			todo, err := selectHours(ctx, b, hours, types)
			if err != nil {
				return err
			}
			l := &bq.Loader{Client: client, Dataset: dataset, MaxAttempts: maxAttempts, Backoff: backoff}
			out := cmd.OutOrStdout()
			var failed int
			for _, h := range todo {
				res, err := l.LoadHour(ctx, b, h, gcsRoot)
				switch {
				case err != nil:
					failed++
					fmt.Fprintf(cmd.ErrOrStderr(), "FAILED  %s: %v\n", h, err)
				case res.Skipped:
					fmt.Fprintf(out, "skipped %s: already loaded by job %s (%s)\n", h, res.JobID, strings.Join(res.Parts, "+"))
				default:
					fmt.Fprintf(out, "loaded  %s: %d rows of %s into %s (job %s, %d attempt(s))\n", h, res.Records, strings.Join(res.Parts, "+"), res.Table, res.JobID, res.Attempts)
				}
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d hours failed to load", failed, len(todo))
			}
			return nil
		},
	}
	common.flags(c)
	fl := c.Flags()
	fl.StringVar(&root, "root", "", "output root holding datasets/: gs://bucket/prefix or a local directory (required)")
	fl.StringVar(&gcsRoot, "gcs-root", "", "gs:// location of the same root, for the load jobs' source URIs (default --root)")
	fl.StringVar(&dataset, "bigquery-dataset", "", "BigQuery dataset of the event tables (must exist; required)")
	addAlias(fl, "dataset", "bigquery-dataset")
	fl.StringSliceVar(&hours, "hour", nil, "hours to load (2026-11-23T06; repeatable); default every published hour")
	fl.StringSliceVar(&types, "type", nil, "event types to load (repeatable); default all")
	fl.IntVar(&maxAttempts, "max-attempts", 4, "most load jobs per hour, first included (retryable failures only)")
	fl.DurationVar(&backoff, "backoff", 15*time.Second, "wait before the first retry; doubled for each next one")
	return c
}

// selectHours returns the published hours, filtered by --hour and --type.
func selectHours(ctx context.Context, b blob.Bucket, hours, types []string) ([]layout.Hour, error) {
	all, err := bq.PublishedHours(ctx, b)
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, h := range hours {
		t, err := layout.ParseHour(h)
		if err != nil {
			return nil, err
		}
		want[layout.FormatHour(t)] = true
	}
	keepType := map[string]bool{}
	for _, t := range types {
		keepType[t] = true
	}
	var out []layout.Hour
	for _, h := range all {
		if (len(want) == 0 || want[layout.FormatHour(h.Hour)]) && (len(keepType) == 0 || keepType[h.Type]) {
			out = append(out, h)
		}
	}
	return out, nil
}

// ---- export-keys ----

func newBQExportKeysCmd() *cobra.Command {
	var (
		common                       bqCommon
		root, keysTable, keys, scope string
		dryRun                       bool
	)
	c := &cobra.Command{
		Use:   "export-keys --root ROOT --project P --keys-table DATASET.TABLE --keys URL",
		Short: "Replace the restricted BigQuery keys table with the live keys of every subject in the datasets",
		Long: `Read the distinct _subject of every published hour under --root, ask the key service (ForDecrypt) for
every live key version of each, and REPLACE the keys table
  (_subject STRING, category STRING, version INT64, keyset BYTES, deterministic BOOL)
with one load job (WRITE_TRUNCATE, data uploaded with the job). Deleted (shredded) and unknown subjects
get no row, and neither does a revoked category: after this command their view columns are NULL.

The keys table holds raw key material (cleartext Tink keysets): keep it in a dataset only the decrypted
views may read (authorized views), and set that dataset's time-travel window to its minimum
(max_time_travel_hours = 48): a shred is final in BigQuery only when the old table versions have aged
out of time travel and fail-safe (up to 7 + 7 days).

Key service: --keys local:DIR or http(s)://HOST:PORT; the secret from $LOCKSTREAM_KEYS_SECRET; the
service needs decrypt rights for the scope.`,
		Example: `  lockstream bq export-keys --root gs://my-bucket/ls --project my-proj --keys-table restricted.lockstream_keys \
      --keys https://keys.internal:7400`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if root == "" || keysTable == "" || keys == "" {
				return errors.New("--root, --keys-table and --keys are required")
			}
			reg, err := schemas.Embedded()
			if err != nil {
				return err
			}
			b, err := blob.Open(ctx, root)
			if err != nil {
				return err
			}
			hours, err := bq.PublishedHours(ctx, b)
			if err != nil {
				return err
			}
			subjects, err := bq.Subjects(ctx, b, reg, hours)
			if err != nil {
				return err
			}
			kc, err := keyclient.Open(ctx, keys, keyclient.Options{Scope: scope, Secret: os.Getenv("LOCKSTREAM_KEYS_SECRET"), CacheSize: -1})
			if err != nil {
				return err
			}
			defer kc.Close()
			rows, gone, err := bq.KeyRows(ctx, kc, bq.KeyUses(reg), subjects)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "%d published hours, %d subjects: %d keyset rows, %d subjects deleted or unknown (no rows)\n",
				len(hours), len(subjects), len(rows), len(gone))
			if dryRun {
				return nil
			}
			if common.project == "" {
				return errors.New("--project is required (or set GOOGLE_CLOUD_PROJECT)")
			}
			ref, err := bq.ParseTableRef(keysTable, common.project, "")
			if err != nil {
				return err
			}
			if ref.Project != common.project {
				return fmt.Errorf("--keys-table %s: the keys table must be in --project %s", keysTable, common.project)
			}
			client, err := common.client(ctx)
			if err != nil {
				return err
			}
			defer client.Close()
			kt := &bq.KeysTable{Client: client, Dataset: ref.Dataset, Table: ref.Table}
			job, err := kt.Replace(ctx, rows)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "replaced %s.%s (job %s)\n", ref.Dataset, ref.Table, job)
			return nil
		},
	}
	common.flags(c)
	fl := c.Flags()
	fl.StringVar(&root, "root", "", "output root holding datasets/: gs://bucket/prefix or a local directory (required)")
	fl.StringVar(&keysTable, "keys-table", "", "keys table: DATASET.TABLE (in --project; the dataset must exist; required)")
	fl.StringVar(&keys, "keys", os.Getenv("LOCKSTREAM_KEYS"), "key service: local:DIR or http(s)://HOST:PORT (default $LOCKSTREAM_KEYS)")
	fl.StringVar(&scope, "key-scope", bqKeyScope, "key-derivation scope the datasets were encrypted under")
	fl.BoolVar(&dryRun, "dry-run", false, "count subjects and rows, touch no BigQuery table")
	return c
}

// ---- views ----

func newBQViewsCmd() *cobra.Command {
	var (
		common                          bqCommon
		dataset, viewDataset, keysTable string
		printSQL                        bool
	)
	c := &cobra.Command{
		Use:   "views --project P --bigquery-dataset D --keys-table T",
		Short: "Create or update one decrypted view per event type and version",
		Long: `Create or update <view-dataset>.<Type>_v<N>_decrypted for every registered schema. Each PII column
is SAFE.AEAD.DECRYPT_BYTES (SAFE.DETERMINISTIC_DECRYPT_BYTES for deterministic fields) of the ciphertext
with the keyset of the keys table row joined on (_subject, category, deterministic) and AAD
CONCAT('<Type>.<field>|', _subject), converted back to STRING or INT64. Missing keys (shredded users,
revoked categories) give NULL. --keys-table is TABLE (in --bigquery-dataset), DATASET.TABLE or PROJECT.DATASET.TABLE.`,
		Example: `  lockstream bq views --project my-proj --bigquery-dataset events --keys-table restricted.lockstream_keys --views-dataset analyst
  lockstream bq views --project my-proj --bigquery-dataset events --keys-table restricted.lockstream_keys --print-sql`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if dataset == "" || keysTable == "" || common.project == "" {
				return errors.New("--project, --bigquery-dataset and --keys-table are required")
			}
			keys, err := bq.ParseTableRef(keysTable, common.project, dataset)
			if err != nil {
				return err
			}
			reg, err := schemas.Embedded()
			if err != nil {
				return err
			}
			if printSQL {
				for _, typ := range reg.Types() {
					q, err := bq.ViewSQL(reg, typ, func(v int) bq.TableRef {
						return bq.TableRef{Project: common.project, Dataset: dataset, Table: bq.TableName(typ, v)}
					}, keys)
					if err != nil {
						return err
					}
					fmt.Fprintf(cmd.OutOrStdout(), "%s\n", q)
				}
				return nil
			}
			client, err := common.client(ctx)
			if err != nil {
				return err
			}
			defer client.Close()
			v := &bq.Views{Client: client, Dataset: dataset, ViewDataset: viewDataset, Keys: keys, Registry: reg}
			names, err := v.Apply(ctx)
			for _, n := range names {
				fmt.Fprintf(cmd.OutOrStdout(), "view %s\n", n)
			}
			return err
		},
	}
	common.flags(c)
	fl := c.Flags()
	fl.StringVar(&dataset, "bigquery-dataset", "", "BigQuery dataset of the event tables (required)")
	addAlias(fl, "dataset", "bigquery-dataset")
	fl.StringVar(&viewDataset, "views-dataset", "", "dataset for the views (default --bigquery-dataset)")
	fl.StringVar(&keysTable, "keys-table", "", "keys table written by export-keys (required)")
	fl.BoolVar(&printSQL, "print-sql", false, "print the views' SQL instead of creating them")
	return c
}
