// Package statustest builds a root whose status is known, by writing its
// objects directly (no pipeline), for the tests of package status and of
// `lockstream status`.
package statustest

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/completion"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/record"
)

// Times of the root Build makes.
var (
	Now   = time.Date(2026, 11, 23, 7, 30, 0, 0, time.UTC)
	Since = time.Date(2026, 11, 23, 4, 0, 0, 0, time.UTC)
	H     = func(hh int) time.Time { return time.Date(2026, 11, 23, hh, 0, 0, 0, time.UTC) }
)

// Names in the root Build makes.
const (
	PE          = "PlaybackEvent"
	AU          = "AccountUpdate"
	LiveWriter  = "run-x/stream-000"
	StaleWriter = "run-dead/stream-000"
	Observer04  = "hourly run-h1"
	Observer05  = "run-old/stream-000"
	// LiveWatermark is the live writer's watermark: past 05 (plus its 2m
	// lateness), not past 06.
	LiveWatermark = "2026-11-23T06:41:00Z"
)

// Build writes, under b, as seen at Now with --since Since:
//
//   - PlaybackEvent v1 04: raw part-a, part-b; _COMPLETE by Observer04;
//     published: main part (10 records, consumed part-a, part-b) and
//     late-0001 (2 records, consumed late part-l1); late part-l2 pending;
//     BigQuery markers proj.events (main alone, and parts-2: current) and
//     proj.staging (main alone: 1/2 parts).
//   - PlaybackEvent v1 05: raw part-c, part-d and late part-l3;
//     _COMPLETE by Observer05; not published; dead letters:
//     missing_field 2 (one of them redriven: a redrive ledger entry),
//     unknown_field 1.
//   - PlaybackEvent v1 06: raw part-e; no marker: the live writer (at
//     LiveWatermark) holds it.
//   - AccountUpdate v1 04: raw part-g; _COMPLETE by Observer04;
//     published: main part only (4 records).
//   - AccountUpdate v1 05: raw part-f, no marker, but the live writer
//     passed it (so did the stale writer, before it stopped): complete,
//     not marked; dead letters: missing_field 1.
//   - (unknown) 05: dead letters unknown_event_type 1 (type "Nope") and
//     malformed_json 1 (no attributes).
//   - Outside the range: PlaybackEvent v1 02 raw part-z and dead letters of
//     01 (neither may show).
//   - Writers: LiveWriter (stream, running, heartbeat 2m ago, stale after
//     5m), StaleWriter (stream, running, heartbeat 10m ago, stale after
//     2m), and run-ancient/replay (finished two days before: not shown).
func Build(t testing.TB, b blob.Bucket) {
	t.Helper()
	ctx := context.Background()
	put := func(name string, data []byte) {
		t.Helper()
		if err := blob.WriteAll(ctx, b, name, data); err != nil {
			t.Fatal(err)
		}
	}
	pe := func(hh int) layout.Hour { return layout.Hour{Type: PE, Version: 1, Hour: H(hh)} }
	raw := func(h layout.Hour, ids ...string) {
		for _, id := range ids {
			put(layout.RawDir(h.Type, h.Version, h.Hour)+"part-"+id+".avro", []byte("x"))
		}
	}
	late := func(h layout.Hour, ids ...string) {
		for _, id := range ids {
			put(layout.LateDir(h.Type, h.Version, h.Hour)+"part-"+id+".avro", []byte("x"))
		}
	}
	mark := func(h layout.Hour, observer string, at time.Time) {
		t.Helper()
		d := completion.Decision{Hour: h, Complete: true, Vouchers: []string{observer}}
		if err := completion.WriteMarker(ctx, b, h, d, observer, at, false); err != nil {
			t.Fatal(err)
		}
	}
	publish := func(h layout.Hour, part string, records int64, parts ...string) {
		t.Helper()
		// Each part read one duplicate more than it published.
		m := layout.ManifestDoc{FormatVersion: layout.ManifestFormatVersion, EventType: h.Type, SchemaVersion: h.Version,
			Hour: layout.FormatHour(h.Hour), Part: part, Records: records, Parts: parts, RunID: "run-h1", PublishedAt: Now.Add(-time.Hour),
			Files:   []layout.ManifestFile{{Name: layout.ShardFile(0, 1), Records: records}},
			Input:   layout.Accounting{RawFiles: len(parts), RawRecords: records + 1, DuplicatesDropped: 1, Published: records},
			Lineage: layout.Lineage{InputHours: []string{layout.FormatHour(h.Hour), layout.FormatHour(h.Hour.Add(-time.Hour))}, CodeVersion: "test"}}
		data, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		dir := layout.PartDir(h.Type, h.Version, h.Hour, part)
		put(dir+layout.ShardFile(0, 1), []byte("avro"))
		put(dir+layout.Manifest, data)
		put(dir+layout.Success, nil)
	}
	dead := func(reason string, hour time.Time, file string, lines ...record.Rejection) {
		t.Helper()
		var data []byte
		for _, l := range lines {
			l.Reason = reason
			j, err := json.Marshal(l)
			if err != nil {
				t.Fatal(err)
			}
			data = append(append(data, j...), '\n')
		}
		put(layout.DeadLetterDir(reason, hour)+file, data)
	}
	rej := func(typ, version string) record.Rejection {
		return record.Rejection{MessageID: "m", PublishTime: Now, Attributes: map[string]string{record.AttrEventType: typ, record.AttrSchemaVersion: version}}
	}

	h4 := pe(4)
	raw(h4, "a", "b")
	late(h4, "l1", "l2")
	mark(h4, Observer04, H(5).Add(3*time.Minute))
	rd := layout.RawDir(PE, 1, H(4))
	publish(h4, layout.MainPart, 10, rd+"part-a.avro", rd+"part-b.avro")
	publish(h4, layout.SupplementPart(1), 2, layout.LateDir(PE, 1, H(4))+"part-l1.avro")
	dd := layout.DatasetDir(PE, 1, H(4))
	put(dd+"_BQ_LOADED.proj.events.json", []byte("{}"))
	put(dd+"_BQ_LOADED.proj.events.parts-2.json", []byte("{}"))
	put(dd+"_BQ_LOADED.proj.staging.json", []byte("{}"))

	h5 := pe(5)
	raw(h5, "c", "d")
	late(h5, "l3")
	mark(h5, Observer05, H(6).Add(2*time.Minute))
	dead("missing_field", H(5), "b1.ndjson", rej(PE, "1"), rej(PE, "1"), rej(AU, "1"))
	dead("unknown_field", H(5), "b2.ndjson", rej(PE, "1"))
	dead("unknown_event_type", H(5), "b3.ndjson", rej("Nope", "1"))
	dead("malformed_json", H(5), "b4.ndjson", record.Rejection{MessageID: "m2"})

	ledger, err := json.Marshal(layout.RedriveDoc{DeadLetter: layout.DeadLetterDir("missing_field", H(5)) + "b1.ndjson", Reason: "missing_field",
		Attempt: 1, RunID: "redrive-1", At: Now.Add(-10 * time.Minute),
		Messages: []layout.RedriveMessage{{ID: "m", EventType: PE, SchemaVersion: "1", Type: PE, Version: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	put(layout.RedriveLedger(layout.DeadLetterDir("missing_field", H(5))+"b1.ndjson", 1), ledger)

	au4 := layout.Hour{Type: AU, Version: 1, Hour: H(4)}
	raw(au4, "g")
	mark(au4, Observer04, H(5).Add(3*time.Minute))
	publish(au4, layout.MainPart, 4, layout.RawDir(AU, 1, H(4))+"part-g.avro")

	raw(pe(6), "e")
	raw(layout.Hour{Type: AU, Version: 1, Hour: H(5)}, "f")

	raw(pe(2), "z")
	dead("missing_field", H(1), "b0.ndjson", rej(PE, "1"))

	wm, err := time.Parse(time.RFC3339, LiveWatermark)
	if err != nil {
		t.Fatal(err)
	}
	stale := wm.Add(-20 * time.Minute)
	for _, rec := range []*completion.Record{
		{RunID: "run-x", Part: "stream-000", Kind: completion.KindStream, Source: "projects/p/subscriptions/s", State: completion.StateRunning,
			Lateness: completion.Duration(2 * time.Minute), StaleAfter: completion.Duration(5 * time.Minute),
			StartedAt: H(4), HeartbeatAt: Now.Add(-2 * time.Minute), Watermark: &wm},
		{RunID: "run-dead", Part: "stream-000", Kind: completion.KindStream, Source: "projects/p/subscriptions/s", State: completion.StateRunning,
			Lateness: completion.Duration(2 * time.Minute), StaleAfter: completion.Duration(2 * time.Minute),
			StartedAt: H(4), HeartbeatAt: Now.Add(-10 * time.Minute), Watermark: &stale},
		{RunID: "run-ancient", Part: "replay", Kind: completion.KindBounded, Source: "replay", State: completion.StateFinished,
			StartedAt: H(4).Add(-48 * time.Hour), HeartbeatAt: H(5).Add(-48 * time.Hour)},
	} {
		if err := completion.Write(ctx, b, rec); err != nil {
			t.Fatal(err)
		}
	}
	var marks completion.HourMarks
	for _, h := range []layout.Hour{pe(6), {Type: AU, Version: 1, Hour: H(5)}} {
		if err := marks.Mark(ctx, b, "run-x", h); err != nil {
			t.Fatal(err)
		}
	}
}
