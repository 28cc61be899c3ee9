package invariants

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"

	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/pipelines"
	"github.com/lockstream/lockstream/record"
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
