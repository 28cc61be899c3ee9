package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/dataset"
	"github.com/lockstream/lockstream/integration/invariants"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/pipelines"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/transforms"
)

// writeReplayFile writes msgs as a replay file and returns its path.
func writeReplayFile(t *testing.T, msgs []record.Message) string {
	t.Helper()
	var lines []byte
	for _, m := range msgs {
		l, err := m.MarshalLine()
		if err != nil {
			t.Fatal(err)
		}
		lines = append(append(lines, l...), '\n')
	}
	p := filepath.Join(t.TempDir(), "in.ndjson")
	if err := os.WriteFile(p, lines, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func boundaryEvent(msgID, eventID string, pub time.Time) record.Message {
	return record.Message{ID: msgID, PublishTime: pub,
		Attributes: map[string]string{record.AttrEventType: "PlaybackEvent", record.AttrSchemaVersion: "1"},
		Data: []byte(fmt.Sprintf(`{"event_id":%q,"user_id":"pii-boundary-user","timestamp":%d,"track_id":"t","ms_played":5,"country":"SE","ip_address":"pii-ip-%s","device_id":"pii-dev-%s"}`,
			eventID, pub.Add(-time.Second).UnixMilli(), eventID, eventID))}
}

// TestScenario04_HourBoundary: events published in the last and the first
// millisecond of an hour, a retried publish that crosses the boundary, and
// events that arrive after their hour's _COMPLETE: each lands in exactly
// one hour's data — its main part, or (a late event of a published hour)
// the hour's late supplement, deduplicated against what the hour and its
// neighbours already published — and a re-run publishes nothing more.
func TestScenario04_HourBoundary(t *testing.T) {
	ctx := context.Background()
	h6 := time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC)
	h7, h8 := h6.Add(time.Hour), h6.Add(2*time.Hour)
	first := []record.Message{
		boundaryEvent("m-last", "ev-last", h7.Add(-time.Millisecond)),  // 06:59:59.999 → hour 06
		boundaryEvent("m-first", "ev-first", h7),                       // 07:00:00.000 → hour 07
		boundaryEvent("m-retry-1", "ev-retry", h7.Add(-2*time.Second)), // published at 06:59:58…
		boundaryEvent("m-retry-2", "ev-retry", h7.Add(time.Second)),    // …retried at 07:00:01 with a new message id
		boundaryEvent("m-mid6", "ev-mid6", h6.Add(30*time.Minute)),
		boundaryEvent("m-mid7", "ev-mid7", h7.Add(30*time.Minute)),
		boundaryEvent("m-mid8", "ev-mid8", h8.Add(10*time.Minute)),
	}
	root := t.TempDir()
	keys := transforms.RegisterKeys("scenario04", keyclient.NewFake())
	res1, err := pipelines.Ingest(ctx, pipelines.IngestConfig{Inputs: []string{writeReplayFile(t, first)}, Out: root, KeysURL: keys})
	if err != nil {
		t.Fatal(err)
	}
	b, err := blob.Open(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	// The replay run finished: it vouches for the hours it wrote.
	for _, h := range []time.Time{h6, h7, h8} {
		if ok, _ := b.Exists(ctx, layout.CompleteName("PlaybackEvent", 1, h)); !ok {
			t.Fatalf("no _COMPLETE for %s after the replay that wrote it finished", layout.FormatHour(h))
		}
	}
	for _, h := range []time.Time{h6, h7} {
		if _, err := pipelines.Hourly(ctx, pipelines.HourlyConfig{Root: root, Type: "PlaybackEvent", Version: 1, Hour: h}); err != nil {
			t.Fatal(err)
		}
	}
	// Later: events of the complete hours arrive (06 and 07 are published,
	// 08 is not yet), one of them a retry of an event 06 published.
	late := []record.Message{
		boundaryEvent("m-late6", "ev-late6", h6.Add(45*time.Minute)),
		boundaryEvent("m-late7", "ev-late7", h7.Add(59*time.Minute)),
		boundaryEvent("m-late8", "ev-late8", h8.Add(20*time.Minute)),
		boundaryEvent("m-mid6-again", "ev-mid6", h6.Add(50*time.Minute)),
	}
	res2, err := pipelines.Ingest(ctx, pipelines.IngestConfig{Inputs: []string{writeReplayFile(t, late)}, Out: root, KeysURL: keys})
	if err != nil {
		t.Fatal(err)
	}
	if tot := res2.Totals(); tot.Late != 4 || tot.Written != 0 {
		t.Fatalf("late run: %+v, want all 4 counted late", tot)
	}
	// Every hour, in order: 06 and 07 get a supplement, 08 its main part
	// (with its late event); then a re-run publishes nothing.
	var states []string
	for round := 0; round < 2; round++ {
		for _, h := range []time.Time{h6, h7, h8} {
			res, err := pipelines.Hourly(ctx, pipelines.HourlyConfig{Root: root, Type: "PlaybackEvent", Version: 1, Hour: h})
			if err != nil {
				t.Fatal(err)
			}
			states = append(states, layout.FormatHour(h)+" "+res.State)
		}
	}
	t.Logf("hourly: %v", states)
	where := map[string]string{}
	for _, h := range []time.Time{h6, h7, h8} {
		hr := layout.Hour{Type: "PlaybackEvent", Version: 1, Hour: h}
		d, err := dataset.ReadPublished(ctx, b, hr)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range d.Files() {
			err := dataset.ReadRecords(ctx, b, "PlaybackEvent", 1, []string{f.Name}, func(cols []record.Column, lay *record.Layout, _ []byte) {
				where[string(cols[lay.Dedupe].Bytes)] += layout.FormatHour(h) + " " + f.Part + ";"
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		want := map[time.Time]int{h6: 1, h7: 1, h8: 0}[h]
		if d.Supplements() != want {
			t.Errorf("%s has %d supplements after two rounds, want %d", layout.FormatHour(h), d.Supplements(), want)
		}
	}
	want := map[string]string{
		"ev-last": "2026-11-23T06 main;", "ev-first": "2026-11-23T07 main;", "ev-retry": "2026-11-23T06 main;",
		"ev-mid6": "2026-11-23T06 main;", "ev-mid7": "2026-11-23T07 main;",
		"ev-late6": "2026-11-23T06 late-0001;", "ev-late7": "2026-11-23T07 late-0001;",
		"ev-mid8": "2026-11-23T08 main;", "ev-late8": "2026-11-23T08 main;",
	}
	for id, w := range want {
		if where[id] != w {
			t.Errorf("%s is in %q, want %q", id, where[id], w)
		}
	}
	d6, _ := dataset.ReadPublished(ctx, b, layout.Hour{Type: "PlaybackEvent", Version: 1, Hour: h6})
	if s := d6.Parts[len(d6.Parts)-1].Manifest.Input; s.LateRecords != 2 || s.LookbackDropped != 1 || s.Published != 1 {
		t.Errorf("hour 06's supplement accounting %+v, want 2 late read, the retry of ev-mid6 dropped as already published, 1 published", s)
	}
	m7, _ := pipelines.ReadManifest(ctx, b, layout.Hour{Type: "PlaybackEvent", Version: 1, Hour: h7})
	if m7.Input.LookbackDropped != 1 {
		t.Errorf("hour 07 dropped %d retries already published in 06, want 1", m7.Input.LookbackDropped)
	}
	m8, _ := pipelines.ReadManifest(ctx, b, layout.Hour{Type: "PlaybackEvent", Version: 1, Hour: h8})
	if m8.Input.RawRecords != 1 || m8.Input.LateRecords != 1 || m8.Input.Published != 2 {
		t.Errorf("hour 08 accounting %+v, want 1 raw + 1 late = 2 published", m8.Input)
	}
	s := invariants.Require(t, ctx, invariants.Input{Scenario: "04-hour-boundary", Root: root, Sent: append(first, late...),
		Canaries: []string{"pii-boundary-user", "pii-ip-ev-last", "pii-dev-ev-late6"}, Ingest: append(res1.Rows, res2.Rows...),
		WantDead: map[string]int64{}, KeysURL: keys, Readable: []string{"pii-ip-ev-last", "pii-ip-ev-first", "pii-ip-ev-late6"}})
	if s.Published != 9 || s.Late != 0 {
		t.Fatalf("checker counted %d published and %d waiting late, want 9 and 0", s.Published, s.Late)
	}
}
