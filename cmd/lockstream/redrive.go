package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/redrive"
	"github.com/lockstream/lockstream/transforms"
)

func init() { register(newRedriveCmd) }

type redriveFlags struct {
	root, reason, since, until, keys, keyScope, runID string
	maxPayload                                        byteSize
}

func newRedriveCmd() *cobra.Command {
	f := redriveFlags{maxPayload: byteSize(1 << 20)}
	c := &cobra.Command{
		Use:   "redrive --root ROOT --reason REASON [--since H] [--until H] --keys URL",
		Short: "Re-ingest the dead letters of one reason that pass today's schemas (after a fix), exactly once",
		Long: `redrive reads ROOT/deadletter/REASON/<day>/<hour>/*.ndjson for the hours in [--since, --until),
unseals each dead letter's payload and attributes with the key service (--keys must be allowed to
decrypt the "payload" category and to encrypt like ingest), checks it against today's schemas and
re-ingests those that pass as ordinary part files of their hour: to raw/ while the hour is not
complete, to late/ once it is, so that hourly publishes them with the hour or as its next
supplement. The rest stay in place, counted by the reason they fail with now. Dead letters of a
deleted user (or a revoked "payload" category) cannot be read by anyone: they stay, counted as
shredded.

Exactly once: each attempt on a dead-letter file records the message ids it re-ingests and the
files it writes under ROOT/redrive/ before writing them; a later redrive skips those ids and
finishes an attempt that died half-way. Run it as often as you like.

Keys: --keys local:DIR or http(s)://HOST:PORT (secret in $` + transforms.KeysSecretEnv + `).

Examples:
  lockstream redrive --root ./out --reason unknown_version --keys local:./keys
  lockstream redrive --root gs://b/ls --reason unknown_field --since 2026-11-23T00 --until 2026-11-24T00 --keys https://keys:7400`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runRedrive(cmd.Context(), cmd.OutOrStdout(), f)
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.root, "root", "", "output root: a directory or gs://bucket/prefix (required)")
	fl.StringVar(&f.reason, "reason", "", "dead-letter reason to redrive, e.g. unknown_version (required)")
	fl.StringVar(&f.since, "since", "", "first dead-letter hour, e.g. 2026-11-23T00 (default: every hour)")
	fl.StringVar(&f.until, "until", "", "stop before this hour (default: none)")
	fl.StringVar(&f.keys, "keys", os.Getenv("LOCKSTREAM_KEYS"), "key service: local:DIR or http(s)://HOST:PORT (default $LOCKSTREAM_KEYS)")
	fl.StringVar(&f.keyScope, "key-scope", transforms.DefaultKeyScope, "key-derivation scope the data was written with")
	fl.StringVar(&f.runID, "run-id", "", "this run's id (default: time and random)")
	fl.Var(&f.maxPayload, "max-payload", "largest payload accepted (as ingest's --max-payload)")
	return c
}

func runRedrive(ctx context.Context, stdout io.Writer, f redriveFlags) error {
	if ctx == nil {
		ctx = context.Background()
	}
	// Configuration errors fail before ROOT is read.
	switch {
	case f.root == "":
		return errors.New("--root is required")
	case f.reason == "" || strings.ContainsAny(f.reason, "/ "):
		return errors.New("--reason is required: a dead-letter reason, e.g. unknown_version (lockstream status lists them)")
	case f.keys == "":
		return errors.New("--keys is required (local:DIR or http(s)://HOST:PORT; or set LOCKSTREAM_KEYS)")
	case strings.HasPrefix(f.keys, "registered:"):
		return errors.New("--keys: registered: sources exist only inside tests")
	}
	if err := transforms.ValidateKeysURL(f.keys); err != nil {
		return fmt.Errorf("--keys: %w", err)
	}
	cfg := redrive.Config{Reason: f.reason, RunID: f.runID, MaxPayload: int(f.maxPayload)}
	var err error
	if f.since != "" {
		if cfg.Since, err = layout.ParseHour(f.since); err != nil {
			return fmt.Errorf("--since: %w", err)
		}
	}
	if f.until != "" {
		if cfg.Until, err = layout.ParseHour(f.until); err != nil {
			return fmt.Errorf("--until: %w", err)
		}
	}
	if !cfg.Since.IsZero() && !cfg.Until.IsZero() && !cfg.Since.Before(cfg.Until) {
		return fmt.Errorf("--since %s is not before --until %s", f.since, f.until)
	}
	if dir, isDir := localRoot(f.root); isDir {
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return fmt.Errorf("--root %s: no such directory", f.root)
		}
	}
	if cfg.Bucket, err = blob.Open(ctx, f.root); err != nil {
		return fmt.Errorf("--root %s: %w", f.root, err)
	}
	if cfg.Keys, err = transforms.OpenKeys(ctx, f.keys, f.keyScope, 0); err != nil {
		return fmt.Errorf("--keys: %w", err)
	}
	res, err := redrive.Run(ctx, cfg)
	if res != nil {
		fmt.Fprintln(stdout, res.Summary(f.reason))
	}
	return err
}
