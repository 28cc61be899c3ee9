package completion

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/layout"
)

// Decision is the completion of one hour, and why.
type Decision struct {
	Hour     layout.Hour
	Complete bool
	// Marked: the hour's _COMPLETE marker exists (Complete is then true);
	// MarkedNow: this observation wrote it.
	Marked    bool
	MarkedNow bool
	Vouchers  []string // writers that vouch for the hour
	Holders   []string // live writers that hold it, each "run/part (watermark …, heartbeat … ago)"
	// Reason says why an incomplete hour waits.
	Reason string
}

// Decide applies the rule of the package doc to hour h, given every
// writer record, at time now.
func Decide(h layout.Hour, recs []*Record, now time.Time) Decision {
	d := Decision{Hour: h}
	for _, r := range recs {
		passed := r.Passed(h.Hour)
		if passed || (r.Ended() && r.Wrote(h)) {
			d.Vouchers = append(d.Vouchers, r.ID())
		}
		if passed || !r.Live(now) {
			continue
		}
		if r.Kind == KindStream || r.Wrote(h) {
			d.Holders = append(d.Holders, fmt.Sprintf("%s (%s, heartbeat %s ago)", r.ID(), describeWatermark(r), now.Sub(r.HeartbeatAt).Round(time.Second)))
		}
	}
	switch {
	case len(d.Holders) > 0:
		d.Reason = "waiting for live writer " + strings.Join(d.Holders, ", ")
	case len(d.Vouchers) == 0:
		d.Reason = fmt.Sprintf("no writer has passed %s yet (the next run that passes it completes it)", layout.FormatHour(h.Hour.Add(time.Hour)))
	default:
		d.Complete = true
	}
	return d
}

func describeWatermark(r *Record) string {
	if r.Watermark == nil {
		return "no watermark yet"
	}
	return "watermark " + r.Watermark.UTC().Format("2006-01-02T15:04:05Z")
}

// MarkerFormatVersion is the version of the _COMPLETE JSON.
const MarkerFormatVersion = 2

// Marker is the content of raw/<type>/v<n>/<day>/<HH>/_COMPLETE.
type Marker struct {
	FormatVersion int       `json:"format_version"`
	EventType     string    `json:"event_type"`
	SchemaVersion int       `json:"schema_version"`
	Hour          string    `json:"hour"`
	CompletedAt   time.Time `json:"completed_at"`
	// ObservedBy is who wrote the marker: an ingest writer ("run/part") or
	// "hourly <run>".
	ObservedBy string   `json:"observed_by"`
	Vouchers   []string `json:"vouchers"`
	// RawFiles are the raw part files of the hour when it completed
	// (names relative to the hour's directory); later ones may follow (a
	// writer that missed the marker), and hourly publishes them all.
	RawFiles []string `json:"raw_files"`
	// Forced: written by hourly --force, without a decision.
	Forced bool `json:"forced,omitempty"`
}

// ReadMarker reads an hour's _COMPLETE marker (blob.ErrNotExist, wrapped,
// when the hour is not complete). A marker of format 1 (written by older
// versions, from the ingest job's own timers) reads with its run id as
// ObservedBy and files as RawFiles.
func ReadMarker(ctx context.Context, b blob.Bucket, h layout.Hour) (*Marker, error) {
	name := layout.CompleteName(h.Type, h.Version, h.Hour)
	data, err := blob.ReadAll(ctx, b, name)
	if err != nil {
		return nil, err
	}
	var m struct {
		Marker
		RunID string   `json:"run_id"`
		Files []string `json:"files"`
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("completion: %s: %w", name, err)
	}
	if m.FormatVersion == 1 {
		m.ObservedBy, m.RawFiles = m.RunID, m.Files
	}
	return &m.Marker, nil
}

// IsComplete reports whether h's _COMPLETE marker exists.
func IsComplete(ctx context.Context, b blob.Bucket, h layout.Hour) (bool, error) {
	return b.Exists(ctx, layout.CompleteName(h.Type, h.Version, h.Hour))
}

// WriteMarker writes h's _COMPLETE marker (an existing one is kept: the
// decision was made).
func WriteMarker(ctx context.Context, b blob.Bucket, h layout.Hour, d Decision, observer string, now time.Time, forced bool) error {
	names, err := b.List(ctx, layout.RawDir(h.Type, h.Version, h.Hour))
	if err != nil {
		return err
	}
	m := Marker{FormatVersion: MarkerFormatVersion, EventType: h.Type, SchemaVersion: h.Version, Hour: layout.FormatHour(h.Hour),
		CompletedAt: now.UTC(), ObservedBy: observer, Vouchers: d.Vouchers, RawFiles: []string{}, Forced: forced}
	if m.Vouchers == nil {
		m.Vouchers = []string{}
	}
	for _, n := range names {
		if base := path.Base(n); base != layout.Complete {
			m.RawFiles = append(m.RawFiles, base)
		}
	}
	sort.Strings(m.RawFiles)
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	err = blob.WriteAll(ctx, b, layout.CompleteName(h.Type, h.Version, h.Hour), append(data, '\n'))
	if err != nil && !errors.Is(err, blob.ErrExist) {
		return fmt.Errorf("completion: mark %s complete: %w", h, err)
	}
	return nil
}

// Observer decides the completion of hours and writes the markers of
// those that are complete.
type Observer struct {
	Bucket blob.Bucket
	// Name is recorded in the markers it writes (ObservedBy).
	Name string
	Now  func() time.Time
	// BeforeMark, when set, is called before each marker is written; an
	// error stops the observation (tests: a crash just before _COMPLETE).
	BeforeMark func(layout.Hour) error

	mu       sync.Mutex
	complete map[layout.Hour]bool // hours seen complete (they stay so)
}

// known reports whether h was seen complete; markKnown records it.
func (o *Observer) known(h layout.Hour) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.complete[h]
}

func (o *Observer) markKnown(h layout.Hour) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.complete == nil {
		o.complete = map[layout.Hour]bool{}
	}
	o.complete[h] = true
}

// OpenHours is Open for a long-lived observer: hours it has seen complete
// are not checked again.
func (o *Observer) OpenHours(ctx context.Context) ([]layout.Hour, error) {
	hours, err := writtenHours(ctx, o.Bucket)
	if err != nil {
		return nil, err
	}
	open := hours[:0]
	for _, h := range hours {
		if o.known(h) {
			continue
		}
		ok, err := IsComplete(ctx, o.Bucket, h)
		if err != nil {
			return nil, err
		}
		if ok {
			o.markKnown(h)
		} else {
			open = append(open, h)
		}
	}
	return open, nil
}

// Observe decides each hour (already marked ones are reported as such)
// and marks the complete ones.
func (o *Observer) Observe(ctx context.Context, hours []layout.Hour) ([]Decision, error) {
	var recs []*Record
	loaded := false
	out := make([]Decision, 0, len(hours))
	for _, h := range hours {
		ok, err := IsComplete(ctx, o.Bucket, h)
		if err != nil {
			return out, err
		}
		if ok {
			o.markKnown(h)
			out = append(out, Decision{Hour: h, Complete: true, Marked: true})
			continue
		}
		if !loaded {
			if recs, err = Load(ctx, o.Bucket); err != nil {
				return out, err
			}
			loaded = true
		}
		now := o.Now()
		d := Decide(h, recs, now)
		if d.Complete {
			if o.BeforeMark != nil {
				if err := o.BeforeMark(h); err != nil {
					return out, err
				}
			}
			if err := WriteMarker(ctx, o.Bucket, h, d, o.Name, now, false); err != nil {
				return out, err
			}
			d.Marked, d.MarkedNow = true, true
			o.markKnown(h)
		}
		out = append(out, d)
	}
	return out, nil
}

// Open lists the hours that writers wrote and that are not complete yet
// (those with no _COMPLETE marker), oldest first.
func Open(ctx context.Context, b blob.Bucket) ([]layout.Hour, error) {
	hours, err := writtenHours(ctx, b)
	if err != nil {
		return nil, err
	}
	open := hours[:0]
	for _, h := range hours {
		ok, err := IsComplete(ctx, b, h)
		if err != nil {
			return nil, err
		}
		if !ok {
			open = append(open, h)
		}
	}
	return open, nil
}

// writtenHours lists the hours of every writer's hour markers, oldest
// first.
func writtenHours(ctx context.Context, b blob.Bucket) ([]layout.Hour, error) {
	names, err := b.List(ctx, layout.WritersArea+"/")
	if err != nil {
		return nil, err
	}
	seen := map[layout.Hour]bool{}
	var hours []layout.Hour
	for _, n := range names {
		if _, h, ok := layout.ParseWriterHourMarker(n); ok && !seen[h] {
			seen[h] = true
			hours = append(hours, h)
		}
	}
	sort.Slice(hours, func(i, j int) bool {
		if !hours[i].Hour.Equal(hours[j].Hour) {
			return hours[i].Hour.Before(hours[j].Hour)
		}
		if hours[i].Type != hours[j].Type {
			return hours[i].Type < hours[j].Type
		}
		return hours[i].Version < hours[j].Version
	})
	return hours, nil
}
