package integration

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockstream/lockstream/integration/invariants"
	"github.com/lockstream/lockstream/keyclient"
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
	if _, err := invariants.PublishAll(ctx, pipelines.HourlyConfig{Root: root}); err != nil {
		t.Fatal(err)
	}
	s := invariants.Require(t, ctx, invariants.Input{Scenario: "06-bad-input", Root: root, Sent: sent, Canaries: canaries,
		Logs: logs.Bytes(), Ingest: res.Rows, WantDead: want, KeysURL: keys, Readable: []string{lookalike, "canary-ip-ok2"}})
	if s.Published != 2 {
		t.Fatalf("published %d records, want the 2 lookalike events", s.Published)
	}
	// In the plaintext field the lookalike is stored as is; in the PII field
	// it is not (it is encrypted like any value).
	data := readAll(t, root, "datasets")
	if !strings.Contains(data, lookalike) {
		t.Fatal("the plaintext lookalike is not published as is")
	}
	if strings.Count(data, lookalike) != 1 {
		t.Fatal("the lookalike in the PII field was stored unencrypted")
	}
}

// readAll concatenates every file under root/area.
func readAll(t *testing.T, root, area string) string {
	t.Helper()
	var b strings.Builder
	filepath.Walk(filepath.Join(root, area), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			data, _ := os.ReadFile(p)
			b.Write(data)
		}
		return nil
	})
	return b.String()
}
