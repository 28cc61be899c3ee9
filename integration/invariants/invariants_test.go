package invariants

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/pipelines"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/schemas"
	"github.com/lockstream/lockstream/synth"
	"github.com/lockstream/lockstream/transforms"
)

func TestMain(m *testing.M) { ptest.MainWithDefault(m, "prism") }

// ingest runs a replay ingest of tr into a new root and returns it.
func ingest(t *testing.T, tr *synth.Traffic, keys string) (string, *pipelines.IngestResult) {
	t.Helper()
	dir := t.TempDir()
	var lines []byte
	for _, m := range tr.Messages {
		l, err := m.MarshalLine()
		if err != nil {
			t.Fatal(err)
		}
		lines = append(append(lines, l...), '\n')
	}
	in := filepath.Join(dir, "in.ndjson")
	if err := os.WriteFile(in, lines, 0o644); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root")
	res, err := pipelines.Ingest(context.Background(), pipelines.IngestConfig{Inputs: []string{in}, Out: root, KeysURL: keys})
	if err != nil {
		t.Fatal(err)
	}
	return root, res
}

// TestCheckerPassesAndCatches proves the checker is not vacuous: a clean run
// passes, and each kind of damage is reported as its invariant.
func TestCheckerPassesAndCatches(t *testing.T) {
	ctx := context.Background()
	tr := synth.Generate(synth.Config{Events: 600, Users: 20, Hours: 2, DuplicateRate: 0.3, Seed: 5})
	keys := transforms.RegisterKeys("invariants-test", keyclient.NewFake())
	root, res := ingest(t, tr, keys)
	if _, err := PublishAll(ctx, pipelines.HourlyConfig{Root: root}); err != nil {
		t.Fatal(err)
	}
	ips := []string{synth.IP(0), synth.IP(1), synth.IP(2)} // PlaybackEvent IP addresses: PII view shows
	in := Input{Scenario: "clean", Root: root, Sent: tr.Messages, Canaries: tr.Canaries, Ingest: res.Rows,
		KeysURL: keys, Readable: ips}
	s, err := Check(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Violations) != 0 || s.Valid != tr.Unique || s.Invalid != tr.Malformed || s.Published == 0 {
		t.Fatalf("clean run: %s\n%s", s, strings.Join(s.Violations, "\n"))
	}
	t.Log(s)

	expect := func(name, invariant string, in Input) {
		t.Helper()
		s, err := Check(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range s.Violations {
			if strings.Contains(v, "scenario "+name+":") && strings.Contains(v, invariant) {
				return
			}
		}
		t.Fatalf("%s: want a %q violation, got %s %q", name, invariant, s, s.Violations)
	}
	leak := in
	leak.Scenario, leak.Logs = "leak", []byte("log line with "+tr.Canaries[1])
	expect("leak", "no plaintext", leak)

	// Plaintext inside a deflated Avro block is not in the stored bytes;
	// the checker decompresses container files before it scans them.
	var ocf bytes.Buffer
	w, err := record.NewOCFWriter(&ocf, []byte(`"string"`), record.SyncMarker("leak"), record.CodecDeflate)
	if err != nil {
		t.Fatal(err)
	}
	for range 50 {
		if err := w.Append([]byte("a record written in plaintext: " + tr.Canaries[1])); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(ocf.Bytes(), []byte(tr.Canaries[1])) {
		t.Fatal("test setup: the canary is visible in the compressed bytes")
	}
	leakDir := t.TempDir()
	if err := os.CopyFS(leakDir, os.DirFS(root)); err != nil {
		t.Fatal(err)
	}
	leakFile := filepath.Join(leakDir, "raw", "PlaybackEvent", "v1", "2020-01-01", "00", "part-leak.avro")
	if err := os.MkdirAll(filepath.Dir(leakFile), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(leakFile, ocf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	compressed := in
	compressed.Scenario, compressed.Root, compressed.KeysURL = "compressed-leak", leakDir, ""
	expect("compressed-leak", "no plaintext", compressed)

	lost := in
	extra := tr.Messages[0]
	extra.ID, extra.Data = "never-delivered", []byte(strings.Replace(string(extra.Data), `"event_id":"`, `"event_id":"x`, 1))
	lost.Scenario, lost.Sent = "lost", append(append([]record.Message{}, tr.Messages...), extra)
	expect("lost", "nothing lost", lost)

	dead := in
	dead.Scenario, dead.WantDead = "dead", map[string]int64{"malformed_json": 1}
	expect("dead", "dead letters by reason", dead)

	shred := in
	shred.Scenario, shred.Unreadable = "shred", ips[:1]
	expect("shred", "shred means unreadable", shred)

	// Without the lookback, a retry that crossed an hour is published twice.
	root2, _ := ingest(t, tr, keys)
	if _, err := PublishAll(ctx, pipelines.HourlyConfig{Root: root2, Lookback: -1}); err != nil {
		t.Fatal(err)
	}
	dups := in
	dups.Scenario, dups.Root, dups.KeysURL = "dups", root2, ""
	expect("dups", "no duplicates", dups)

	// A manifest whose lineage lost its code version and schema fingerprint.
	manifests, _ := filepath.Glob(filepath.Join(root2, "datasets", "*", "v1", "*", "*", "_MANIFEST.json"))
	if len(manifests) == 0 {
		t.Fatal("no manifest to tamper with")
	}
	data, err := os.ReadFile(manifests[0])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	m["schema_fingerprint"] = "0000"
	m["lineage"].(map[string]any)["code_version"] = ""
	data, _ = json.Marshal(m)
	if err := os.WriteFile(manifests[0], data, 0o644); err != nil {
		t.Fatal(err)
	}
	lineage := dups
	lineage.Scenario = "lineage"
	expect("lineage", "lineage", lineage)
}

// supplementRoot builds, without ingest or hourly, a root whose hour 06 has
// a main part, a late supplement and a late-pending part file, and whose
// hour 07 is published after it:
//
//	raw/…/06/part-r1.avro      e1 e2 e3 e4      → main part of 06
//	raw/…/07/part-r1.avro      e5               → main part of 07
//	late/…/06/part-l1.avro     e6 e7 e4(copy)   → 06/late-0001 (e4 dropped: in the main part)
//	late/…/06/part-l2.avro     e8               → no manifest lists it: late pending
//
// variant damages it in one way (see TestCheckerSupplements).
type supplementRoot struct {
	root string
	sent []record.Message
	ip   map[string]string // event id → its IP address (PII)
	keys string            // key service URL of the records
}

func buildSupplementRoot(t *testing.T, variant string) *supplementRoot {
	t.Helper()
	ctx := context.Background()
	reg, err := schemas.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	s, err := reg.Lookup("PlaybackEvent", 1)
	if err != nil {
		t.Fatal(err)
	}
	fake := keyclient.NewFake()
	a, err := record.NewAnonymizer(reg, fake, record.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h06 := time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC)
	h07 := h06.Add(time.Hour)
	out := &supplementRoot{root: t.TempDir(), ip: map[string]string{}, keys: transforms.RegisterKeys("invariants-supplement-"+variant, fake)}
	b, err := blob.OpenDir(out.root)
	if err != nil {
		t.Fatal(err)
	}
	recs := map[string][]byte{}
	for i := 1; i <= 8; i++ {
		id := fmt.Sprintf("e%d", i)
		at := h06.Add(time.Duration(i) * time.Minute)
		if id == "e5" {
			at = h07.Add(time.Minute)
		}
		out.ip[id] = fmt.Sprintf("198.51.100.%d", 10+i)
		m := record.Message{ID: "m-" + id, PublishTime: at,
			Attributes: map[string]string{record.AttrEventType: "PlaybackEvent", record.AttrSchemaVersion: "1"},
			Data: []byte(fmt.Sprintf(`{"event_id":%q,"user_id":"user-%d","timestamp":%q,"track_id":"t","ms_played":1,"country":"SE","ip_address":%q,"device_id":"d"}`,
				id, i%3, at.Format(time.RFC3339), out.ip[id]))}
		if id == "e8" && variant == "lost" {
			out.sent = append(out.sent, m) // sent, but its late part file is missing
			continue
		}
		o, err := a.Anonymize(ctx, []record.Message{m})
		if err != nil || o[0].Reject != nil {
			t.Fatal(err, o[0].Reject)
		}
		recs[id] = o[0].Record
		out.sent = append(out.sent, m)
	}
	writeAvro := func(name string, ids ...string) layout.ManifestFile {
		t.Helper()
		var buf bytes.Buffer
		w, err := record.NewOCFWriter(&buf, s.Encrypted().JSON, record.SyncMarker(name), record.CodecSnappy)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			if err := w.Append(recs[id]); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if err := blob.WriteAll(ctx, b, name, buf.Bytes()); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(buf.Bytes())
		return layout.ManifestFile{Name: path.Base(name), Records: int64(len(ids)), Bytes: int64(buf.Len()), SHA256: hex.EncodeToString(sum[:])}
	}
	publish := func(h time.Time, part string, consumed []string, acc layout.Accounting, inputHours []string, ids ...string) {
		t.Helper()
		dir := layout.PartDir("PlaybackEvent", 1, h, part)
		f := writeAvro(dir+layout.ShardFile(0, 1), ids...)
		m := layout.ManifestDoc{FormatVersion: layout.ManifestFormatVersion, EventType: "PlaybackEvent", SchemaVersion: 1,
			Hour: layout.FormatHour(h), Part: part, SchemaFingerprint: s.Encrypted().Fingerprint, Records: f.Records,
			Files: []layout.ManifestFile{f}, Input: acc, Parts: consumed,
			Lineage: layout.Lineage{InputHours: inputHours, CodeVersion: "test", KeyScope: transforms.DefaultKeyScope},
			RunID:   "run-test", PublishedAt: h.Add(2 * time.Hour)}
		if variant == "format1" && part == layout.MainPart {
			m.FormatVersion, m.Part, m.Parts, m.RunID, m.PublishedAt = 1, "", nil, "", time.Time{}
		}
		data, _ := json.MarshalIndent(m, "", "  ")
		if err := blob.WriteAll(ctx, b, dir+layout.Manifest, data); err != nil {
			t.Fatal(err)
		}
		if err := blob.WriteAll(ctx, b, dir+layout.Success, nil); err != nil {
			t.Fatal(err)
		}
	}
	raw06 := layout.RawDir("PlaybackEvent", 1, h06) + "part-r1.avro"
	raw07 := layout.RawDir("PlaybackEvent", 1, h07) + "part-r1.avro"
	late1 := layout.LateDir("PlaybackEvent", 1, h06) + "part-l1.avro"
	late2 := layout.LateDir("PlaybackEvent", 1, h06) + "part-l2.avro"
	writeAvro(raw06, "e1", "e2", "e3", "e4")
	writeAvro(raw07, "e5")
	writeAvro(late1, "e6", "e7", "e4")
	if variant != "lost" {
		writeAvro(late2, "e8")
	}

	mainHours := []string{"2026-11-23T06"}
	if variant == "main-after" {
		mainHours = append(mainHours, "2026-11-23T07") // a main part deduplicated against a later hour
	}
	publish(h06, layout.MainPart, []string{raw06}, layout.Accounting{RawFiles: 1, RawRecords: 4, Published: 4}, mainHours, "e1", "e2", "e3", "e4")
	publish(h07, layout.MainPart, []string{raw07}, layout.Accounting{RawFiles: 1, RawRecords: 1, Published: 1}, []string{"2026-11-23T07", "2026-11-23T06"}, "e5")

	supIDs, supConsumed := []string{"e6", "e7"}, []string{late1}
	supAcc := layout.Accounting{RawFiles: 1, LateRecords: 3, Published: 2, LookbackDropped: 1}
	supHours := []string{"2026-11-23T06", "2026-11-23T07"} // a supplement may be deduplicated against a later hour
	switch variant {
	case "dup":
		supIDs, supAcc.Published, supAcc.LookbackDropped, supAcc.LateRecords = append(supIDs, "e1"), 3, 1, 4
	case "double":
		supConsumed = append(supConsumed, raw06)
	case "lineage":
		supHours = append(supHours, "2026-11-23T09") // not published
	case "accounting":
		supAcc.Published = 3
	}
	publish(h06, layout.SupplementPart(1), supConsumed, supAcc, supHours, supIDs...)
	if variant == "tamper" {
		name := layout.PartDir("PlaybackEvent", 1, h06, layout.SupplementPart(1)) + layout.ShardFile(0, 1)
		if err := b.Delete(ctx, name); err != nil {
			t.Fatal(err)
		}
		writeAvro(name, "e6")
	}
	// A supplement attempt without _SUCCESS is no part of the hour.
	writeAvro(layout.PartDir("PlaybackEvent", 1, h06, layout.SupplementPart(2))+layout.ShardFile(0, 1), "e1")
	return out
}

// TestCheckerSupplements: the checker reads every part of an hour (main and
// supplements), counts late-pending part files as pending, not lost, and
// reports each kind of damage to a supplement as its invariant; with NoLate
// any record routed to late/ is a violation.
func TestCheckerSupplements(t *testing.T) {
	ctx := context.Background()
	for _, variant := range []string{"", "format1"} {
		r := buildSupplementRoot(t, variant)
		in := Input{Scenario: "supplement" + variant, Root: r.root, Sent: r.sent, KeysURL: r.keys,
			Readable:   []string{r.ip["e6"], r.ip["e7"]}, // only in the supplement: view reads it
			Unreadable: []string{r.ip["e8"]}}             // pending: in no published part
		s, err := Check(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		t.Log(s)
		if len(s.Violations) != 0 {
			t.Fatalf("%s: %s\n%s", variant, s, strings.Join(s.Violations, "\n"))
		}
		if s.Valid != 8 || s.Published != 7 || s.Hours != 2 || s.Supplements != 1 || s.Late != 1 || s.LateRouted != 4 || s.Lost != 0 || s.Dups != 0 {
			t.Fatalf("%s: %s; want 7 published in 2 hours with 1 supplement, 1 late pending, 4 late routed", variant, s)
		}
		if variant == "" {
			// The view check is not vacuous: the pending event is in no view.
			pend := in
			pend.Readable = []string{r.ip["e8"]}
			s, err := Check(ctx, pend)
			if err != nil {
				t.Fatal(err)
			}
			if len(s.Violations) != 1 || !strings.Contains(s.Violations[0], "live data decrypts") {
				t.Fatalf("pending event readable: %q", s.Violations)
			}
		}
		// A fault-free run must route nothing to late/.
		in.NoLate, in.KeysURL = true, ""
		s, err = Check(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		if len(s.Violations) != 1 || !strings.Contains(s.Violations[0], "no late events in a fault-free run") || !strings.Contains(s.Violations[0], "4 records in 2 part files") {
			t.Fatalf("%s NoLate: %q", variant, s.Violations)
		}
	}

	for _, c := range []struct{ variant, invariant string }{
		{"lost", "nothing lost"},
		{"dup", "no duplicates"},
		{"double", "part files consumed once, by their hour"},
		{"lineage", "lineage"},
		{"main-after", "lineage"},
		{"accounting", "hourly accounting"},
		{"tamper", "published hour matches its manifest"},
	} {
		r := buildSupplementRoot(t, c.variant)
		s, err := Check(ctx, Input{Scenario: c.variant, Root: r.root, Sent: r.sent})
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, v := range s.Violations {
			found = found || strings.Contains(v, fmt.Sprintf("invariant %q", c.invariant))
		}
		if !found {
			t.Errorf("%s: want a %q violation, got %s %q", c.variant, c.invariant, s, s.Violations)
		}
	}
}

// TestPublishGated: the gated path publishes what ingest completed, with no
// force; an hour without its _COMPLETE fails it, named.
func TestPublishGated(t *testing.T) {
	ctx := context.Background()
	tr := synth.Generate(synth.Config{Events: 300, Users: 10, Hours: 2, DuplicateRate: 0.2, Seed: 11})
	keys := transforms.RegisterKeys("invariants-gated", keyclient.NewFake())
	root, res := ingest(t, tr, keys)

	// A copy whose first hour lost its _COMPLETE and whose writer records
	// are gone: no writer vouches for the hour, so it is not complete, and
	// the gated path does not force it.
	open := t.TempDir()
	if err := os.CopyFS(open, os.DirFS(root)); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(open, layout.WritersArea)); err != nil {
		t.Fatal(err)
	}
	markers, _ := filepath.Glob(filepath.Join(open, "raw", "*", "v1", "*", "*", layout.Complete))
	if len(markers) == 0 {
		t.Fatal("ingest wrote no _COMPLETE")
	}
	if err := os.Remove(markers[0]); err != nil {
		t.Fatal(err)
	}
	rel, _ := filepath.Rel(open, filepath.Dir(markers[0]))
	_, h, _, _ := layout.ParseDir(filepath.ToSlash(rel) + "/x")
	if _, err := PublishGated(ctx, pipelines.HourlyConfig{Root: open}); !errors.Is(err, pipelines.ErrNotReady) || !strings.Contains(err.Error(), h.String()) {
		t.Fatalf("gated publication of an open hour: %v (want ErrNotReady naming %s)", err, h)
	}
	if ok, _ := filepath.Glob(filepath.Join(open, filepath.FromSlash(layout.DatasetDir(h.Type, h.Version, h.Hour)), layout.Success)); len(ok) != 0 {
		t.Fatalf("%s published without its _COMPLETE", h)
	}

	hours, err := PublishGated(ctx, pipelines.HourlyConfig{Root: root, Force: true}) // Force is ignored
	if err != nil || len(hours) == 0 {
		t.Fatal(hours, err)
	}
	s := Require(t, ctx, Input{Scenario: "gated", Root: root, Sent: tr.Messages, Canaries: tr.Canaries, Ingest: res.Rows, NoLate: true})
	if s.Hours != len(hours) || s.LateRouted != 0 || s.Valid != tr.Unique {
		t.Fatalf("gated: %s, %d hours published", s, len(hours))
	}
}
