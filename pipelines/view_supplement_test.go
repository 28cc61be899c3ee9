package pipelines

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/bq/bqtest"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/schemas"
)

func viewPlaybackMsg(id, user, ip string, pub time.Time) record.Message {
	return record.Message{
		ID: "m-" + id, PublishTime: pub,
		Attributes: map[string]string{record.AttrEventType: "PlaybackEvent", record.AttrSchemaVersion: "1"},
		Data: []byte(fmt.Sprintf(`{"event_id":%q,"user_id":%q,"timestamp":%q,"track_id":"t1","ms_played":1234,"country":"SE","ip_address":%q,"device_id":"dev-%s"}`,
			id, user, pub.UTC().Format(time.RFC3339Nano), ip, id)),
	}
}

// TestViewIncludesSupplements: an hour's data is its main part plus its
// published late supplements, whose files have the same base names as the
// main part's; view decrypts every record of every part exactly once, and
// ignores a supplement without _SUCCESS.
func TestViewIncludesSupplements(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	b, err := blob.OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := schemas.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	fake := keyclient.NewFake()
	a, err := record.NewAnonymizer(reg, fake, record.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC)
	parts := map[string][]record.Message{
		layout.MainPart: {
			viewPlaybackMsg("e1", "alice", "203.0.113.1", h.Add(time.Minute)),
			viewPlaybackMsg("e2", "bob", "203.0.113.2", h.Add(2*time.Minute)),
			viewPlaybackMsg("e3", "carol", "203.0.113.3", h.Add(3*time.Minute)),
		},
		layout.SupplementPart(1): {
			viewPlaybackMsg("e4", "dave", "203.0.113.4", h.Add(4*time.Minute)),
			viewPlaybackMsg("e5", "alice", "203.0.113.5", h.Add(5*time.Minute)),
		},
		layout.SupplementPart(2): {viewPlaybackMsg("e6", "erin", "203.0.113.6", h.Add(6*time.Minute))},
	}
	for _, p := range []string{layout.MainPart, layout.SupplementPart(1), layout.SupplementPart(2)} {
		if _, err := bqtest.PublishPart(ctx, b, reg, a, parts[p], p); err != nil {
			t.Fatal(err)
		}
	}
	// A third supplement that never got its _SUCCESS: not part of the hour.
	unfinished := []record.Message{viewPlaybackMsg("e7", "frank", "203.0.113.7", h.Add(7*time.Minute))}
	if _, err := bqtest.PublishPart(ctx, b, reg, a, unfinished, layout.SupplementPart(3)); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, layout.PartDir("PlaybackEvent", 1, h, layout.SupplementPart(3))+layout.Success); err != nil {
		t.Fatal(err)
	}
	keys := registerKeys(fake)
	cfg := ViewConfig{Root: root, Type: "PlaybackEvent", Version: 1, Hour: h, KeysURL: keys}

	wantIDs := []string{"e1", "e2", "e3", "e4", "e5", "e6"}
	wantIP := map[string]string{}
	for _, msgs := range parts {
		for _, m := range msgs {
			wantIP[eventIDOf(t, m)] = ipOf(t, m)
		}
	}

	// NDJSON.
	cfg.Out = filepath.Join(t.TempDir(), "hour.ndjson")
	res, err := View(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Parts != 3 || res.Records != 6 || res.ShreddedRecords != 0 || res.CorruptRecords != 0 || res.Unreadable != 0 {
		t.Fatalf("view result %+v, want 3 parts, 6 records", res)
	}
	var ids []string
	for _, l := range readLines(t, cfg.Out) {
		id := l["event_id"].(string)
		ids = append(ids, id)
		if l["ip_address"] != wantIP[id] {
			t.Fatalf("%s: ip_address %v, want %s", id, l["ip_address"], wantIP[id])
		}
	}
	// Main part first, then supplements in order; each record once.
	if !slices.Equal(ids, wantIDs) {
		t.Fatalf("view output event ids %v, want %v", ids, wantIDs)
	}

	// Avro.
	cfg.Out, cfg.Format = filepath.Join(t.TempDir(), "hour.avro"), "avro"
	if res, err = View(ctx, cfg); err != nil || res.Records != 6 {
		t.Fatalf("avro view: %+v %v", res, err)
	}
	data, err := os.ReadFile(cfg.Out)
	if err != nil {
		t.Fatal(err)
	}
	r, err := goavro.NewOCFReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	ids = nil
	for r.Scan() {
		v, err := r.Read()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, v.(map[string]any)["event_id"].(string))
	}
	if !slices.Equal(ids, wantIDs) {
		t.Fatalf("avro view event ids %v, want %v", ids, wantIDs)
	}
	// No part outputs left next to the output.
	ents, _ := os.ReadDir(filepath.Dir(cfg.Out))
	if len(ents) != 1 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Fatalf("%v next to the output, want only it", names)
	}
}

func eventIDOf(t *testing.T, m record.Message) string { return payloadField(t, m, "event_id") }

func ipOf(t *testing.T, m record.Message) string { return payloadField(t, m, "ip_address") }

func payloadField(t *testing.T, m record.Message, field string) string {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(m.Data, &v); err != nil {
		t.Fatal(err)
	}
	return v[field].(string)
}
