package status

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/completion"
	"github.com/lockstream/lockstream/dataset"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/schemas"
)

// UnknownType is the type of the row of dead letters whose event_type and
// schema_version attributes name no registered schema.
const UnknownType = "(unknown)"

// DefaultRange is how far before Now the report starts when Since is zero.
const DefaultRange = 24 * time.Hour

// DefaultStuckAfter is Options.StuckAfter's default: an hour that is not
// complete this long after its end plus lateness is stuck.
const DefaultStuckAfter = 30 * time.Minute

// DefaultLateness is the lateness an hour's deadline adds when no writer
// record says one (ingest's default --allowed-lateness).
const DefaultLateness = 2 * time.Minute

// States of an hour (Hour.State): the colours of the status page.
const (
	StateWaiting      = "waiting"      // not complete, within its deadline
	StateStuck        = "stuck"        // not complete past its deadline (see Options.StuckAfter)
	StateComplete     = "complete"     // complete, not published
	StatePublished    = "published"    // the main part is published
	StateSupplemented = "supplemented" // published, with late supplements
	StateDeadLetters  = "dead_letters" // dead letters only: nothing to complete (and the UnknownType row)
)

// Options select what Build reports.
type Options struct {
	// Since and Until bound the hours reported: those that start at or
	// after Since and before Until. Zero Since: DefaultRange before Now;
	// zero Until: Now (the current hour included).
	Since, Until time.Time
	// Types and Version restrict the report (nil, 0: every registered type
	// and version; the UnknownType row only then).
	Types   []string
	Version int
	// Now is the time the completion of hours and the liveness of writers
	// are judged at (zero: time.Now()).
	Now time.Time
	// Registry names the types and versions (nil: schemas.Embedded()).
	Registry *schemas.Registry
	// StuckAfter: an hour not complete this long after its end plus
	// lateness is stuck (0: DefaultStuckAfter).
	StuckAfter time.Duration
	// Lateness is added to an hour's end before its StuckAfter starts (0:
	// the largest of the writer records' lateness, or DefaultLateness).
	Lateness time.Duration
}

// Report is the status of a root: the JSON document of `lockstream status
// --format json` (see the package doc).
type Report struct {
	Since   time.Time `json:"since"`
	Until   time.Time `json:"until"`
	Now     time.Time `json:"now"`
	Hours   []Hour    `json:"hours"`
	Writers []Writer  `json:"writers"`
	// StuckAfter and Lateness are the options the states were judged
	// with ("30m0s").
	StuckAfter string `json:"stuck_after"`
	Lateness   string `json:"lateness"`
	// Attention lists, one line each, what needs an operator: stuck
	// hours, complete hours not published past their deadline, late parts
	// pending in published hours, dead letters not redriven (by reason),
	// stale writers, BigQuery loads that miss a part.
	Attention []string `json:"attention"`
}

// Hour is the status of one (type, version, hour).
type Hour struct {
	Type    string `json:"type"`
	Version int    `json:"version"`
	Hour    string `json:"hour"` // "2026-11-23T06"
	// RawParts counts the hour's raw part files.
	RawParts int `json:"raw_parts"`
	// Complete is nil while the hour is not complete.
	Complete *Completion `json:"complete"`
	// Published: the main part's _SUCCESS exists. Records counts the
	// records of every published part; Supplements the published late
	// supplements.
	Published   bool  `json:"published"`
	Records     int64 `json:"records"`
	Supplements int   `json:"supplements"`
	// LatePending counts the part files no published part consumed yet
	// (dataset.Pending); for an unpublished hour, its late/ part files.
	LatePending int `json:"late_pending"`
	// DeadLettered counts dead-lettered messages by reason.
	DeadLettered map[string]int64 `json:"dead_lettered"`
	// BigQuery lists the hour's BigQuery load markers.
	BigQuery []BigQueryLoad `json:"bigquery"`
	// Waiting says why an hour that is not complete waits ("" otherwise).
	Waiting string `json:"waiting,omitempty"`
	// State is one of the State* constants.
	State string `json:"state"`
	// Deadline: when a not complete hour becomes stuck (its end plus
	// lateness plus StuckAfter).
	Deadline time.Time `json:"deadline"`
	// Input sums the accounting of the published parts' manifests: raw
	// and late records read, duplicates dropped (in the hour and against
	// the lookback), late records, published (null until published).
	Input *layout.Accounting `json:"input"`
	// Lineage of the published parts (null until published).
	Lineage *Lineage `json:"lineage"`
	// Redriven counts this hour's dead letters that lockstream redrive
	// re-ingested, by reason (they stay in their dead-letter files).
	Redriven map[string]int64 `json:"redriven"`

	key layout.Hour
}

// In is what the hour took in, as far as the root tells: the raw and late
// records its published parts read plus its dead letters.
func (h *Hour) In() int64 {
	var n int64
	if h.Input != nil {
		n = h.Input.RawRecords + h.Input.LateRecords
	}
	for _, d := range h.DeadLettered {
		n += d
	}
	return n
}

// Lineage is where an hour's published parts came from.
type Lineage struct {
	// InputHours: every hour a part was deduplicated against (the hour
	// itself first).
	InputHours   []string `json:"input_hours"`
	CodeVersions []string `json:"code_versions"`
	RunIDs       []string `json:"run_ids"`
	// Parts names each published part with its records ("main 10",
	// "late-0001 2").
	Parts []string `json:"parts"`
}

// Completion says how an hour is complete.
type Completion struct {
	// Marked: the hour's _COMPLETE marker exists. Without it the writer
	// records decide the hour complete now, and the next ingest writer or
	// hourly run that looks writes the marker (status never does).
	Marked      bool       `json:"marked"`
	ObservedBy  string     `json:"observed_by,omitempty"`
	CompletedAt *time.Time `json:"completed_at,omitempty"`
	Forced      bool       `json:"forced,omitempty"`
	Vouchers    []string   `json:"vouchers"`
}

// BigQueryLoad is one load marker (layout.LoadMarker) of an hour.
type BigQueryLoad struct {
	Dataset string `json:"dataset"` // "project.dataset"
	Parts   int    `json:"parts"`   // the hour's parts the load covered
	// Current: the load covered every part published now.
	Current bool `json:"current"`
}

// Writer is one ingest writer's record (completion.Record).
type Writer struct {
	ID           string     `json:"id"` // "run/part"
	Kind         string     `json:"kind"`
	Source       string     `json:"source"`
	State        string     `json:"state"`
	Note         string     `json:"note,omitempty"`
	Watermark    *time.Time `json:"watermark"`
	Lateness     string     `json:"lateness"`
	HeartbeatAt  time.Time  `json:"heartbeat_at"`
	HeartbeatAge string     `json:"heartbeat_age"`
	// Live: running with a fresh heartbeat. Stale: running by its record,
	// but its heartbeat is older than its stale_after (crashed); it holds
	// no hour.
	Live  bool `json:"live"`
	Stale bool `json:"stale"`
}

// ErrReadOnly is what a write through the bucket Build reads with fails
// with: status never writes.
var ErrReadOnly = errors.New("status: the root is read only here")

// Build reads the status of every (type, version, hour) in the range that
// has anything under the root, and the writers' records. It only reads.
func Build(ctx context.Context, b blob.Bucket, o Options) (*Report, error) {
	o, err := o.normalize()
	if err != nil {
		return nil, err
	}
	r := &Report{Since: o.Since, Until: o.Until, Now: o.Now, Hours: []Hour{}, Writers: []Writer{}, Attention: []string{}}
	c := &listCache{Bucket: b}
	tvs := o.typeVersions()

	// One listing of each area per type, version and day; one of the
	// dead letters; one completion.Load.
	var dirs []string
	for _, tv := range tvs {
		for day := o.Since.Truncate(24 * time.Hour); day.Before(o.Until); day = day.Add(24 * time.Hour) {
			for _, d := range []string{layout.RawDir(tv.Type, tv.Version, day), layout.LateDir(tv.Type, tv.Version, day), layout.DatasetDir(tv.Type, tv.Version, day)} {
				dirs = append(dirs, dayDir(d))
			}
		}
	}
	var recs []*completion.Record
	var deadNames, ledgerNames []string
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	g.Go(func() (err error) {
		recs, err = completion.Load(gctx, c)
		return err
	})
	g.Go(func() (err error) {
		deadNames, err = c.Bucket.List(gctx, layout.DeadLetterArea+"/")
		return err
	})
	g.Go(func() (err error) {
		ledgerNames, err = c.Bucket.List(gctx, layout.RedriveArea+"/")
		return err
	})
	for _, d := range dirs {
		g.Go(func() error { return c.fill(gctx, d) })
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}

	rows := map[layout.Hour]*Hour{}
	row := func(h layout.Hour) *Hour {
		h.Hour = h.Hour.UTC()
		if rw := rows[h]; rw != nil {
			return rw
		}
		rw := &Hour{Type: h.Type, Version: h.Version, Hour: layout.FormatHour(h.Hour), DeadLettered: map[string]int64{},
			Redriven: map[string]int64{}, BigQuery: []BigQueryLoad{}, key: h}
		rows[h] = rw
		return rw
	}
	for _, names := range c.lists {
		for _, n := range names {
			if _, h, _, ok := layout.ParseDir(n); ok && o.inRange(h.Hour) {
				row(h)
			}
		}
	}
	for _, rec := range recs {
		for _, h := range rec.Hours {
			if o.inRange(h.Hour) && o.wants(h.Type, h.Version) {
				row(h)
			}
		}
	}

	// Dead letters, then the redrive ledger entries of dead letters, of the
	// hours in range: each file read in parallel, its messages counted by
	// reason and hour.
	deadLetter := func(name string) (string, bool) { return name, true }
	if err := countByReason(ctx, c, o, deadNames, deadLetter, countDeadLetters, func(h layout.Hour, reason string, n int64) {
		row(h).DeadLettered[reason] += n
	}); err != nil {
		return nil, err
	}
	ledgerDeadLetter := func(name string) (string, bool) {
		dl, _, ok := layout.ParseRedriveLedger(name)
		return dl, ok
	}
	if err := countByReason(ctx, c, o, ledgerNames, ledgerDeadLetter, countRedriven, func(h layout.Hour, reason string, n int64) {
		row(h).Redriven[reason] += n
	}); err != nil {
		return nil, err
	}

	// Each hour: markers, manifests, pending parts, load markers.
	all := make([]*Hour, 0, len(rows))
	for _, rw := range rows {
		all = append(all, rw)
	}
	sort.Slice(all, func(i, j int) bool { return less(all[i].key, all[j].key) })
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(16)
	for _, rw := range all {
		if rw.Type == UnknownType {
			continue
		}
		g.Go(func() error { return c.hour(gctx, rw, recs, o.Now) })
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	lateness := o.Lateness
	if lateness == 0 {
		lateness = DefaultLateness
		for i, rec := range recs {
			if i == 0 || rec.Lateness.D() > lateness {
				lateness = max(rec.Lateness.D(), 0)
			}
		}
	}
	r.StuckAfter, r.Lateness = o.StuckAfter.String(), lateness.String()
	for _, rw := range all {
		rw.judge(o.Now, lateness, o.StuckAfter)
		r.Hours = append(r.Hours, *rw)
	}

	for _, rec := range recs {
		live := rec.Live(o.Now)
		if !live && rec.HeartbeatAt.Before(o.Since) {
			continue // a writer of before the range
		}
		w := Writer{ID: rec.ID(), Kind: rec.Kind, Source: rec.Source, State: rec.State, Note: rec.Note,
			Lateness: rec.Lateness.D().String(), HeartbeatAt: rec.HeartbeatAt.UTC(),
			HeartbeatAge: o.Now.Sub(rec.HeartbeatAt).Round(time.Second).String(),
			Live:         live, Stale: rec.State == completion.StateRunning && !live}
		if rec.Watermark != nil {
			wm := rec.Watermark.UTC()
			w.Watermark = &wm
		}
		r.Writers = append(r.Writers, w)
	}
	r.Attention = attention(r)
	return r, nil
}

// judge sets the hour's state and deadline.
func (h *Hour) judge(now time.Time, lateness, stuckAfter time.Duration) {
	if h.Type == UnknownType {
		h.State = StateDeadLetters
		return
	}
	h.Deadline = h.key.Hour.Add(time.Hour + lateness + stuckAfter)
	switch {
	case h.Published && h.Supplements > 0:
		h.State = StateSupplemented
	case h.Published:
		h.State = StatePublished
	case h.Complete != nil:
		h.State = StateComplete
	case h.RawParts == 0 && h.LatePending == 0 && len(h.DeadLettered) > 0:
		// Nothing to complete or publish: every message of the hour was
		// dead-lettered (a redrive gives it raw data, and completes it).
		h.State = StateDeadLetters
	case !now.Before(h.Deadline):
		h.State = StateStuck
	default:
		h.State = StateWaiting
	}
}

// hour fills in one row from the cached listings.
func (c *listCache) hour(ctx context.Context, rw *Hour, recs []*completion.Record, now time.Time) error {
	h := rw.key
	raw, err := c.List(ctx, layout.RawDir(h.Type, h.Version, h.Hour))
	if err != nil {
		return err
	}
	late, err := c.List(ctx, layout.LateDir(h.Type, h.Version, h.Hour))
	if err != nil {
		return err
	}
	for _, n := range raw {
		if dataset.IsPartFile(n) {
			rw.RawParts++
		}
	}
	if slices.Contains(raw, layout.CompleteName(h.Type, h.Version, h.Hour)) {
		m, err := completion.ReadMarker(ctx, c, h)
		if err != nil {
			return err
		}
		at := m.CompletedAt.UTC()
		rw.Complete = &Completion{Marked: true, ObservedBy: m.ObservedBy, CompletedAt: &at, Forced: m.Forced, Vouchers: nonNil(m.Vouchers)}
	} else if d := completion.Decide(h, recs, now); d.Complete {
		rw.Complete = &Completion{Vouchers: nonNil(d.Vouchers)}
	} else {
		rw.Waiting = d.Reason
	}

	dh, err := dataset.Read(ctx, c, h)
	if err != nil {
		return err
	}
	if !dh.Published() {
		for _, n := range late {
			if dataset.IsPartFile(n) {
				rw.LatePending++
			}
		}
		return nil
	}
	rw.Published, rw.Records, rw.Supplements = true, dh.Records(), dh.Supplements()
	rw.Input, rw.Lineage = &layout.Accounting{}, &Lineage{InputHours: []string{}, CodeVersions: []string{}, RunIDs: []string{}, Parts: []string{}}
	for _, p := range dh.Parts {
		in := p.Manifest.Input
		rw.Input.RawFiles += in.RawFiles
		rw.Input.RawRecords += in.RawRecords
		rw.Input.DuplicatesDropped += in.DuplicatesDropped
		rw.Input.LookbackDropped += in.LookbackDropped
		rw.Input.LateRecords += in.LateRecords
		rw.Input.Published += in.Published
		l := p.Manifest.Lineage
		rw.Lineage.InputHours = appendNew(rw.Lineage.InputHours, l.InputHours...)
		rw.Lineage.CodeVersions = appendNew(rw.Lineage.CodeVersions, l.CodeVersion)
		rw.Lineage.RunIDs = appendNew(rw.Lineage.RunIDs, p.Manifest.RunID)
		rw.Lineage.Parts = append(rw.Lineage.Parts, p.Name+" "+strconv.FormatInt(p.Manifest.Records, 10))
	}
	pending, err := dataset.Pending(ctx, c, dh)
	if err != nil {
		return err
	}
	rw.LatePending = len(pending)
	names, err := c.List(ctx, layout.DatasetDir(h.Type, h.Version, h.Hour))
	if err != nil {
		return err
	}
	for _, n := range names {
		if ds, parts, ok := parseLoadMarker(h, n); ok {
			rw.BigQuery = append(rw.BigQuery, BigQueryLoad{Dataset: ds, Parts: parts, Current: parts == len(dh.Parts)})
		}
	}
	return nil
}

// parseLoadMarker reads "<project>.<dataset>" and the number of parts out
// of a load marker's name (layout.LoadMarker), directly in h's dataset
// directory.
func parseLoadMarker(h layout.Hour, name string) (bqDataset string, parts int, ok bool) {
	const prefix = layout.LoadMarkerPrefix
	base, found := strings.CutPrefix(name, layout.DatasetDir(h.Type, h.Version, h.Hour)+prefix)
	if !found || strings.Contains(base, "/") {
		return "", 0, false
	}
	base, found = strings.CutSuffix(base, ".json")
	if !found {
		return "", 0, false
	}
	parts = 1
	if i := strings.LastIndex(base, ".parts-"); i >= 0 {
		n, err := strconv.Atoi(base[i+len(".parts-"):])
		if err != nil || n < 2 {
			return "", 0, false
		}
		base, parts = base[:i], n
	}
	i := strings.LastIndex(base, ".") // dataset ids have no dots; projects may
	if i <= 0 || i == len(base)-1 {
		return "", 0, false
	}
	if layout.LoadMarker(h, base[:i], base[i+1:], parts) != name {
		return "", 0, false
	}
	return base, parts, true
}

// parseDeadLetter reads deadletter/<reason>/<YYYY-MM-DD>/<HH>/<file>.
func parseDeadLetter(name string) (reason string, hour time.Time, ok bool) {
	p := strings.Split(name, "/")
	if len(p) < 5 || p[0] != layout.DeadLetterArea {
		return "", time.Time{}, false
	}
	hour, err := time.Parse("2006-01-02/15", p[2]+"/"+p[3])
	if err != nil || !strings.HasPrefix(name, layout.DeadLetterDir(p[1], hour)) {
		return "", time.Time{}, false
	}
	return p[1], hour, true
}

// countByReason counts with count, 16 files at a time, the messages of the
// files among names whose dead-letter file (deadLetter(name); false: it has
// none) is of an hour in range. Then it passes add, one at a time, each
// count of a (type, version, hour) that o asks for, with the dead letter's
// reason.
func countByReason(ctx context.Context, b blob.Bucket, o Options, names []string, deadLetter func(name string) (string, bool),
	count func(context.Context, blob.Bucket, string, time.Time, *schemas.Registry) (map[layout.Hour]int64, error),
	add func(h layout.Hour, reason string, n int64)) error {
	type file struct {
		name, reason string
		hour         time.Time
		counts       map[layout.Hour]int64
	}
	var files []*file
	for _, n := range names {
		if dl, ok := deadLetter(n); ok {
			if reason, hour, ok := parseDeadLetter(dl); ok && o.inRange(hour) {
				files = append(files, &file{name: n, reason: reason, hour: hour})
			}
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for _, f := range files {
		g.Go(func() (err error) {
			f.counts, err = count(gctx, b, f.name, f.hour, o.Registry)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for _, f := range files {
		for h, n := range f.counts {
			// The unknown type's row only when no type or version is asked for.
			if h.Type == UnknownType && (len(o.Types) > 0 || o.Version > 0) || h.Type != UnknownType && !o.wants(h.Type, h.Version) {
				continue
			}
			add(h, f.reason, n)
		}
	}
	return nil
}

// countDeadLetters counts the lines of one dead-letter file by the type and
// version their attributes name (UnknownType, version 0, when that is no
// registered schema, or the line is no record.Rejection).
func countDeadLetters(ctx context.Context, b blob.Bucket, name string, hour time.Time, reg *schemas.Registry) (map[layout.Hour]int64, error) {
	data, err := blob.ReadAll(ctx, b, name)
	if errors.Is(err, blob.ErrNotExist) {
		return nil, nil // removed by retention meanwhile
	}
	if err != nil {
		return nil, err
	}
	out := map[layout.Hour]int64{}
	unknown := layout.Hour{Type: UnknownType, Hour: hour}
	for line := range bytes.Lines(data) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var rj record.Rejection
		if json.Unmarshal(line, &rj) != nil {
			out[unknown]++
			continue
		}
		s, err := reg.Resolve(rj.Attributes[record.AttrEventType], rj.Attributes[record.AttrSchemaVersion])
		if err != nil {
			out[unknown]++
			continue
		}
		out[layout.Hour{Type: s.Type, Version: s.Version, Hour: hour}]++
	}
	return out, nil
}

// countRedriven counts the messages of one redrive ledger entry by the
// type and version their dead letters' attributes name (as countDeadLetters
// does, so that the two subtract).
func countRedriven(ctx context.Context, b blob.Bucket, name string, hour time.Time, reg *schemas.Registry) (map[layout.Hour]int64, error) {
	data, err := blob.ReadAll(ctx, b, name)
	if errors.Is(err, blob.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var doc layout.RedriveDoc
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("status: %s: %w", name, err)
	}
	out := map[layout.Hour]int64{}
	for _, m := range doc.Messages {
		h := layout.Hour{Type: UnknownType, Hour: hour}
		if s, err := reg.Resolve(m.EventType, m.SchemaVersion); err == nil {
			h = layout.Hour{Type: s.Type, Version: s.Version, Hour: hour}
		}
		out[h]++
	}
	return out, nil
}

func (o Options) normalize() (Options, error) {
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	o.Now = o.Now.UTC()
	if o.Until.IsZero() {
		o.Until = o.Now
	}
	if o.Since.IsZero() {
		o.Since = o.Now.Add(-DefaultRange)
	}
	o.Since, o.Until = o.Since.UTC().Truncate(time.Hour), o.Until.UTC()
	if o.StuckAfter < 0 || o.Lateness < 0 {
		return o, fmt.Errorf("status: stuck-after %s and lateness %s must not be negative", o.StuckAfter, o.Lateness)
	}
	if o.StuckAfter == 0 {
		o.StuckAfter = DefaultStuckAfter
	}
	if !o.Since.Before(o.Until) {
		return o, fmt.Errorf("status: since %s is not before until %s", layout.FormatHour(o.Since), o.Until.Format(time.RFC3339))
	}
	if o.Registry == nil {
		reg, err := schemas.Embedded()
		if err != nil {
			return o, err
		}
		o.Registry = reg
	}
	for _, t := range o.Types {
		if len(o.Registry.Versions(t)) == 0 {
			return o, fmt.Errorf("status: %q is not a registered event type (known: %s)", t, strings.Join(o.Registry.Types(), ", "))
		}
		if o.Version > 0 && !slices.Contains(o.Registry.Versions(t), o.Version) {
			return o, fmt.Errorf("status: %s has no version %d (known: %v)", t, o.Version, o.Registry.Versions(t))
		}
	}
	return o, nil
}

// CheckOptions checks o as Build would, without reading anything.
func CheckOptions(o Options) error {
	_, err := o.normalize()
	return err
}

func (o Options) inRange(h time.Time) bool { return !h.Before(o.Since) && h.Before(o.Until) }

func (o Options) wants(t string, v int) bool {
	return (len(o.Types) == 0 || slices.Contains(o.Types, t)) && (o.Version == 0 || v == o.Version)
}

func (o Options) typeVersions() []layout.Hour {
	var out []layout.Hour
	for _, t := range o.Registry.Types() {
		for _, v := range o.Registry.Versions(t) {
			if o.wants(t, v) {
				out = append(out, layout.Hour{Type: t, Version: v})
			}
		}
	}
	return out
}

// dayDir is the directory of the day of an hour directory ("…/<day>/<HH>/").
func dayDir(hourDir string) string { return path.Dir(strings.TrimSuffix(hourDir, "/")) + "/" }

// less orders rows by type (UnknownType last), version, hour.
func less(a, b layout.Hour) bool {
	if a.Type != b.Type {
		if a.Type == UnknownType || b.Type == UnknownType {
			return b.Type == UnknownType
		}
		return a.Type < b.Type
	}
	if a.Version != b.Version {
		return a.Version < b.Version
	}
	return a.Hour.Before(b.Hour)
}

// appendNew appends the non-empty values of vs that s lacks.
func appendNew(s []string, vs ...string) []string {
	for _, v := range vs {
		if v != "" && !slices.Contains(s, v) {
			s = append(s, v)
		}
	}
	return s
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// listCache is the root as Build reads it: it refuses every write, and
// answers List below a prefix it listed already (fill) from that listing,
// so that dataset.Read and dataset.Pending of each hour read no listing
// again.
type listCache struct {
	blob.Bucket
	mu    sync.Mutex
	lists map[string][]string // prefix ending in "/" → its names, sorted
}

func (c *listCache) fill(ctx context.Context, prefix string) error {
	names, err := c.Bucket.List(ctx, prefix)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lists == nil {
		c.lists = map[string][]string{}
	}
	c.lists[prefix] = names
	return nil
}

func (c *listCache) List(ctx context.Context, prefix string) ([]string, error) {
	c.mu.Lock()
	for p, names := range c.lists {
		if strings.HasPrefix(prefix, p) {
			c.mu.Unlock()
			i, _ := slices.BinarySearch(names, prefix)
			j := i
			for j < len(names) && strings.HasPrefix(names[j], prefix) {
				j++
			}
			return slices.Clone(names[i:j]), nil
		}
	}
	c.mu.Unlock()
	return c.Bucket.List(ctx, prefix)
}

func (c *listCache) Create(context.Context, string) (blob.Writer, error) { return nil, ErrReadOnly }
func (c *listCache) Delete(context.Context, string) error                { return ErrReadOnly }
func (c *listCache) Copy(context.Context, string, string) error          { return ErrReadOnly }
func (c *listCache) Compose(context.Context, string, []string) error     { return ErrReadOnly }
func (c *listCache) WriteVersion(context.Context, string, []byte, int64) (int64, error) {
	return 0, ErrReadOnly
}
func (c *listCache) DeleteVersion(context.Context, string, int64) error { return ErrReadOnly }

var _ blob.Bucket = (*listCache)(nil)
