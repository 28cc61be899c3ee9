package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/integration/invariants"
	"github.com/lockstream/lockstream/keyservice/server"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/pipelines"
	"github.com/lockstream/lockstream/synth"
)

// ciphertext returns the bytes of a PII column in a goavro native record.
func ciphertext(v any) []byte {
	if u, ok := v.(map[string]any); ok {
		v = u["bytes"]
	}
	b, _ := v.([]byte)
	return b
}

func setCiphertext(rec map[string]any, field string, ct []byte) {
	if _, ok := rec[field].(map[string]any); ok {
		rec[field] = map[string]any{"bytes": ct}
		return
	}
	rec[field] = ct
}

// TestScenario07_TamperedAndMovedCiphertexts: in a real published dataset,
// one ciphertext gets a flipped byte, one is moved to another field of its
// record, and one record is moved to another _subject. With the manifest's
// checksum left alone the hour fails verification; with the checksum fixed
// (the attack is on the crypto), `lockstream view` and pipelines.View
// report exactly those records as corrupt, output their fields as null —
// never garbage — and decrypt every other record.
func TestScenario07_TamperedAndMovedCiphertexts(t *testing.T) {
	bin := buildCLI(t)
	ctx := context.Background()
	dir := t.TempDir()
	// A key server both this process and the CLI reach (a local store is
	// one process's at a time).
	keys := startScenarioKeyServer(t, server.Config{}, nil).url()
	tr := synth.Generate(synth.Config{Events: 200, Users: 20, Hours: 1, Seed: 707, DuplicateRate: 0.01, MalformedRate: 0.01})
	root := filepath.Join(dir, "root")
	res, err := pipelines.Ingest(ctx, pipelines.IngestConfig{Inputs: []string{writeReplayFile(t, tr.Messages)}, Out: root, KeysURL: keys})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := invariants.PublishGated(ctx, pipelines.HourlyConfig{Root: root, Shards: 1}); err != nil {
		t.Fatal(err)
	}
	h := layout.Hour{Type: "PlaybackEvent", Version: 1, Hour: time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC)}
	b, _ := blob.Open(ctx, root)
	m, err := pipelines.ReadManifest(ctx, b, h)
	if err != nil || len(m.Files) != 1 {
		t.Fatalf("manifest %+v, %v", m, err)
	}
	file := filepath.Join(root, layout.DatasetDir(h.Type, h.Version, h.Hour), m.Files[0].Name)
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	r, err := goavro.NewOCFReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var recs []map[string]any
	for r.Scan() {
		v, err := r.Read()
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, v.(map[string]any))
	}
	if len(recs) < 10 {
		t.Fatalf("only %d records", len(recs))
	}
	// 0: a flipped byte; 1: ip_address holds the record's device_id ciphertext;
	// 2: moved to record 3's subject (a different user).
	ct := bytes.Clone(ciphertext(recs[0]["ip_address"]))
	ct[len(ct)/2] ^= 0x01
	setCiphertext(recs[0], "ip_address", ct)
	setCiphertext(recs[1], "ip_address", ciphertext(recs[1]["device_id"]))
	other := 3
	for ; recs[other]["_subject"] == recs[2]["_subject"]; other++ {
	}
	recs[2]["_subject"] = recs[other]["_subject"]
	tampered := map[string]bool{recs[0]["event_id"].(string): true, recs[1]["event_id"].(string): true, recs[2]["event_id"].(string): true}

	var buf bytes.Buffer
	w, err := goavro.NewOCFWriter(goavro.OCFConfig{W: &buf, Codec: r.Codec(), CompressionName: goavro.CompressionDeflateLabel})
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range recs {
		if err := w.Append([]any{rec}); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := pipelines.VerifyHour(ctx, b, h); err == nil {
		t.Fatal("a rewritten file passed verification against the manifest's checksum")
	}
	// The attacker fixes the checksum too: now only the crypto stands.
	sum := sha256.Sum256(buf.Bytes())
	m.Files[0].SHA256, m.Files[0].Bytes = hex.EncodeToString(sum[:]), int64(buf.Len())
	md, _ := json.MarshalIndent(m, "", "  ")
	if err := os.WriteFile(filepath.Join(root, layout.DatasetDir(h.Type, h.Version, h.Hour), layout.Manifest), append(md, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := pipelines.VerifyHour(ctx, b, h); err != nil {
		t.Fatalf("verification after fixing the checksum: %v", err)
	}

	out := filepath.Join(dir, "view.ndjson")
	cli, err := run(t, bin, "view", "--root", root, "--hour", "2026-11-23T06", "--type", "PlaybackEvent", "--out", out, "--keys", keys)
	if err != nil {
		t.Fatalf("view: %v\n%s", err, cli)
	}
	if !regexp.MustCompile(`\b3 corrupt`).MatchString(cli) {
		t.Fatalf("the CLI does not report 3 corrupt records:\n%s", cli)
	}
	vr, err := pipelines.View(ctx, pipelines.ViewConfig{Root: root, Type: h.Type, Version: 1, Hour: h.Hour, Out: filepath.Join(dir, "view2.ndjson"), KeysURL: keys})
	if err != nil || vr.CorruptRecords != 3 || vr.Records != int64(len(recs)) {
		t.Fatalf("View: %+v, %v; want 3 corrupt of %d", vr, err, len(recs))
	}
	lines, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	valid := regexp.MustCompile(`^(10\.\d+\.\d+\.\d+|pii-device-\d+)$`)
	for _, line := range strings.Split(strings.TrimSpace(string(lines)), "\n") {
		var row map[string]any
		if err := json.Unmarshal([]byte(line), &row); err != nil {
			t.Fatal(err)
		}
		id := row["event_id"].(string)
		for _, f := range []string{"ip_address", "device_id"} {
			v, isString := row[f].(string)
			switch {
			case tampered[id] && f == "ip_address" && row[f] != nil:
				t.Fatalf("%s: tampered %s decrypted to %q", id, f, v)
			case id == recs[2]["event_id"] && row[f] != nil:
				t.Fatalf("%s: the moved record's %s decrypted to %q", id, f, v)
			case row[f] != nil && (!isString || !valid.MatchString(v)):
				t.Fatalf("%s: %s is %v, not a plaintext the producer sent", id, f, row[f])
			case !tampered[id] && row[f] == nil:
				t.Fatalf("%s: an untouched record's %s did not decrypt", id, f)
			}
		}
	}
	invariants.Require(t, ctx, invariants.Input{NoLate: true, Scenario: "07-crypto", Root: root, Sent: tr.Messages, Canaries: tr.Canaries,
		Logs: []byte(cli), Ingest: res.Rows})
}
