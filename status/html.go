package status

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lockstream/lockstream/layout"
)

// HTMLOptions shape the page WriteHTML writes.
type HTMLOptions struct {
	// Root names the root in the title (as the operator gave it).
	Root string
	// Refresh, when positive, makes an open page reload itself that often
	// (status --watch rewrites the file every interval).
	Refresh time.Duration
}

//go:embed page.html.tmpl
var pageSource string

var page = template.Must(template.New("page").Parse(pageSource))

// WriteHTML writes r as one self-contained HTML page: an hour grid per
// type and version (a cell's colour is the hour's state; hovering shows
// its summary, clicking shows its accounting), what needs attention, and
// the writers. The page fetches nothing: styles, script and data are
// inline, so it works from a bucket, a mail attachment or a laptop.
func WriteHTML(w io.Writer, r *Report, o HTMLOptions) error {
	data, err := json.Marshal(r) // escapes <, > and &: safe inside <script>
	if err != nil {
		return err
	}
	v := pageView{Report: r, Root: o.Root, Data: template.JS(data), Now: r.Now.Format(time.RFC3339),
		StuckAfter: r.StuckAfter, Lateness: r.Lateness}
	if o.Refresh > 0 {
		v.Refresh = int(o.Refresh.Round(time.Second).Seconds())
	}
	last := r.Until.Add(-time.Nanosecond).Truncate(time.Hour)
	v.From, v.To = layout.FormatHour(r.Since), layout.FormatHour(last)
	for h := r.Since; !h.After(last); h = h.Add(time.Hour) {
		c := column{Hour: layout.FormatHour(h), Label: h.Format("15")}
		if h.Equal(r.Since) || h.Hour() == 0 {
			c.Day = h.Format("Jan 2")
		}
		v.Columns = append(v.Columns, c)
	}
	rows := map[string]*gridRow{}
	var order []string
	for i := range r.Hours {
		h := &r.Hours[i]
		key := h.Type + " v" + strconv.Itoa(h.Version)
		if h.Type == UnknownType {
			key = UnknownType
		}
		rw := rows[key]
		if rw == nil {
			rw = &gridRow{Name: key, Type: h.Type, Version: h.Version, cells: map[string]*Hour{}, Counts: map[string]int{}}
			rows[key] = rw
			order = append(order, key)
		}
		rw.cells[h.Hour] = h
		rw.Counts[h.State]++
	}
	for _, key := range order {
		rw := rows[key]
		for _, c := range v.Columns {
			cl := cell{Type: rw.Type, Version: rw.Version, Hour: c.Hour, State: "none", Title: c.Hour + ": no data"}
			if h := rw.cells[c.Hour]; h != nil {
				cl.State, cl.Title, cl.Mark = h.State, cellTitle(h), cellMark(h)
				cl.Dead = deadLeft(h) > 0
			}
			rw.Cells = append(rw.Cells, cl)
		}
		var parts []string
		for _, st := range []string{StateStuck, StateWaiting, StateComplete, StatePublished, StateSupplemented, StateDeadLetters} {
			if n := rw.Counts[st]; n > 0 {
				parts = append(parts, fmt.Sprintf("%d %s", n, stateLabel(st)))
			}
		}
		rw.Summary = strings.Join(parts, ", ")
		v.Rows = append(v.Rows, rw)
	}
	var buf bytes.Buffer
	if err := page.Execute(&buf, v); err != nil {
		return err
	}
	_, err = w.Write(buf.Bytes())
	return err
}

type pageView struct {
	Report                                    *Report
	Root, Now, From, To, StuckAfter, Lateness string
	Refresh                                   int
	Data                                      template.JS
	Columns                                   []column
	Rows                                      []*gridRow
}

type column struct{ Hour, Label, Day string }

type gridRow struct {
	Name    string
	Type    string
	Version int
	Cells   []cell
	Counts  map[string]int
	Summary string
	cells   map[string]*Hour
}

type cell struct {
	Type               string
	Version            int
	Hour, State, Title string
	Mark               string // short text in the cell: "+1" supplements, "!" stuck
	Dead               bool   // dead letters not redriven
}

// stateLabel names a state as the legend does.
func stateLabel(s string) string {
	switch s {
	case StateSupplemented:
		return "published with supplements"
	case StateDeadLetters:
		return "dead letters only"
	}
	return s
}

func cellMark(h *Hour) string {
	switch h.State {
	case StateSupplemented:
		return "+" + strconv.Itoa(h.Supplements)
	case StateStuck:
		return "!"
	case StateDeadLetters:
		return strconv.FormatInt(deadLeft(h), 10)
	}
	return ""
}

// deadLeft counts the hour's dead letters that were not redriven.
func deadLeft(h *Hour) int64 {
	var n int64
	for reason, d := range h.DeadLettered {
		n += max(d-h.Redriven[reason], 0)
	}
	return n
}

// cellTitle is the hover text of a cell (plain text: a tooltip).
func cellTitle(h *Hour) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s v%d %s: %s", h.Type, h.Version, h.Hour, stateLabel(h.State))
	if h.Type == UnknownType {
		b.Reset()
		fmt.Fprintf(&b, "%s %s: dead letters naming no registered type", h.Type, h.Hour)
	}
	if h.Published {
		fmt.Fprintf(&b, "\n%d records published", h.Records)
	}
	if h.Waiting != "" {
		b.WriteString("\n" + h.Waiting)
	}
	if len(h.DeadLettered) > 0 {
		b.WriteString("\ndead-lettered:")
		for _, reason := range slices.Sorted(maps.Keys(h.DeadLettered)) {
			fmt.Fprintf(&b, " %s %d", reason, h.DeadLettered[reason])
		}
	}
	return b.String()
}
