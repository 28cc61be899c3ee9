package status

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/schemas"
	"github.com/lockstream/lockstream/status/statustest"
)

func fixture(t *testing.T) (string, blob.Bucket) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "root")
	b, err := blob.OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	statustest.Build(t, b)
	return root, b
}

func build(t *testing.T, b blob.Bucket, o Options) *Report {
	t.Helper()
	if o.Now.IsZero() {
		o.Now = statustest.Now
	}
	if o.Since.IsZero() {
		o.Since = statustest.Since
	}
	r, err := Build(context.Background(), b, o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func rowOf(t *testing.T, r *Report, typ string, hh int) Hour {
	t.Helper()
	want := layout.FormatHour(statustest.H(hh))
	for _, h := range r.Hours {
		if h.Type == typ && h.Hour == want {
			return h
		}
	}
	t.Fatalf("no row for %s %s in %+v", typ, want, r.Hours)
	return Hour{}
}

func TestStatusReport(t *testing.T) {
	_, b := fixture(t)
	r := build(t, b, Options{})

	var got []string
	for _, h := range r.Hours {
		got = append(got, h.Type+" "+h.Hour)
	}
	want := []string{"AccountUpdate 2026-11-23T04", "AccountUpdate 2026-11-23T05", "PlaybackEvent 2026-11-23T04", "PlaybackEvent 2026-11-23T05", "PlaybackEvent 2026-11-23T06", "(unknown) 2026-11-23T05"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("rows %q, want %q (hours outside the range, or without data, must not show)", got, want)
	}

	// A waiting hour names the live writer that holds it.
	h6 := rowOf(t, r, statustest.PE, 6)
	if h6.Complete != nil || h6.RawParts != 1 || h6.Published {
		t.Fatalf("06: %+v", h6)
	}
	if wantReason := "waiting for live writer " + statustest.LiveWriter + " (watermark " + statustest.LiveWatermark + ", heartbeat 2m0s ago)"; h6.Waiting != wantReason {
		t.Fatalf("06 waits %q, want %q", h6.Waiting, wantReason)
	}

	// A complete, unpublished hour: by whom, its late part pending, its
	// dead letters by reason.
	h5 := rowOf(t, r, statustest.PE, 5)
	if h5.Complete == nil || !h5.Complete.Marked || h5.Complete.ObservedBy != statustest.Observer05 ||
		!h5.Complete.CompletedAt.Equal(statustest.H(6).Add(2*time.Minute)) || h5.Waiting != "" {
		t.Fatalf("05 complete: %+v waiting %q", h5.Complete, h5.Waiting)
	}
	if h5.Published || h5.RawParts != 2 || h5.LatePending != 1 || h5.Supplements != 0 || len(h5.BigQuery) != 0 {
		t.Fatalf("05: %+v", h5)
	}
	if want := map[string]int64{"missing_field": 2, "unknown_field": 1}; !reflect.DeepEqual(h5.DeadLettered, want) {
		t.Fatalf("05 dead letters %v, want %v", h5.DeadLettered, want)
	}

	// A published hour with one supplement and one late part pending, and
	// its BigQuery loads.
	h4 := rowOf(t, r, statustest.PE, 4)
	if !h4.Published || h4.Records != 12 || h4.Supplements != 1 || h4.LatePending != 1 || h4.RawParts != 2 {
		t.Fatalf("04: %+v", h4)
	}
	if h4.Complete == nil || h4.Complete.ObservedBy != statustest.Observer04 {
		t.Fatalf("04 complete: %+v", h4.Complete)
	}
	wantBQ := []BigQueryLoad{{"proj.events", 1, false}, {"proj.events", 2, true}, {"proj.staging", 1, false}}
	if !reflect.DeepEqual(h4.BigQuery, wantBQ) {
		t.Fatalf("04 bigquery %+v, want %+v", h4.BigQuery, wantBQ)
	}

	// Decided complete by the writers, not marked: reported, never marked.
	au := rowOf(t, r, statustest.AU, 5)
	if au.Complete == nil || au.Complete.Marked || !reflect.DeepEqual(au.Complete.Vouchers, []string{statustest.StaleWriter, statustest.LiveWriter}) || au.Waiting != "" {
		t.Fatalf("AccountUpdate 05 complete: %+v waiting %q", au.Complete, au.Waiting)
	}
	if !reflect.DeepEqual(au.DeadLettered, map[string]int64{"missing_field": 1}) {
		t.Fatalf("AccountUpdate 05 dead letters %v", au.DeadLettered)
	}
	if ok, err := b.Exists(context.Background(), layout.CompleteName(statustest.AU, 1, statustest.H(5))); ok || err != nil {
		t.Fatalf("status wrote AccountUpdate 05's _COMPLETE (%v)", err)
	}

	unk := rowOf(t, r, UnknownType, 5)
	if want := map[string]int64{"unknown_event_type": 1, "malformed_json": 1}; !reflect.DeepEqual(unk.DeadLettered, want) || unk.Version != 0 {
		t.Fatalf("(unknown) row %+v, want dead letters %v", unk, want)
	}

	// Writers: the live one and the stale one; the one of two days ago
	// is not shown.
	if len(r.Writers) != 2 {
		t.Fatalf("writers %+v", r.Writers)
	}
	dead, live := r.Writers[0], r.Writers[1]
	if dead.ID != statustest.StaleWriter || !dead.Stale || dead.Live || dead.HeartbeatAge != "10m0s" {
		t.Fatalf("stale writer: %+v", dead)
	}
	if live.ID != statustest.LiveWriter || !live.Live || live.Stale || live.Watermark == nil || live.Watermark.Format(time.RFC3339) != statustest.LiveWatermark {
		t.Fatalf("live writer: %+v", live)
	}
}

func TestStatusTable(t *testing.T) {
	_, b := fixture(t)
	var out bytes.Buffer
	if err := WriteTable(&out, build(t, b, Options{})); err != nil {
		t.Fatal(err)
	}
	table := out.String()
	line := func(prefix string) string {
		t.Helper()
		for _, l := range strings.Split(table, "\n") {
			if l = strings.Join(strings.Fields(l), " "); strings.HasPrefix(l, prefix) {
				return l
			}
		}
		t.Fatalf("no line starting %q in\n%s", prefix, table)
		return ""
	}
	for prefix, want := range map[string]string{
		"PlaybackEvent v1 2026-11-23T06": "PlaybackEvent v1 2026-11-23T06 1 no no - 0 0 - - waiting for live writer run-x/stream-000 (watermark 2026-11-23T06:41:00Z, heartbeat 2m0s ago)",
		"PlaybackEvent v1 2026-11-23T05": "PlaybackEvent v1 2026-11-23T05 2 yes, run-old/stream-000 at 2026-11-23T06:02:00Z no - 0 1 missing_field:2 unknown_field:1 -",
		"PlaybackEvent v1 2026-11-23T04": "PlaybackEvent v1 2026-11-23T04 2 yes, hourly run-h1 at 2026-11-23T05:03:00Z yes 12 1 1 - proj.events proj.staging (1/2 parts)",
		"AccountUpdate v1 2026-11-23T05": "AccountUpdate v1 2026-11-23T05 1 yes (no _COMPLETE yet) no - 0 0 missing_field:1 -",
		"AccountUpdate v1 2026-11-23T04": "AccountUpdate v1 2026-11-23T04 1 yes, hourly run-h1 at 2026-11-23T05:03:00Z yes 4 0 0 - -",
		"(unknown)":                      "(unknown) - 2026-11-23T05 - - - - - - malformed_json:1 unknown_event_type:1 -",
		"run-dead/stream-000":            "run-dead/stream-000 stream running 2026-11-23T06:21:00Z 2m0s 10m0s ago stale",
		"run-x/stream-000":               "run-x/stream-000 stream running 2026-11-23T06:41:00Z 2m0s 2m0s ago live",
	} {
		if got := line(prefix); got != want {
			t.Errorf("line %q\n got: %s\nwant: %s", prefix, got, want)
		}
	}
	if !strings.HasPrefix(table, "hours 2026-11-23T04 to 2026-11-23T07 (UTC), as of 2026-11-23T07:30:00Z\n") {
		t.Errorf("first line: %q", strings.SplitN(table, "\n", 2)[0])
	}
	// Columns are aligned: each hour line has its HOUR and WAITING where
	// the header has them; no line ends in blanks.
	header := strings.Split(table, "\n")[2]
	hour, waiting := strings.Index(header, "HOUR"), strings.Index(header, "WAITING")
	for _, l := range strings.Split(table, "\n") {
		if strings.HasSuffix(l, " ") {
			t.Errorf("trailing blanks: %q", l)
		}
		if strings.HasPrefix(l, "PlaybackEvent") && (l[hour:hour+len("2026-")] != "2026-" || len(l) > waiting && !strings.HasPrefix(l[waiting:], "waiting for")) {
			t.Errorf("misaligned: %q (HOUR at %d, WAITING at %d)", l, hour, waiting)
		}
	}
}

// The JSON has every documented key, complete null for a waiting hour,
// {} and [] for no dead letters and no loads.
func TestStatusJSONShape(t *testing.T) {
	_, b := fixture(t)
	var out bytes.Buffer
	if err := WriteJSON(&out, build(t, b, Options{})); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Hours   []map[string]json.RawMessage `json:"hours"`
		Writers []map[string]json.RawMessage `json:"writers"`
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	hourKeys := []string{"type", "version", "hour", "raw_parts", "complete", "published", "records", "supplements", "late_pending", "dead_lettered", "bigquery"}
	for _, h := range doc.Hours {
		for _, k := range hourKeys {
			if _, ok := h[k]; !ok {
				t.Fatalf("hour %s lacks %q", h["hour"], k)
			}
		}
	}
	byKey := map[string]map[string]json.RawMessage{}
	for _, h := range doc.Hours {
		var typ, hour string
		json.Unmarshal(h["type"], &typ)
		json.Unmarshal(h["hour"], &hour)
		byKey[typ+" "+hour] = h
	}
	h6 := byKey["PlaybackEvent 2026-11-23T06"]
	if string(h6["complete"]) != "null" || !strings.Contains(string(h6["waiting"]), "run-x/stream-000") {
		t.Fatalf("06: complete %s, waiting %s", h6["complete"], h6["waiting"])
	}
	h4 := byKey["PlaybackEvent 2026-11-23T04"]
	if _, ok := h4["waiting"]; ok || string(h4["dead_lettered"]) != "{}" {
		t.Fatalf("04: waiting %s, dead_lettered %s (want absent, {})", h4["waiting"], h4["dead_lettered"])
	}
	if string(byKey["PlaybackEvent 2026-11-23T05"]["bigquery"]) != "[]" {
		t.Fatalf("05 bigquery %s, want []", byKey["PlaybackEvent 2026-11-23T05"]["bigquery"])
	}
	var complete map[string]any
	if err := json.Unmarshal(byKey["PlaybackEvent 2026-11-23T05"]["complete"], &complete); err != nil ||
		complete["observed_by"] != statustest.Observer05 || complete["completed_at"] != "2026-11-23T06:02:00Z" || complete["marked"] != true {
		t.Fatalf("05 complete %v (%v)", complete, err)
	}
	var stale, live bool
	for _, w := range doc.Writers {
		var id string
		json.Unmarshal(w["id"], &id)
		switch id {
		case statustest.StaleWriter:
			stale = string(w["stale"]) == "true" && string(w["live"]) == "false"
		case statustest.LiveWriter:
			live = string(w["live"]) == "true" && string(w["heartbeat_age"]) == `"2m0s"`
		}
	}
	if !stale || !live {
		t.Fatalf("writers %s", out.String())
	}
}

// Status writes nothing: not even a lock file or the _COMPLETE of an hour
// the writers decide complete.
func TestStatusReadOnly(t *testing.T) {
	root, b := fixture(t)
	before := tree(t, root)
	build(t, b, Options{})
	if after := tree(t, root); !reflect.DeepEqual(before, after) {
		t.Fatalf("status changed the root:\nbefore %v\nafter  %v", before, after)
	}
	c := &listCache{Bucket: b}
	if _, err := c.Create(context.Background(), "x"); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Create through the status view: %v", err)
	}
	if _, err := c.WriteVersion(context.Background(), "x", nil, 0); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("WriteVersion through the status view: %v", err)
	}
}

func tree(t *testing.T, root string) map[string]time.Time {
	t.Helper()
	out := map[string]time.Time{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		out[p] = fi.ModTime()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// countingBucket records the prefixes listed and the objects opened.
type countingBucket struct {
	blob.Bucket
	mu     sync.Mutex
	lists  []string
	opened []string
}

func (c *countingBucket) List(ctx context.Context, prefix string) ([]string, error) {
	c.mu.Lock()
	c.lists = append(c.lists, prefix)
	c.mu.Unlock()
	return c.Bucket.List(ctx, prefix)
}

func (c *countingBucket) Open(ctx context.Context, name string) (io.ReadCloser, error) {
	c.mu.Lock()
	c.opened = append(c.opened, name)
	c.mu.Unlock()
	return c.Bucket.Open(ctx, name)
}

// Each area is listed once per type, version and day, never per hour or
// file, and only published hours' manifests are read.
func TestStatusRequests(t *testing.T) {
	_, b := fixture(t)
	cb := &countingBucket{Bucket: b}
	// Two days: 2026-11-22T20 to 2026-11-23T07.
	build(t, cb, Options{Since: statustest.H(4).Add(-8 * time.Hour)})
	seen := map[string]bool{}
	for _, p := range cb.lists {
		if seen[p] {
			t.Errorf("listed %s twice", p)
		}
		seen[p] = true
		if p == layout.WritersArea+"/" || p == layout.DeadLetterArea+"/" || p == layout.RedriveArea+"/" {
			continue
		}
		if parts := strings.Split(strings.TrimSuffix(p, "/"), "/"); len(parts) != 4 {
			t.Errorf("listed %s: not a day directory", p)
		}
	}
	// Every registered (type, version) × 3 areas × 2 days, writers/,
	// deadletter/, redrive/.
	reg, err := schemas.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	if want := len(reg.All())*3*2 + 3; len(cb.lists) != want {
		t.Errorf("%d listings, want %d: %q", len(cb.lists), want, cb.lists)
	}
	var manifests []string
	for _, n := range cb.opened {
		if strings.HasSuffix(n, layout.Manifest) {
			manifests = append(manifests, n)
		}
	}
	want := []string{layout.DatasetDir(statustest.PE, 1, statustest.H(4)) + layout.Manifest, layout.PartDir(statustest.PE, 1, statustest.H(4), layout.SupplementPart(1)) + layout.Manifest,
		layout.DatasetDir(statustest.AU, 1, statustest.H(4)) + layout.Manifest}
	if !sameSet(manifests, want) {
		t.Errorf("manifests read %q, want %q", manifests, want)
	}
}

func sameSet(a, b []string) bool {
	m := map[string]int{}
	for _, s := range a {
		m[s]++
	}
	for _, s := range b {
		m[s]--
	}
	for _, n := range m {
		if n != 0 {
			return false
		}
	}
	return len(a) == len(b)
}

func TestStatusSelection(t *testing.T) {
	_, b := fixture(t)
	r := build(t, b, Options{Types: []string{statustest.AU}})
	if len(r.Hours) != 2 || r.Hours[0].Type != statustest.AU || r.Hours[1].Type != statustest.AU {
		t.Fatalf("--type AccountUpdate: %+v", r.Hours)
	}
	r = build(t, b, Options{Since: statustest.H(6), Until: statustest.H(7)})
	if len(r.Hours) != 1 || r.Hours[0].Hour != "2026-11-23T06" {
		t.Fatalf("[06, 07): %+v", r.Hours)
	}
	for _, o := range []Options{
		{Types: []string{"Nope"}},
		{Types: []string{statustest.AU}, Version: 9},
		{Since: statustest.H(7), Until: statustest.H(6), Now: statustest.Now},
	} {
		if err := CheckOptions(o); err == nil {
			t.Errorf("CheckOptions(%+v) passed", o)
		}
	}
}

func TestParseLoadMarker(t *testing.T) {
	h := layout.Hour{Type: statustest.PE, Version: 1, Hour: statustest.H(4)}
	for _, c := range []struct {
		project, dataset string
		parts            int
	}{{"proj", "events", 1}, {"proj", "events", 3}, {"example.com:proj", "ds_1", 2}} {
		ds, parts, ok := parseLoadMarker(h, layout.LoadMarker(h, c.project, c.dataset, c.parts))
		if !ok || ds != c.project+"."+c.dataset || parts != c.parts {
			t.Errorf("%+v: got %q %d %v", c, ds, parts, ok)
		}
	}
	dir := layout.DatasetDir(h.Type, h.Version, h.Hour)
	for _, n := range []string{dir + "_BQ_LOADED.json", dir + "_BQ_LOADED.p.d.parts-1.json", dir + "late-0001/_BQ_LOADED.p.d.json", dir + layout.Manifest, dir + "_BQ_LOADED.p.d.txt"} {
		if ds, _, ok := parseLoadMarker(h, n); ok {
			t.Errorf("%s read as a load marker of %s", n, ds)
		}
	}
}

// States, deadlines, accounting, redriven counts and what needs attention,
// as the fixture's root says.
func TestStatusStatesAndAttention(t *testing.T) {
	_, b := fixture(t)
	r := build(t, b, Options{})
	if r.StuckAfter != "30m0s" || r.Lateness != "2m0s" {
		t.Fatalf("stuck after %s, lateness %s", r.StuckAfter, r.Lateness)
	}
	states := map[string]string{}
	for _, h := range r.Hours {
		states[h.Type+" "+h.Hour] = h.State
	}
	want := map[string]string{
		"AccountUpdate 2026-11-23T04": StatePublished, "AccountUpdate 2026-11-23T05": StateComplete,
		"PlaybackEvent 2026-11-23T04": StateSupplemented, "PlaybackEvent 2026-11-23T05": StateComplete,
		"PlaybackEvent 2026-11-23T06": StateWaiting, // deadline 07:32, now 07:30
		"(unknown) 2026-11-23T05":     StateDeadLetters,
	}
	if !reflect.DeepEqual(states, want) {
		t.Fatalf("states %v, want %v", states, want)
	}
	h6 := rowOf(t, r, statustest.PE, 6)
	if !h6.Deadline.Equal(statustest.H(7).Add(32 * time.Minute)) {
		t.Fatalf("06's deadline %s", h6.Deadline)
	}
	// Ten minutes later (or with a shorter --stuck-after) it is stuck.
	if rowOf(t, build(t, b, Options{Now: statustest.Now.Add(10 * time.Minute)}), statustest.PE, 6).State != StateStuck {
		t.Fatal("06 is not stuck at 07:40")
	}
	if rowOf(t, build(t, b, Options{StuckAfter: 10 * time.Minute}), statustest.PE, 6).State != StateStuck {
		t.Fatal("06 is not stuck with a 10m stuck-after")
	}
	h4 := rowOf(t, r, statustest.PE, 4)
	if h4.Input == nil || h4.Input.RawRecords != 14 || h4.Input.DuplicatesDropped != 2 || h4.In() != 14 ||
		!reflect.DeepEqual(h4.Lineage.Parts, []string{"main 10", "late-0001 2"}) || !reflect.DeepEqual(h4.Lineage.RunIDs, []string{"run-h1"}) {
		t.Fatalf("04's accounting: %+v %+v", h4.Input, h4.Lineage)
	}
	h5 := rowOf(t, r, statustest.PE, 5)
	if h5.Input != nil || h5.Redriven["missing_field"] != 1 || h5.DeadLettered["missing_field"] != 2 || h5.In() != 3 {
		t.Fatalf("05: %+v", h5)
	}
	joined := strings.Join(r.Attention, "\n")
	for _, w := range []string{
		"PlaybackEvent v1 2026-11-23T05 is complete but not published",
		"PlaybackEvent v1 2026-11-23T04 has 1 late part file(s)",
		"2 dead letter(s) missing_field in 2 hour(s), not redriven",
		"writer " + statustest.StaleWriter + " is stale",
	} {
		if !strings.Contains(joined, w) {
			t.Errorf("attention lacks %q:\n%s", w, joined)
		}
	}
	if strings.Contains(joined, "is stuck") {
		t.Errorf("nothing is stuck yet:\n%s", joined)
	}
}

// The exporter's gauges: bounded labels (never an hour), values of the
// report.
func TestStatusExporter(t *testing.T) {
	_, b := fixture(t)
	r := build(t, b, Options{StuckAfter: 10 * time.Minute})
	e := NewExporter()
	reg := prometheus.NewRegistry()
	reg.MustRegister(e)
	e.Update(r, time.Second)
	e.Failed()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				if strings.Contains(l.GetValue(), "2026-") {
					t.Errorf("%s has an hour in label %s", mf.GetName(), l.GetName())
				}
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			got[mf.GetName()+"{"+strings.Join(labels, ",")+"}"] = v
		}
	}
	for k, want := range map[string]float64{
		MetricHoursStuck + "{type=PlaybackEvent,version=1}":                           1,
		MetricHours + "{state=supplemented,type=PlaybackEvent,version=1}":             1,
		MetricHours + "{state=published,type=AccountUpdate,version=1}":                1,
		MetricLatePending + "{type=PlaybackEvent,version=1}":                          2, // 04 published, 05 not
		MetricSupplements + "{type=PlaybackEvent,version=1}":                          1,
		MetricPublishedRecords + "{type=PlaybackEvent,version=1}":                     12,
		MetricDeadLetters + "{reason=missing_field,type=PlaybackEvent,version=1}":     2,
		MetricDeadLettersLeft + "{reason=missing_field,type=PlaybackEvent,version=1}": 1,
		MetricDeadLetters + "{reason=malformed_json,type=(unknown),version=0}":        1,
		MetricHeartbeatAge + "{kind=stream}":                                          120,
		MetricWriters + "{kind=stream,liveness=stale}":                                1,
		MetricUpdateErrors + "{}":                                                     1,
		MetricOldestStuckSecond + "{type=PlaybackEvent,version=1}":                    18 * 60,
	} {
		if got[k] != want {
			t.Errorf("%s = %v, want %v", k, got[k], want)
		}
	}
}
