package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/status"
)

func init() { register(newStatusCmd) }

type statusFlags struct {
	root, since, until, now, format string
	types                           []string
	version                         int
}

func newStatusCmd() *cobra.Command {
	var f statusFlags
	c := &cobra.Command{
		Use:   "status --root ROOT [--since H] [--until H] [--type T] [--format table|json]",
		Short: "Show, per type, version and hour, raw parts, completion, publication, late data, dead letters and BigQuery loads, and the ingest writers",
		Long: `status reads ROOT (never writes it) and prints one line per (type, version, hour) that has
anything under ROOT in [--since, --until): raw part files; complete (who wrote _COMPLETE, and when;
"yes (no _COMPLETE yet)" when the writer records decide it complete but nobody marked it yet);
published (the main part) with its records and supplements; late parts no manifest lists yet;
dead-lettered messages by reason (those naming no registered type in a row "(unknown)"); the
BigQuery datasets the hour was loaded into (with "k/n parts" when a later supplement is not loaded
yet); and for an hour that is not complete, why it waits (the live writer that holds it, with its
watermark and heartbeat, or that no writer has passed it yet). Then the ingest writers: kind,
state, watermark, heartbeat, and live or stale (running, but no heartbeat for longer than its
stale_after: crashed, it holds nothing).

--format json prints the same as one document: {"hours": [...], "writers": [...]} (the shape is
documented in package status). Exit status 0 whatever the hours' state; 1 when ROOT cannot be read.

Examples:
  lockstream status --root ./out
  lockstream status --root gs://bucket/ls --since 2026-11-23T00 --type PlaybackEvent
  lockstream status --root gs://bucket/ls --format json | jq '.hours[] | select(.waiting)'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runStatus(cmd.Context(), cmd.OutOrStdout(), f)
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.root, "root", "", "output root: a directory or gs://bucket/prefix (required)")
	fl.StringVar(&f.since, "since", "", "first hour shown, e.g. 2026-11-23T00 (default: 24 hours before now)")
	fl.StringVar(&f.until, "until", "", "stop before this hour (default: now, the current hour included)")
	fl.StringSliceVar(&f.types, "type", nil, "event types (default: every registered type)")
	fl.IntVar(&f.version, "version", 0, "schema version (default: every version)")
	fl.StringVar(&f.format, "format", "table", "table or json")
	fl.StringVar(&f.now, "now", "", "judge completion and liveness as of this time (RFC 3339 or 2026-11-23T06; tests)")
	fl.MarkHidden("now")
	return c
}

func runStatus(ctx context.Context, stdout io.Writer, f statusFlags) error {
	if ctx == nil {
		ctx = context.Background()
	}
	// Every configuration error fails here, before ROOT is read.
	if f.root == "" {
		return errors.New("--root is required")
	}
	if f.format != "table" && f.format != "json" {
		return fmt.Errorf("--format %q: want table or json", f.format)
	}
	var o status.Options
	var err error
	if f.since != "" {
		if o.Since, err = layout.ParseHour(f.since); err != nil {
			return fmt.Errorf("--since: %w", err)
		}
	}
	if f.until != "" {
		if o.Until, err = layout.ParseHour(f.until); err != nil {
			return fmt.Errorf("--until: %w", err)
		}
	}
	if f.now != "" {
		if o.Now, err = time.Parse(time.RFC3339, f.now); err != nil {
			if o.Now, err = layout.ParseHour(f.now); err != nil {
				return fmt.Errorf("--now: %w", err)
			}
		}
	}
	o.Types, o.Version = f.types, f.version
	if err := status.CheckOptions(o); err != nil {
		return err
	}
	// A local root must exist: opening a directory root creates it, and
	// status writes nothing.
	if dir, isDir := localRoot(f.root); isDir {
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return fmt.Errorf("--root %s: no such directory", f.root)
		}
	}
	b, err := blob.Open(ctx, f.root)
	if err != nil {
		return fmt.Errorf("--root %s: %w", f.root, err)
	}
	r, err := status.Build(ctx, b, o)
	if err != nil {
		return err
	}
	if f.format == "json" {
		return status.WriteJSON(stdout, r)
	}
	return status.WriteTable(stdout, r)
}

// localRoot returns the directory of a directory root (a path or
// file://path).
func localRoot(root string) (string, bool) {
	if dir, ok := strings.CutPrefix(root, "file://"); ok {
		return dir, true
	}
	return root, !strings.Contains(root, "://")
}
