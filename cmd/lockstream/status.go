package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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
	out, metricsListen              string
	watch, stuckAfter               time.Duration
	// ready, when set (tests), gets the metrics listener's address.
	ready func(addr string)
}

func newStatusCmd() *cobra.Command {
	var f statusFlags
	c := &cobra.Command{
		Use:   "status --root ROOT [--since H] [--until H] [--type T] [--format table|json|html] [--out FILE] [--watch 1m [--metrics-listen ADDR]]",
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

--format html writes one self-contained page (no network fetches: open it from a bucket or a
laptop): an hour grid per type and version whose cells are coloured waiting, complete, published,
published with supplements (+n) or stuck (!), where stuck means not complete --stuck-after past
the hour's end plus lateness; hovering or clicking a cell shows that hour's accounting (in,
published, duplicates, dead letters by reason, late, supplements, BigQuery, lineage); above the
grid, what needs attention; below it, the writers. --out FILE writes any format to FILE
(atomically: a reader never sees half a page) instead of stdout.

--watch 1m rebuilds the report every interval and rewrites --out (an open page reloads itself)
until interrupted; a failed build is reported on stderr and retried at the next interval.
--metrics-listen ADDR (with --watch) serves Prometheus gauges of the last report on
http://ADDR/metrics: hours by state, hours stuck, late parts pending, supplements, published
records, dead letters by reason (and those not redriven), the youngest writer heartbeat by kind.
Labels are type, version, reason, state and kind only (never an hour or a run id).

Examples:
  lockstream status --root ./out
  lockstream status --root gs://bucket/ls --since 2026-11-23T00 --type PlaybackEvent
  lockstream status --root gs://bucket/ls --format json | jq '.hours[] | select(.waiting)'
  lockstream status --root gs://bucket/ls --since 2026-11-23T00 --format html --out status.html
  lockstream status --root gs://bucket/ls --format html --out /srv/www/status.html --watch 1m --metrics-listen :9464`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runStatus(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), f)
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.root, "root", "", "output root: a directory or gs://bucket/prefix (required)")
	fl.StringVar(&f.since, "since", "", "first hour shown, e.g. 2026-11-23T00 (default: 24 hours before now)")
	fl.StringVar(&f.until, "until", "", "stop before this hour (default: now, the current hour included)")
	fl.StringSliceVar(&f.types, "type", nil, "event types (default: every registered type)")
	fl.IntVar(&f.version, "version", 0, "schema version (default: every version)")
	fl.StringVar(&f.format, "format", "table", "table, json or html")
	fl.StringVar(&f.out, "out", "", "write the report to this file (atomically) instead of stdout")
	fl.DurationVar(&f.watch, "watch", 0, "rebuild and rewrite the report every interval until interrupted (0: once)")
	fl.DurationVar(&f.stuckAfter, "stuck-after", status.DefaultStuckAfter, "an hour not complete this long after its end plus lateness is stuck")
	fl.StringVar(&f.metricsListen, "metrics-listen", "", "with --watch: serve Prometheus gauges of the report on http://ADDR/metrics")
	fl.StringVar(&f.now, "now", "", "judge completion and liveness as of this time (RFC 3339 or 2026-11-23T06; tests)")
	fl.MarkHidden("now")
	return c
}

func runStatus(ctx context.Context, stdout, stderr io.Writer, f statusFlags) error {
	if ctx == nil {
		ctx = context.Background()
	}
	// Every configuration error fails here, before ROOT is read.
	if f.root == "" {
		return errors.New("--root is required")
	}
	if f.format != "table" && f.format != "json" && f.format != "html" {
		return fmt.Errorf("--format %q: want table, json or html", f.format)
	}
	if f.watch < 0 || f.watch > 0 && f.watch < time.Second {
		return fmt.Errorf("--watch %s: want 0 (once) or at least 1s", f.watch)
	}
	if f.metricsListen != "" && f.watch == 0 {
		return errors.New("--metrics-listen needs --watch (the gauges describe the last report)")
	}
	if f.now != "" && f.watch > 0 {
		return errors.New("--now and --watch exclude each other")
	}
	if f.stuckAfter <= 0 {
		return fmt.Errorf("--stuck-after %s: want a positive duration", f.stuckAfter)
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
	o.Types, o.Version, o.StuckAfter = f.types, f.version, f.stuckAfter
	if err := status.CheckOptions(o); err != nil {
		return err
	}
	if f.out != "" {
		if st, err := os.Stat(filepath.Dir(f.out)); err != nil || !st.IsDir() {
			return fmt.Errorf("--out %s: no such directory %s", f.out, filepath.Dir(f.out))
		}
	}
	// A local root must exist: opening a directory root creates it, and
	// status writes nothing.
	if dir, isDir := localRoot(f.root); isDir {
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return fmt.Errorf("--root %s: no such directory", f.root)
		}
	}
	var exp *status.Exporter
	if f.metricsListen != "" {
		exp = status.NewExporter()
		stop, err := serveStatusMetrics(f.metricsListen, exp, stderr, f.ready)
		if err != nil {
			return err
		}
		defer stop()
	}
	b, err := blob.Open(ctx, f.root)
	if err != nil {
		return fmt.Errorf("--root %s: %w", f.root, err)
	}
	once := func() error {
		start := time.Now()
		r, err := status.Build(ctx, b, o)
		if err != nil {
			if exp != nil {
				exp.Failed()
			}
			return err
		}
		if exp != nil {
			exp.Update(r, time.Since(start))
		}
		var buf bytes.Buffer
		switch f.format {
		case "json":
			err = status.WriteJSON(&buf, r)
		case "html":
			err = status.WriteHTML(&buf, r, status.HTMLOptions{Root: f.root, Refresh: f.watch})
		default:
			err = status.WriteTable(&buf, r)
		}
		if err != nil {
			return err
		}
		if f.out == "" {
			_, err = stdout.Write(buf.Bytes())
			return err
		}
		return writeFileAtomic(f.out, buf.Bytes())
	}
	if f.watch == 0 {
		return once()
	}
	t := time.NewTicker(f.watch)
	defer t.Stop()
	for {
		if err := once(); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			fmt.Fprintf(stderr, "status: %v (retrying in %s)\n", err, f.watch)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// serveStatusMetrics serves exp (and nothing else) on http://addr/metrics.
func serveStatusMetrics(addr string, exp *status.Exporter, stderr io.Writer, ready func(string)) (stop func(), err error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(exp); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(stderr, "status: metrics server: %v\n", err)
		}
	}()
	fmt.Fprintf(stderr, "status: metrics on http://%s/metrics\n", ln.Addr())
	if ready != nil {
		ready(ln.Addr().String())
	}
	return func() { _ = srv.Close() }, nil
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory and a rename: a reader sees the old file or the new one.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// localRoot returns the directory of a directory root (a path or
// file://path).
func localRoot(root string) (string, bool) {
	if dir, ok := strings.CutPrefix(root, "file://"); ok {
		return dir, true
	}
	return root, !strings.Contains(root, "://")
}
