package pipelines

import (
	"bytes"
	"context"
	"fmt"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/dataset"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/synth"
)

// ingestSynth ingests synthetic traffic into root (a bounded replay run,
// which completes the hours it wrote), with every event id prefixed by
// prefix after "ev-" (so that two batches of traffic have distinct ids).
func ingestSynth(t *testing.T, root string, cfg synth.Config, prefix string) *synth.Traffic {
	t.Helper()
	tr := synth.Generate(cfg)
	if prefix != "" {
		for i := range tr.Messages {
			tr.Messages[i].Data = bytes.ReplaceAll(tr.Messages[i].Data, []byte(`"event_id":"ev-`), []byte(`"event_id":"ev-`+prefix))
		}
	}
	in := filepath.Join(t.TempDir(), "in.ndjson")
	writeReplay(t, in, tr.Messages)
	if _, err := Ingest(context.Background(), IngestConfig{Inputs: []string{in}, Out: root, KeysURL: registerKeys(keyclient.NewFake())}); err != nil {
		t.Fatal(err)
	}
	return tr
}

// copyParts copies the part files of src's hour from (raw and late) into
// dst's dir (a raw or late directory of some hour), named
// part-<tag>-<i>.avro, and returns the new names.
func copyParts(t *testing.T, src, dst blob.Bucket, from layout.Hour, dir, tag string) []string {
	t.Helper()
	ctx := context.Background()
	parts, err := dataset.InputParts(ctx, src, from)
	if err != nil || len(parts) == 0 {
		t.Fatalf("parts of %s: %v %v", from, parts, err)
	}
	var out []string
	for i, p := range parts {
		data, err := blob.ReadAll(ctx, src, p)
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("%spart-%s-%d.avro", dir, tag, i)
		if err := blob.WriteAll(ctx, dst, name, data); err != nil {
			t.Fatal(err)
		}
		out = append(out, name)
	}
	return out
}

// fileIDs returns the distinct event ids of part or dataset files, and the
// number of records.
func fileIDs(t *testing.T, b blob.Bucket, typ string, files []string) (map[string]bool, int64) {
	t.Helper()
	ids := map[string]bool{}
	var n int64
	err := dataset.ReadRecords(context.Background(), b, typ, 1, files, func(cols []record.Column, lay *record.Layout, _ []byte) {
		ids[string(cols[lay.Dedupe].Bytes)] = true
		n++
	})
	if err != nil {
		t.Fatal(err)
	}
	return ids, n
}

// hourIDs counts the event ids of every published part of h.
func hourIDs(t *testing.T, b blob.Bucket, h layout.Hour) map[string]int {
	t.Helper()
	ids := map[string]int{}
	if err := ReadDatasetEventIDs(context.Background(), b, h, func(id string) { ids[id]++ }); err != nil {
		t.Fatal(err)
	}
	return ids
}

// TestHourlyPublishesLateDataAsSupplements: part files that reach a
// published hour later are published as late-0001, deduplicated against
// the hour and its neighbours on both sides (dropped ids counted as
// lookback); a re-run adds nothing; a second batch is late-0002, deduped
// against late-0001 too; ReadDatasetEventIDs and VerifyHour cover every
// part. A supplement shares its Beam job with another type's main part.
func TestHourlyPublishesLateDataAsSupplements(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	start := time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC)
	tr := ingestSynth(t, root, synth.Config{Start: start, Events: 800, Users: 30, Hours: 3, Seed: 11}, "")
	b, err := blob.Open(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	pe := func(hr time.Time) layout.Hour { return layout.Hour{Type: "PlaybackEvent", Version: 1, Hour: hr} }
	au := func(hr time.Time) layout.Hour { return layout.Hour{Type: "AccountUpdate", Version: 1, Hour: hr} }
	h6, h7, h8 := start, start.Add(time.Hour), start.Add(2*time.Hour)
	// Every hour but AccountUpdate 07, through the completion rule (no Force).
	for _, h := range []layout.Hour{pe(h6), au(h6), pe(h7), pe(h8), au(h8)} {
		res, err := Hourly(ctx, HourlyConfig{Root: root, Type: h.Type, Version: 1, Hour: h.Hour})
		if err != nil || res.State != StatePublished || res.Part != layout.MainPart {
			t.Fatalf("%s: %+v %v", h, res, err)
		}
	}
	published := map[string]bool{} // PlaybackEvent ids of 06-08
	for _, hr := range []time.Time{h6, h7, h8} {
		for id := range hourIDs(t, b, pe(hr)) {
			published[id] = true
		}
	}

	// Late data for PlaybackEvent 07: new events (another batch of traffic,
	// ids "ev-x…"), plus copies of part files of 06, 07 and 08, whose ids
	// are all published already.
	scratch, err := blob.Open(ctx, filepath.Join(dir, "scratch1"))
	if err != nil {
		t.Fatal(err)
	}
	ingestSynth(t, scratch.Root(), synth.Config{Start: h7, Events: 200, Users: 10, Hours: 1, Seed: 12}, "x")
	late7 := layout.LateDir("PlaybackEvent", 1, h7)
	var late1 []string
	late1 = append(late1, copyParts(t, b, b, pe(h7), late7, "copy07")...)
	late1 = append(late1, copyParts(t, b, b, pe(h6), late7, "copy06")...)
	late1 = append(late1, copyParts(t, b, b, pe(h8), late7, "copy08")...)
	late1 = append(late1, copyParts(t, scratch, b, pe(h7), late7, "x")...)
	slices.Sort(late1)
	lateIDs, lateRecords := fileIDs(t, b, "PlaybackEvent", late1)
	var wantNew, wantBack int
	for id := range lateIDs {
		if published[id] {
			wantBack++
		} else {
			wantNew++
		}
	}
	if wantNew == 0 || wantBack == 0 || wantNew+wantBack != len(lateIDs) {
		t.Fatalf("bad setup: %d new ids, %d published ones", wantNew, wantBack)
	}

	// One job: PlaybackEvent 07's supplement and AccountUpdate 07's main
	// part (deduplicated against AccountUpdate 06 and 08).
	outs := HourlyMany(ctx, []HourlyConfig{{Root: root, Type: "PlaybackEvent", Version: 1, Hour: h7}, {Root: root, Type: "AccountUpdate", Version: 1, Hour: h7}})
	for _, o := range outs {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
	}
	sup, main := outs[0].Result, outs[1].Result
	if main.State != StatePublished || main.Part != layout.MainPart {
		t.Fatalf("AccountUpdate 07: %+v", main)
	}
	if got := main.Manifest.Lineage.InputHours; !slices.Equal(got, []string{"2026-11-23T07", "2026-11-23T06", "2026-11-23T08"}) {
		t.Fatalf("AccountUpdate 07 was deduplicated against %v", got)
	}
	m := sup.Manifest
	if sup.State != StatePublishedSupplement || sup.Part != "late-0001" || m.Part != "late-0001" || m.FormatVersion != layout.ManifestFormatVersion {
		t.Fatalf("PlaybackEvent 07: %+v", sup)
	}
	if m.Records != int64(wantNew) || m.Input.LookbackDropped != int64(wantBack) || m.Input.DuplicatesDropped != lateRecords-int64(len(lateIDs)) ||
		m.Input.LateRecords != lateRecords || m.Input.RawRecords != 0 || m.Input.RawFiles != len(late1) {
		t.Fatalf("late-0001: %d records, input %+v; want %d new, %d lookback, %d late records", m.Records, m.Input, wantNew, wantBack, lateRecords)
	}
	if !slices.Equal(m.Parts, late1) {
		t.Fatalf("late-0001 consumed %v, want %v", m.Parts, late1)
	}
	if got := m.Lineage.InputHours; !slices.Equal(got, []string{"2026-11-23T07", "2026-11-23T06", "2026-11-23T08"}) {
		t.Fatalf("late-0001 was deduplicated against %v", got)
	}
	for _, f := range m.Files {
		if ok, _ := b.Exists(ctx, layout.PartDir("PlaybackEvent", 1, h7, "late-0001")+f.Name); !ok {
			t.Fatalf("%s is not in late-0001/", f.Name)
		}
	}
	if err := VerifyHour(ctx, b, pe(h7)); err != nil {
		t.Fatal(err)
	}

	// A re-run adds nothing.
	res, err := Hourly(ctx, HourlyConfig{Root: root, Type: "PlaybackEvent", Version: 1, Hour: h7})
	if err != nil || res.State != StateAlreadyPublished {
		t.Fatalf("re-run: %+v %v", res, err)
	}
	if d, err := dataset.Read(ctx, b, pe(h7)); err != nil || len(d.Parts) != 2 {
		t.Fatalf("after the re-run: %v %v", d, err)
	}

	// A second batch: new ids "ev-y…", and a copy of a late-0001 input
	// whose ids are in late-0001 (or published before) now.
	scratch2, err := blob.Open(ctx, filepath.Join(dir, "scratch2"))
	if err != nil {
		t.Fatal(err)
	}
	ingestSynth(t, scratch2.Root(), synth.Config{Start: h7, Events: 120, Users: 10, Hours: 1, Seed: 13}, "y")
	late2 := copyParts(t, scratch2, b, pe(h7), late7, "y")
	data, err := blob.ReadAll(ctx, b, late1[0])
	if err != nil {
		t.Fatal(err)
	}
	again := late7 + "part-again-0.avro"
	if err := blob.WriteAll(ctx, b, again, data); err != nil {
		t.Fatal(err)
	}
	if p, err := PendingSupplements(ctx, b, h6, h8.Add(time.Hour)); err != nil || len(p) != 1 || p[0] != pe(h7) {
		t.Fatalf("pending supplements: %v %v", p, err)
	}
	newIDs, _ := fileIDs(t, b, "PlaybackEvent", late2)
	againIDs, _ := fileIDs(t, b, "PlaybackEvent", []string{again})
	res, err = Hourly(ctx, HourlyConfig{Root: root, Type: "PlaybackEvent", Version: 1, Hour: h7})
	if err != nil || res.State != StatePublishedSupplement || res.Part != "late-0002" {
		t.Fatalf("second batch: %+v %v", res, err)
	}
	if res.Manifest.Records != int64(len(newIDs)) || res.Manifest.Input.LookbackDropped != int64(len(againIDs)) {
		t.Fatalf("late-0002: %d records, input %+v; want %d, lookback %d", res.Manifest.Records, res.Manifest.Input, len(newIDs), len(againIDs))
	}

	// Every part: each id once in the hour, and across the neighbours.
	ids := hourIDs(t, b, pe(h7))
	var fromMain, fromLate1, fromLate2 int
	for id, n := range ids {
		if n != 1 {
			t.Fatalf("%s appears %d times in PlaybackEvent 07", id, n)
		}
		switch {
		case strings.HasPrefix(id, "ev-x"):
			fromLate1++
		case strings.HasPrefix(id, "ev-y"):
			fromLate2++
		default:
			fromMain++
		}
	}
	if fromLate1 != wantNew || fromLate2 != len(newIDs) || fromMain == 0 {
		t.Fatalf("PlaybackEvent 07 has %d ids of the first batch (want %d), %d of the second (want %d)", fromLate1, wantNew, fromLate2, len(newIDs))
	}
	for _, hr := range []time.Time{h6, h8} {
		for id := range hourIDs(t, b, pe(hr)) {
			if ids[id] > 0 {
				t.Fatalf("%s is in PlaybackEvent 07 and %s", id, layout.FormatHour(hr))
			}
		}
	}
	// AccountUpdate: every event once across the three hours.
	auIDs := map[string]int{}
	for _, hr := range []time.Time{h6, h7, h8} {
		for id, n := range hourIDs(t, b, au(hr)) {
			auIDs[id] += n
		}
	}
	sent := map[string]bool{}
	for _, msg := range tr.Messages {
		if id := eventID(msg); id != "" && msg.EventType() == "AccountUpdate" {
			sent[id] = true
		}
	}
	for id := range sent {
		if auIDs[id] != 1 {
			t.Fatalf("AccountUpdate %s published %d times", id, auIDs[id])
		}
	}
	if len(auIDs) != len(sent) {
		t.Fatalf("AccountUpdate: %d ids published, %d sent", len(auIDs), len(sent))
	}
	if d, err := dataset.Read(ctx, b, pe(h7)); err != nil || len(d.Parts) != 3 || path.Base(strings.TrimSuffix(d.Parts[2].Dir, "/")) != "late-0002" {
		t.Fatalf("PlaybackEvent 07 parts: %v %v", d, err)
	}
	if err := VerifyHour(ctx, b, pe(h7)); err != nil {
		t.Fatal(err)
	}
	// Nothing pending anywhere, and no staging or lease left.
	if p, err := PendingSupplements(ctx, b, h6, h8.Add(time.Hour)); err != nil || len(p) != 0 {
		t.Fatalf("pending after publishing: %v %v", p, err)
	}
	for _, prefix := range []string{layout.TmpArea + "/", layout.LeasesArea + "/"} {
		if names, _ := b.List(ctx, prefix); len(names) != 0 {
			t.Fatalf("left behind: %v", names)
		}
	}
}
