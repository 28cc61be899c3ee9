package pipelines

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/synth"
	"github.com/lockstream/lockstream/transforms"
)

// TestManifestCheckAgainstWhatWasWritten: the manifest check trusts a
// dataset file's block headers only when its stored bytes are exactly the
// ones its shard reported writing (sha256); stored bytes that differ, or a
// block count that differs from the shard's, fail the publication, and a
// file without a report is decoded record by record.
func TestManifestCheckAgainstWhatWasWritten(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	tr := synth.Generate(synth.Config{Events: 300, Users: 20, Hours: 1, Seed: 5})
	in := filepath.Join(dir, "in.ndjson")
	writeReplay(t, in, tr.Messages)
	if _, err := Ingest(ctx, IngestConfig{Inputs: []string{in}, Out: root, KeysURL: registerKeys(keyclient.NewFake())}); err != nil {
		t.Fatal(err)
	}
	b, err := blob.Open(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	hs, err := RawHours(ctx, b, time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC))
	if err != nil || len(hs) == 0 {
		t.Fatalf("raw hours: %v %v", hs, err)
	}
	h := hs[0]
	cfg := HourlyConfig{Root: root, Type: h.Type, Version: h.Version, Hour: h.Hour}
	res, err := Hourly(ctx, cfg)
	if err != nil || res.State != StatePublished {
		t.Fatalf("hourly: %v %v", res, err)
	}
	if err := cfg.normalize(); err != nil {
		t.Fatal(err)
	}
	m := res.Manifest
	written := map[string]transforms.ShardStats{}
	for _, f := range m.Files {
		written[f.Name] = transforms.ShardStats{File: f.Name, SHA256: f.SHA256, Published: f.Records}
	}
	check := func(w map[string]transforms.ShardStats) (*layout.ManifestDoc, error) {
		return buildManifest(ctx, b, cfg, layout.MainPart, m.Input, m.Lineage.InputHours, w)
	}
	got, err := check(written)
	if err != nil || got.Records != m.Records {
		t.Fatalf("as written: %v, %d records (want %d)", err, got.Records, m.Records)
	}
	if got, err := check(nil); err != nil || got.Records != m.Records {
		t.Fatalf("without reports (decoded): %v", err)
	}
	f := m.Files[0]
	bad := map[string]transforms.ShardStats{}
	for k, v := range written {
		bad[k] = v
	}
	bad[f.Name] = transforms.ShardStats{File: f.Name, SHA256: f.SHA256, Published: f.Records + 1}
	if _, err := check(bad); err == nil || !strings.Contains(err.Error(), "written") {
		t.Fatalf("a count other than the shard's: %v", err)
	}
	// The stored bytes change after the shard reported them.
	name := layout.DatasetDir(h.Type, h.Version, h.Hour) + f.Name
	data, err := blob.ReadAll(ctx, b, name)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)-20] ^= 0x01 // inside the last block's data
	if err := b.Delete(ctx, name); err != nil {
		t.Fatal(err)
	}
	if err := blob.WriteAll(ctx, b, name, data); err != nil {
		t.Fatal(err)
	}
	if _, err := check(written); err == nil || !strings.Contains(err.Error(), "differ") {
		t.Fatalf("stored bytes differ from those written: %v", err)
	}
	sum := sha256.Sum256(data)
	if hex.EncodeToString(sum[:]) == f.SHA256 || path.Base(name) != f.Name {
		t.Fatal("the test did not change the file")
	}
}
