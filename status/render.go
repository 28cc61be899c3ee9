package status

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lockstream/lockstream/layout"
)

// WriteJSON writes r as one indented JSON document (the shape in the
// package doc).
func WriteJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes r as aligned columns: one line per hour, then the
// writers.
func WriteTable(w io.Writer, r *Report) error {
	var buf bytes.Buffer
	last := r.Until.Add(-time.Nanosecond).Truncate(time.Hour)
	fmt.Fprintf(&buf, "hours %s to %s (UTC), as of %s\n\n", layout.FormatHour(r.Since), layout.FormatHour(last), r.Now.Format(time.RFC3339))
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
	if len(r.Hours) == 0 {
		fmt.Fprintln(tw, "no hour in the range has data")
	} else {
		fmt.Fprintln(tw, "TYPE\tVERSION\tHOUR\tRAW\tCOMPLETE\tPUBLISHED\tRECORDS\tSUPPLEMENTS\tLATE PENDING\tDEAD-LETTERED\tBIGQUERY\tWAITING")
	}
	for _, h := range r.Hours {
		if h.Type == UnknownType {
			// Dead letters only: nothing else applies.
			fmt.Fprintf(tw, "%s\t-\t%s\t-\t-\t-\t-\t-\t-\t%s\t-\t\n", h.Type, h.Hour, deadCell(h.DeadLettered))
			continue
		}
		records := "-"
		if h.Published {
			records = strconv.FormatInt(h.Records, 10)
		}
		fmt.Fprintf(tw, "%s\tv%d\t%s\t%d\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", h.Type, h.Version, h.Hour, h.RawParts,
			completeCell(h.Complete), yesNo(h.Published), records, h.Supplements, h.LatePending,
			deadCell(h.DeadLettered), bigQueryCell(h), h.Waiting)
	}
	fmt.Fprintln(tw)
	if len(r.Writers) == 0 {
		fmt.Fprintln(tw, "no writer records since", layout.FormatHour(r.Since))
	} else {
		fmt.Fprintln(tw, "WRITER\tKIND\tSTATE\tWATERMARK\tLATENESS\tHEARTBEAT\tLIVE\tNOTE")
	}
	for _, wr := range r.Writers {
		wm := "-"
		if wr.Watermark != nil {
			wm = wr.Watermark.Format(time.RFC3339)
		}
		live := "-"
		switch {
		case wr.Live:
			live = "live"
		case wr.Stale:
			live = "stale"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s ago\t%s\t%s\n", wr.ID, wr.Kind, wr.State, wm, wr.Lateness, wr.HeartbeatAge, live, wr.Note)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// tabwriter pads empty last cells: no trailing blanks.
	for line := range bytes.Lines(buf.Bytes()) {
		if _, err := w.Write(append(bytes.TrimRight(line, " \n"), '\n')); err != nil {
			return err
		}
	}
	return nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func completeCell(c *Completion) string {
	switch {
	case c == nil:
		return "no"
	case !c.Marked:
		return "yes (no _COMPLETE yet)"
	}
	s := "yes, " + c.ObservedBy
	if c.CompletedAt != nil {
		s += " at " + c.CompletedAt.Format(time.RFC3339)
	}
	if c.Forced {
		s += " (forced)"
	}
	return s
}

func deadCell(m map[string]int64) string {
	if len(m) == 0 {
		return "-"
	}
	var parts []string
	for _, reason := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, reason+":"+strconv.FormatInt(m[reason], 10))
	}
	return strings.Join(parts, " ")
}

// bigQueryCell names each dataset the hour was loaded into: as is when
// the load covered every part published now, with "k/n parts" when not.
func bigQueryCell(h Hour) string {
	best := map[string]BigQueryLoad{}
	for _, l := range h.BigQuery {
		if b, ok := best[l.Dataset]; !ok || l.Current || (!b.Current && l.Parts > b.Parts) {
			best[l.Dataset] = l
		}
	}
	if len(best) == 0 {
		return "-"
	}
	var out []string
	for _, ds := range slices.Sorted(maps.Keys(best)) {
		if l := best[ds]; l.Current {
			out = append(out, ds)
		} else {
			out = append(out, fmt.Sprintf("%s (%d/%d parts)", ds, l.Parts, h.Supplements+1))
		}
	}
	return strings.Join(out, " ")
}
