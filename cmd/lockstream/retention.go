package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/retention"
	"github.com/lockstream/lockstream/rootid"
)

func init() { register(newRetentionCmd) }

func newRetentionCmd() *cobra.Command {
	var (
		root, now          string
		apply, unpublished bool
		deadLetterDays     int
		keys               adminFlags
	)
	c := &cobra.Command{
		Use:   "retention --root ROOT [--apply --keys KEYS]",
		Short: "Delete the hours past their event type's retention, and shred expired dead letters' keys (a dry run without --apply)",
		Long: `retention lists every hour of ROOT past the retention its event type declares in its
schema ("retention": {"raw_days", "published_days"}, counted from the end of the hour): raw and
late hours after raw_days, dataset hours after published_days. Without --apply it only reports;
with --apply it deletes, a dataset's _SUCCESS first (readers stop seeing the hour at once). An
expired raw hour whose dataset was never published is kept and reported unless
--include-unpublished. Types without a declared retention are never touched.

Dead letters are kept for the longest raw_days among the types that declare a retention, or
` + strconv.Itoa(retention.DefaultDeadLetterDays) + ` days when none does, whatever the other types declare; --deadletter-days N
overrides both. Those whose user is unknown are sealed under one key per root and UTC day: when
--apply deletes every dead letter of a day (all hours, all reasons), it first shreds that day's
key through the key service's admin API, so that copies the bucket still keeps (versioning,
soft delete) become unreadable too. --apply therefore needs --keys (an admin identity for
http(s)://, or local:DIR); a dry run does not.

Examples:
  lockstream retention --root gs://bucket/lockstream          # what would go
  # from a daily scheduler, with an admin secret in $LOCKSTREAM_KEYS_SECRET:
  lockstream retention --root gs://bucket/lockstream --apply --keys https://keys.internal:8443`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if root == "" {
				return errors.New("--root is required")
			}
			if deadLetterDays < 0 {
				return fmt.Errorf("--deadletter-days %d: want 0 (the rule) or more", deadLetterDays)
			}
			o := retention.Options{IncludeUnpublished: unpublished, DeadLetterDays: deadLetterDays}
			if now != "" {
				t, err := layout.ParseHour(now)
				if err != nil {
					return fmt.Errorf("--now: %w", err)
				}
				o.Now = t
			}
			// A configuration error is permanent: fail before reading ROOT.
			var shredder retention.Shredder
			if apply {
				if keys.keys == "" {
					return fmt.Errorf("--apply needs --keys (or $%s): the key service that shreds the keys of the dead letters it deletes", envKeysURL)
				}
				a, closeFn, err := openAdmin(&keys)
				if err != nil {
					return err
				}
				defer closeFn()
				shredder = timedShredder{a: a, timeout: keys.timeout}
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
			done, err := retention.Apply(cmd.Context(), b, p, shredder, func(done, total int, it retention.Item) {
				if done%100 == 0 || done == total {
					fmt.Fprintf(cmd.ErrOrStderr(), "retention: deleted %d of %d hours\n", done, total)
				}
			})
			for _, d := range done.Shredded {
				fmt.Fprintf(cmd.OutOrStdout(), "shredded the dead-letter key of %s\n", d.Format(time.DateOnly))
			}
			if done.NoRootID {
				fmt.Fprintf(cmd.OutOrStdout(), "ROOT has no %s: no dead letter of it was sealed under a per-root key, none to shred\n", rootid.Name)
			}
			return err
		},
	}
	fl := c.Flags()
	fl.StringVar(&root, "root", "", "output root: a directory or gs://bucket/prefix (required)")
	fl.BoolVar(&apply, "apply", false, "delete, and shred the keys of deleted dead-letter days (default: only report; needs --keys)")
	fl.BoolVar(&unpublished, "include-unpublished", false, "also delete expired raw and late hours whose dataset was never published")
	fl.StringVar(&now, "now", "", "evaluate as of this hour (e.g. 2026-11-23T06) instead of the current time")
	fl.IntVar(&deadLetterDays, "deadletter-days", 0, "keep dead letters this many days (default 0: the longest declared raw_days, or "+strconv.Itoa(retention.DefaultDeadLetterDays)+" when no type declares one)")
	addAdminFlags(c, &keys)
	fl.Lookup("timeout").Usage = "deadline of each key-service call"
	return c
}

// timedShredder bounds each keychain deletion by the --timeout deadline.
type timedShredder struct {
	a       keysAdmin
	timeout time.Duration
}

func (t timedShredder) DeleteUser(ctx context.Context, userID string) error {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	return t.a.DeleteUser(ctx, userID)
}

var _ retention.Shredder = timedShredder{}

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
	shred := "would shred"
	if apply {
		shred = "shred"
	}
	for _, d := range p.ShredDays {
		fmt.Fprintf(w, "%-13s the dead-letter key of %s (all of that day's dead letters go)\n", shred, d.Format(time.DateOnly))
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
	fmt.Fprintf(w, "dead letters are kept %s\n", days(p.DeadLetterRetention))
}

func days(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%d days", d/(24*time.Hour))
	}
	return d.String()
}
