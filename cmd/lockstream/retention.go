package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/retention"
)

func init() { register(newRetentionCmd) }

func newRetentionCmd() *cobra.Command {
	var (
		root, now          string
		apply, unpublished bool
	)
	c := &cobra.Command{
		Use:   "retention --root ROOT [--apply]",
		Short: "Delete the hours past their event type's retention (a dry run without --apply)",
		Long: `retention lists every hour of ROOT past the retention its event type declares in its
schema ("retention": {"raw_days", "published_days"}, counted from the end of the hour): raw and
late hours after raw_days, dataset hours after published_days, dead letters after the longest
raw_days of all types. Without --apply it only reports; with --apply it deletes, a dataset's
_SUCCESS first (readers stop seeing the hour at once). An expired raw hour whose dataset was never
published is kept and reported unless --include-unpublished. Types without a declared retention are
never touched.

Examples:
  lockstream retention --root gs://bucket/lockstream              # what would go
  lockstream retention --root gs://bucket/lockstream --apply      # from a daily scheduler`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if root == "" {
				return errors.New("--root is required")
			}
			o := retention.Options{IncludeUnpublished: unpublished}
			if now != "" {
				t, err := layout.ParseHour(now)
				if err != nil {
					return fmt.Errorf("--now: %w", err)
				}
				o.Now = t
			}
			b, err := blob.Open(cmd.Context(), root)
			if err != nil {
				return err
			}
			p, err := retention.PlanRoot(cmd.Context(), b, o)
			if err != nil {
				return err
			}
			printPlan(cmd.OutOrStdout(), p, apply)
			if !apply || len(p.Delete) == 0 {
				return nil
			}
			return retention.Apply(cmd.Context(), b, p, func(done, total int, it retention.Item) {
				if done%100 == 0 || done == total {
					fmt.Fprintf(cmd.ErrOrStderr(), "retention: deleted %d of %d hours\n", done, total)
				}
			})
		},
	}
	fl := c.Flags()
	fl.StringVar(&root, "root", "", "output root: a directory or gs://bucket/prefix (required)")
	fl.BoolVar(&apply, "apply", false, "delete (default: only report)")
	fl.BoolVar(&unpublished, "include-unpublished", false, "also delete expired raw and late hours whose dataset was never published")
	fl.StringVar(&now, "now", "", "evaluate as of this hour (e.g. 2026-11-23T06) instead of the current time")
	return c
}

func printPlan(w io.Writer, p *retention.Plan, apply bool) {
	verb := "would delete"
	if apply {
		verb = "delete"
	}
	objects := 0
	fmt.Fprintf(w, "%-13s %-10s %-16s %-3s %-13s %7s  %s\n", "ACTION", "AREA", "TYPE", "V", "HOUR", "OBJECTS", "EXPIRED")
	row := func(action string, it retention.Item) {
		typ, v := it.Hour.Type, fmt.Sprint(it.Hour.Version)
		if it.Area == layout.DeadLetterArea {
			typ, v = it.Reason, "-"
		}
		fmt.Fprintf(w, "%-13s %-10s %-16s %-3s %-13s %7d  %s\n", action, it.Area, typ, v, layout.FormatHour(it.Hour.Hour), len(it.Objects), it.Expired.Format(time.RFC3339))
	}
	for _, it := range p.Delete {
		row(verb, it)
		objects += len(it.Objects)
	}
	for _, it := range p.Held {
		row("keep", it)
	}
	fmt.Fprintf(w, "%d hours (%d objects) past retention as of %s", len(p.Delete), objects, p.Now.Format(time.RFC3339))
	if !apply && len(p.Delete) > 0 {
		fmt.Fprint(w, "; run with --apply to delete them")
	}
	fmt.Fprintln(w)
	if len(p.Held) > 0 {
		fmt.Fprintf(w, "%d expired raw/late hours kept because their dataset was never published (publish them, or --include-unpublished)\n", len(p.Held))
	}
	for _, t := range p.Undeclared {
		fmt.Fprintf(w, "%s declares no retention: its data is kept\n", t)
	}
}
