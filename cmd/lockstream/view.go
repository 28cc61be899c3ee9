package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/lockstream/lockstream/bq"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/pipelines"
	"github.com/lockstream/lockstream/schemas"
	"github.com/lockstream/lockstream/transforms"
)

func init() { register(newViewCmd) }

func newViewCmd() *cobra.Command {
	var (
		root, hour, typ, out, format, keys, scope string
		version                                   int
		keyCache                                  keyCacheSize
		bqTable                                   string
		expiration                                time.Duration
		bqFlags                                   bqCommon
		logLevel                                  string
	)
	c := &cobra.Command{
		Use:   "view --root ROOT --hour H --type T --out PATH [--format ndjson|avro] --keys URL [beam runner flags]",
		Short: "Decrypt one published hour for an authorized service (Beam pipeline; prism runner locally)",
		Long: `view writes a decrypted copy of one published dataset hour to PATH (a file, or gs://bucket/path).
PII of deleted users and revoked categories comes out as null; a ciphertext that does not decrypt
(tampered, moved to another field or user) comes out as null and is counted as corrupt. Keep PATH
in a restricted location: it holds plaintext.

--keys local:DIR or http(s)://HOST:PORT of a service with decrypt rights
(secret in $` + transforms.KeysSecretEnv + `).

--bigquery-table [PROJECT:]DATASET.TABLE also loads the copy (Avro) into that table, which expires
after --expiration (default 24h); a re-run replaces its rows. Keep the dataset restricted.

Examples:
  lockstream view --root ./out --hour 2026-11-23T06 --type AccountUpdate --out /secure/au.ndjson --keys local:./keys
  lockstream view --root gs://b/ls --hour 2026-11-23T06 --type PlaybackEvent --out gs://restricted/pb-06.avro \
      --keys https://keys.internal:7400 --bigquery-table restricted.pb_06 --expiration 48h --project my-proj`,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if help, err := parseWithBeamFlags(cmd, args); help {
				return cmd.Help()
			} else if err != nil {
				return err
			}
			if err := initBeam(logLevel); err != nil {
				return err
			}
			if root == "" || hour == "" || typ == "" || out == "" || keys == "" {
				return errors.New("--root, --hour, --type, --out and --keys are required")
			}
			h, err := layout.ParseHour(hour)
			if err != nil {
				return err
			}
			if bqTable != "" {
				if !cmd.Flags().Changed("format") {
					format = transforms.FormatAvro
				}
				if format != transforms.FormatAvro {
					return errors.New("--bigquery-table loads the Avro copy: use --format avro (the default with --bigquery-table)")
				}
				if expiration <= 0 {
					return errors.New("--expiration must be positive: a decrypted copy in BigQuery must expire")
				}
			}
			res, err := pipelines.View(cmd.Context(), pipelines.ViewConfig{Root: root, Type: typ, Version: version, Hour: h,
				Out: out, Format: format, KeysURL: keys, KeyScope: scope, KeyCacheSize: int(keyCache)})
			if errors.Is(err, pipelines.ErrDryRun) {
				return dryRunDone(cmd.ErrOrStderr())
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "view %s v%d %s → %s: %d records (%d with shredded fields: %d fields; %d corrupt: %d fields; %d unreadable) in %.1fs\n",
				typ, max(version, 1), layout.FormatHour(h), out, res.Records, res.ShreddedRecords, res.ShreddedFields,
				res.CorruptRecords, res.CorruptFields, res.Unreadable, res.Elapsed.Seconds())
			if bqTable != "" {
				return loadViewIntoBigQuery(cmd, bqFlags, bqTable, typ, max(version, 1), out, expiration)
			}
			return nil
		},
	}
	fl := c.Flags()
	fl.StringVar(&root, "root", "", "dataset root: a directory or gs://bucket/prefix")
	fl.StringVar(&hour, "hour", "", "the published hour, e.g. 2026-11-23T06")
	fl.StringVar(&typ, "type", "", "event type")
	fl.IntVar(&version, "version", 1, "schema version")
	fl.StringVar(&out, "out", "", "output file (local path or gs://bucket/path)")
	fl.StringVar(&format, "format", transforms.FormatNDJSON, "ndjson or avro")
	fl.StringVar(&keys, "keys", os.Getenv("LOCKSTREAM_KEYS"), "key service: local:DIR or http(s)://HOST:PORT (default $LOCKSTREAM_KEYS)")
	fl.StringVar(&scope, "key-scope", transforms.DefaultKeyScope, "key scope the data was written with")
	addKeyCacheSizeFlag(fl, &keyCache, "subjects")
	fl.StringVar(&bqTable, "bigquery-table", "", "also load the decrypted copy into this BigQuery table ([PROJECT:]DATASET.TABLE)")
	fl.DurationVar(&expiration, "expiration", 24*time.Hour, "the --bigquery-table expires this long after the load")
	fl.StringVar(&bqFlags.project, "project", os.Getenv("GOOGLE_CLOUD_PROJECT"), "GCP project of --bigquery-table (default $GOOGLE_CLOUD_PROJECT)")
	fl.StringVar(&bqFlags.endpoint, "bigquery-endpoint", "", "BigQuery API endpoint (a test server; no authentication is sent)")
	addLogLevelFlag(fl, &logLevel)
	addDryRunFlag(fl, new(bool))
	return c
}

func loadViewIntoBigQuery(cmd *cobra.Command, bqFlags bqCommon, table, typ string, version int, out string, expiration time.Duration) error {
	ctx := cmd.Context()
	client, err := bqFlags.client(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	ref, err := bq.ParseTableRef(table, bqFlags.project, "")
	if err != nil {
		return err
	}
	reg, err := schemas.Embedded()
	if err != nil {
		return err
	}
	s, err := reg.Lookup(typ, version)
	if err != nil {
		return err
	}
	var gcsURI string
	var file io.Reader
	if strings.HasPrefix(out, "gs://") {
		gcsURI = out
	} else {
		f, err := os.Open(out)
		if err != nil {
			return err
		}
		defer f.Close()
		file = f
	}
	vl := &bq.ViewLoad{Client: client, Table: ref, Schema: s, Expiration: expiration}
	job, rows, err := vl.Load(ctx, gcsURI, file)
	if err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "loaded %d rows into %s:%s.%s (job %s); the table expires in %s\n", rows, ref.Project, ref.Dataset, ref.Table, job, expiration)
	return nil
}
