package integration

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/dataset"
	"github.com/lockstream/lockstream/integration/invariants"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/pipelines"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/schemas"
	"github.com/lockstream/lockstream/transforms"
)

// TestScenario06_BadInputCorpus publishes a corpus of bad messages to the
// real Pub/Sub emulator (payload bytes arrive exactly as sent), each with a
// plaintext canary: every one is dead-lettered with its reason, the run
// does not crash, no canary is anywhere in the output or the logs. A
// ciphertext-looking string in a field is just a string: published as is in
// a plaintext field, encrypted like any value in a PII field, and view
// returns it unchanged.
func TestScenario06_BadInputCorpus(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	sub, publish, _ := scenarioPubSub(t, ctx, "badinput")
	at := time.Now().UTC()
	pb := func(payload string) record.Message {
		return record.Message{Attributes: map[string]string{record.AttrEventType: "PlaybackEvent", record.AttrSchemaVersion: "1"}, Data: []byte(payload)}
	}
	valid := func(id, ip, country string) string {
		return fmt.Sprintf(`{"event_id":%q,"user_id":"canary-user-%s","timestamp":%d,"track_id":"t","ms_played":1,"country":%q,"ip_address":%q,"device_id":"canary-dev-%s"}`,
			id, id, at.UnixMilli(), country, ip, id)
	}
	// A string that looks like one of our ciphertexts (Tink prefix + base64).
	lookalike := base64.StdEncoding.EncodeToString(append([]byte{1, 0, 0, 0, 1}, []byte("0123456789abcdef0123456789abcdef")...))
	bomb := strings.Repeat(`{"a":`, 5000) + "1" + strings.Repeat("}", 5000)
	corpus := []struct {
		reason string
		msg    record.Message
	}{
		{schemas.ReasonMalformedJSON, pb(`{"event_id":"b1","user_id":"canary-bad-1","ip_address":"canary-ip-1",`)},
		{schemas.ReasonWrongType, pb(strings.Replace(valid("b2", "canary-ip-2", "SE"), `"ms_played":1`, `"ms_played":"lots"`, 1))},
		{schemas.ReasonMissingField, pb(strings.Replace(valid("b3", "canary-ip-3", "SE"), `,"ip_address":"canary-ip-3"`, ``, 1))},
		{schemas.ReasonUnknownEventType, record.Message{Attributes: map[string]string{record.AttrEventType: "NoSuchEvent", record.AttrSchemaVersion: "1"}, Data: []byte(valid("b4", "canary-ip-4", "SE"))}},
		{schemas.ReasonUnknownVersion, record.Message{Attributes: map[string]string{record.AttrEventType: "PlaybackEvent", record.AttrSchemaVersion: "99"}, Data: []byte(valid("b5", "canary-ip-5", "SE"))}},
		{schemas.ReasonUnknownEventType, record.Message{Data: []byte(valid("b6", "canary-ip-6", "SE"))}}, // no attributes at all
		{schemas.ReasonOversized, pb(strings.Replace(valid("b7", "canary-ip-7", "SE"), `"track_id":"t"`, `"track_id":"`+strings.Repeat("canary-big-7 ", 100_000)+`"`, 1))},
		{schemas.ReasonInvalidUTF8, pb(strings.Replace(valid("b8", "canary-ip-8", "SE"), `"country":"SE"`, "\"country\":\"S\xff\xfe\"", 1))},
		{schemas.ReasonInvalidUTF8, pb(strings.Replace(valid("b9", "canary-ip-9", "SE"), `"country":"SE"`, `"country":"\ud800"`, 1))},
		{schemas.ReasonMalformedJSON, pb(strings.Replace(valid("b10", "canary-ip-10", "SE"), `"country":"SE"`, "\"country\":\"S\x00E\"", 1))},
		{schemas.ReasonMalformedJSON, pb(strings.Replace(valid("b11", "canary-ip-11", "SE"), `}`, `}`+"\x00", 1))},
		{schemas.ReasonTooDeep, pb(strings.Replace(valid("b12", "canary-ip-12", "SE"), `"track_id":"t"`, `"track_id":`+bomb, 1))},
		{schemas.ReasonUnknownField, pb(strings.Replace(valid("b13", "canary-ip-13", "SE"), `}`, `,"shoe_size":44}`, 1))},
		{schemas.ReasonMalformedJSON, pb(``)}, // empty: not a JSON object
	}
	var msgs []record.Message
	want := map[string]int64{}
	canaries := []string{"canary-big-7"}
	for i, c := range corpus {
		msgs = append(msgs, c.msg)
		want[c.reason]++
		canaries = append(canaries, fmt.Sprintf("canary-ip-%d", i+1), fmt.Sprintf("canary-user-b%d", i+1))
	}
	// Lookalikes: valid events, published (the plaintext one) and encrypted (the PII one).
	msgs = append(msgs, pb(valid("ok1", lookalike, "canary-country-ok1")), pb(valid("ok2", "canary-ip-ok2", lookalike)))
	canaries = append(canaries, "canary-user-ok1", "canary-user-ok2", "canary-ip-ok2", "canary-dev-ok1")
	sent := publish(msgs)

	root := t.TempDir()
	keys := transforms.RegisterKeys("scenario06", keyclient.NewFake())
	logs := &lockedBuffer{}
	res, err := pipelines.Ingest(ctx, pipelines.IngestConfig{Subscription: sub, Out: root, KeysURL: keys, IdleTimeout: 8 * time.Second,
		Progress: logs, ProgressEvery: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := invariants.PublishGated(ctx, pipelines.HourlyConfig{Root: root}); err != nil {
		t.Fatal(err)
	}
	s := invariants.Require(t, ctx, invariants.Input{NoLate: true, Scenario: "06-bad-input", Root: root, Sent: sent, Canaries: canaries,
		Logs: logs.Bytes(), Ingest: res.Rows, WantDead: want, KeysURL: keys, Readable: []string{lookalike, "canary-ip-ok2"}})
	if s.Published != 2 {
		t.Fatalf("published %d records, want the 2 lookalike events", s.Published)
	}
	badInputLookalikes(t, ctx, root, keys, lookalike)
}

// badInputLookalikes checks the two published events of the corpus, each
// with a ciphertext-looking string: in ok2's plaintext country it is
// published as is; in ok1's PII ip_address it is encrypted like any other
// value — neither stored as is nor taken for a ciphertext (its base64
// bytes) — and view decrypts both back to the string.
func badInputLookalikes(t *testing.T, ctx context.Context, root, keys, lookalike string) {
	t.Helper()
	b, err := blob.Open(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	names, err := b.List(ctx, layout.DatasetsArea+"/")
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	var hour layout.Hour
	for _, n := range names {
		if _, h, _, ok := layout.ParseDir(n); ok && transforms.IsPart(n) {
			files, hour = append(files, n), h
		}
	}
	decoded, _ := base64.StdEncoding.DecodeString(lookalike)
	stored := map[string]map[string][]byte{} // event id → field → stored bytes
	err = dataset.ReadRecords(ctx, b, "PlaybackEvent", 1, files, func(cols []record.Column, lay *record.Layout, _ []byte) {
		fields := map[string][]byte{}
		for i, f := range lay.Enc.Fields {
			fields[f.Name] = bytes.Clone(cols[i].Bytes)
		}
		stored[string(cols[lay.Dedupe].Bytes)] = fields
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := stored["ok2"]["country"]; string(got) != lookalike {
		t.Errorf("ok2's plaintext country is stored as %d bytes, not the lookalike as is", len(got))
	}
	ip := stored["ok1"]["ip_address"]
	if len(ip) == 0 || bytes.Contains(ip, []byte(lookalike)) || bytes.Equal(ip, decoded) {
		t.Errorf("ok1's ip_address (PII) holding the lookalike was not encrypted (stored %d bytes)", len(ip))
	}

	out := filepath.Join(t.TempDir(), "view.ndjson")
	vr, err := pipelines.View(ctx, pipelines.ViewConfig{Root: root, Type: hour.Type, Version: hour.Version, Hour: hour.Hour, Out: out, KeysURL: keys})
	if err != nil || vr.CorruptRecords != 0 {
		t.Fatalf("view: %+v, %v", vr, err)
	}
	lines, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	viewed := map[string]map[string]any{}
	for _, l := range bytes.Split(bytes.TrimSpace(lines), []byte("\n")) {
		var r map[string]any
		if err := json.Unmarshal(l, &r); err != nil {
			t.Fatal(err)
		}
		viewed[fmt.Sprint(r["event_id"])] = r
	}
	if viewed["ok1"]["ip_address"] != lookalike || viewed["ok2"]["country"] != lookalike {
		t.Errorf("view does not return the lookalikes unchanged (ok1 ip_address matches: %v, ok2 country matches: %v)",
			viewed["ok1"]["ip_address"] == lookalike, viewed["ok2"]["country"] == lookalike)
	}
}
