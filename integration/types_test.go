package integration

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/integration/invariants"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/pipelines"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/schemas"
	"github.com/lockstream/lockstream/synth"
	"github.com/lockstream/lockstream/transforms"
)

// TestEveryTypeAndVersionEndToEnd drives every (type, version) of the
// registry — including types declared by an .avsc file alone and several
// versions of one type in the same hour — through ingest, hourly and view,
// with messages made from the schemas (synth.FromSchema) and every message
// delivered twice: each version is published under its own path with
// exactly its events, nothing twice, no plaintext anywhere, every PII value
// decrypts in view.
func TestEveryTypeAndVersionEndToEnd(t *testing.T) {
	ctx := context.Background()
	reg, err := schemas.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	hour := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	const perVersion = 40
	var sent []record.Message
	var canaries []string
	want := map[layout.Hour]int64{}
	for k, s := range reg.All() {
		for i := range perVersion {
			n := k*1000 + i // event ids stay distinct across versions of a type
			// Event times stay inside the hour whatever the number of
			// schemas (n seconds would leave it from the fourth schema on).
			at := hour.Add(time.Duration(k*perVersion+i) * time.Second)
			m := synth.FromSchema(s, n, synth.User(i%7), at)
			sent = append(sent, m, m) // a redelivery of each
			for _, f := range s.Fields {
				if f.PII != nil && !f.PII.Subject && f.Kind == schemas.KindString {
					canaries = append(canaries, synth.Canary(s, f.Name, n))
				}
			}
		}
		want[layout.Hour{Type: s.Type, Version: s.Version, Hour: hour}] = perVersion
	}
	for i := range 7 {
		canaries = append(canaries, synth.User(i))
	}
	dir := t.TempDir()
	var lines []byte
	for _, m := range sent {
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
	keys := transforms.RegisterKeys("every-type", keyclient.NewFake())
	res, err := pipelines.Ingest(ctx, pipelines.IngestConfig{Inputs: []string{in}, Out: root, KeysURL: keys})
	if err != nil {
		t.Fatal(err)
	}
	hours, err := invariants.PublishGated(ctx, pipelines.HourlyConfig{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	b, err := blob.Open(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hours {
		m, err := pipelines.ReadManifest(ctx, b, h)
		if err != nil {
			t.Fatal(err)
		}
		if m.Records != want[h] || m.Input.DuplicatesDropped != want[h] {
			t.Errorf("%s: %d records, %d duplicates dropped; want %d of each", h, m.Records, m.Input.DuplicatesDropped, want[h])
		}
		delete(want, h)
	}
	if len(want) != 0 {
		t.Fatalf("not published: %v", want)
	}
	invariants.Require(t, ctx, invariants.Input{NoLate: true, Scenario: "every-type", Root: root, Sent: sent, Canaries: canaries,
		Ingest: res.Rows, WantDead: map[string]int64{}, KeysURL: keys, Readable: canaries[:len(canaries)-7]})
}

// TestSomeTypeHasNoGoCode: adding an event type is adding an .avsc file.
// At least one registered type is named by no Go source file outside
// schemas/ (TestEveryTypeAndVersionEndToEnd drives it end to end), and the
// check is real: the shipped types that code does name are found.
func TestSomeTypeHasNoGoCode(t *testing.T) {
	reg, err := schemas.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	named := map[string]int{}
	err = filepath.WalkDir("..", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata" || p == filepath.Join("..", "schemas")) {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") {
			return nil
		}
		src, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, typ := range reg.Types() {
			if bytes.Contains(src, []byte(typ)) {
				named[typ]++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if named["PlaybackEvent"] == 0 {
		t.Fatal("the scan found no Go file naming PlaybackEvent: it does not look at the sources")
	}
	var without []string
	for _, typ := range reg.Types() {
		if named[typ] == 0 {
			without = append(without, typ)
		}
	}
	if len(without) == 0 {
		t.Fatalf("every registered type is named by Go code outside schemas/: %v", named)
	}
	t.Logf("types with no Go code: %v (Go files naming the others: %v)", without, named)
}
