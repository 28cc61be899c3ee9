package transforms

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"
	"github.com/linkedin/goavro/v2"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/fieldcrypt"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/record"
)

func TestMain(m *testing.M) { ptest.MainWithDefault(m, "prism") }

// testKeys is a deterministic in-memory key source (the keyclient tests
// cover the real one). fail > 0 makes that many ForEncrypt calls fail.
type testKeys struct {
	calls atomic.Int64
	fail  atomic.Int64
}

func (k *testKeys) answer(uid, sub string, cats []string) keyclient.UserKeys {
	uk := keyclient.UserKeys{UserID: uid, Subject: sub}
	for _, c := range cats {
		b, _ := hkdf.Key(sha256.New, []byte("test root"), nil, sub+"|"+c, 32)
		uk.Keys = append(uk.Keys, fieldcrypt.CategoryKey{Subject: sub, Category: c, Version: 1, Secret: fieldcrypt.NewSecret(b)})
	}
	return uk
}

func subjectOf(user string) string {
	h := sha256.Sum256([]byte("subject:" + user))
	return "s_" + hex.EncodeToString(h[:8])
}

func (k *testKeys) ForEncrypt(_ context.Context, users, cats []string) ([]keyclient.UserKeys, error) {
	k.calls.Add(1)
	if k.fail.Add(-1) >= 0 {
		return nil, keyclient.ErrUnavailable
	}
	out := make([]keyclient.UserKeys, len(users))
	for i, u := range users {
		out[i] = k.answer(u, subjectOf(u), cats)
	}
	return out, nil
}

func (k *testKeys) ForDecrypt(_ context.Context, subs, cats []string) ([]keyclient.UserKeys, error) {
	out := make([]keyclient.UserKeys, len(subs))
	for i, s := range subs {
		out[i] = k.answer("", s, cats)
	}
	return out, nil
}

var h6 = time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC)

// input is generated replay traffic with recognizable canaries.
type input struct {
	lines    []string
	canaries []string
	valid    map[string]map[time.Time]int // type -> hour -> valid events
}

func playbackLine(i int, pt time.Time) (string, []string) {
	user, ip, dev := fmt.Sprintf("canary-user-%04d", i), fmt.Sprintf("canary-ip-%04d", i), fmt.Sprintf("canary-device-%04d", i)
	data := fmt.Sprintf(`{"event_id":"ev-%d","user_id":%q,"timestamp":"2026-11-23T06:11:59.000Z","track_id":"t1","ms_played":1234,"country":"SE","ip_address":%q,"device_id":%q}`, i, user, ip, dev)
	m := record.Message{ID: fmt.Sprintf("m-%d", i), PublishTime: pt,
		Attributes: map[string]string{record.AttrEventType: "PlaybackEvent", record.AttrSchemaVersion: "1"}, Data: []byte(data)}
	line, _ := m.MarshalLine()
	return string(line), []string{user, ip, dev}
}

func accountLine(i int, pt time.Time) (string, []string) {
	user, email, name := fmt.Sprintf("canary-user-%04d", i), fmt.Sprintf("canary-mail-%04d@example.com", i), fmt.Sprintf("canary-name-%04d", i)
	data := fmt.Sprintf(`{"event_id":"ac-%d","user_id":%q,"timestamp":1795414320000,"email":%q,"display_name":%q,"birth_year":1990}`, i, user, email, name)
	m := record.Message{ID: fmt.Sprintf("a-%d", i), PublishTime: pt,
		Attributes: map[string]string{record.AttrEventType: "AccountUpdate", record.AttrSchemaVersion: "1"}, Data: []byte(data)}
	line, _ := m.MarshalLine()
	return string(line), []string{user, email, name}
}

// genInput: n playback events over hours 06 and 07, a few account updates
// in 06, two broken lines (lines 3 and 10), and one payload with an unknown
// field (a dead letter whose canary must not leak).
func genInput(n int) input {
	in := input{valid: map[string]map[time.Time]int{"PlaybackEvent": {}, "AccountUpdate": {}}}
	add := func(line string, can []string) {
		in.lines = append(in.lines, line)
		in.canaries = append(in.canaries, can...)
	}
	for i := 0; i < n; i++ {
		if len(in.lines) == 2 || len(in.lines) == 9 {
			in.lines = append(in.lines, `{"id":"broken", "data": canary-broken-line`)
		}
		pt := h6.Add(time.Duration(i) * 2 * time.Hour / time.Duration(n))
		add(playbackLine(i, pt))
		in.valid["PlaybackEvent"][record.Hour(pt)]++
		if i%10 == 0 {
			add(accountLine(i, pt))
			in.valid["AccountUpdate"][record.Hour(pt)]++
		}
	}
	bad := record.Message{ID: "m-bad", PublishTime: h6.Add(time.Minute),
		Attributes: map[string]string{record.AttrEventType: "PlaybackEvent", record.AttrSchemaVersion: "1"},
		Data:       []byte(`{"event_id":"bad","user_id":"canary-user-bad","secret":"canary-secret-field"}`)}
	line, _ := bad.MarshalLine()
	add(string(line), []string{"canary-user-bad", "canary-secret-field"})
	return in
}

func writeLines(t *testing.T, lines []string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "in.ndjson")
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

var keysSeq atomic.Int64

func registerTestKeys(k *testKeys) string {
	return RegisterKeys(fmt.Sprintf("transforms-test-%d", keysSeq.Add(1)), k)
}

// replayPipeline builds ReadReplay (run "run1") of file in batches of
// batchSize, AnonymizeAndWrite under w and EndBranch.
func replayPipeline(t *testing.T, file string, batchSize int, w WriteConfig) *beam.Pipeline {
	t.Helper()
	p, s := beam.NewPipelineWithRoot()
	batches, err := ReadReplay(s, ReplayConfig{Files: []string{file}, BatchSize: batchSize, RunID: "run1", Fallback: h6})
	if err != nil {
		t.Fatal(err)
	}
	files, err := AnonymizeAndWrite(s, batches, w)
	if err != nil {
		t.Fatal(err)
	}
	EndBranch(s, files)
	return p
}

func runIngest(t *testing.T, file, root, keysURL string, retry time.Duration) beam.PipelineResult {
	t.Helper()
	p := replayPipeline(t, file, 7, WriteConfig{Root: root, KeysURL: keysURL, RunID: "run1", KeyRetryBudget: retry, HourCounters: true})
	res, err := ptest.RunWithMetrics(p)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// readParts decodes every part file under dir with goavro and returns the
// records' event ids.
func readParts(t *testing.T, b blob.Bucket, dir string) []string {
	t.Helper()
	names, err := b.List(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, n := range names {
		if !IsPart(n) {
			continue
		}
		data, err := blob.ReadAll(context.Background(), b, n)
		if err != nil {
			t.Fatal(err)
		}
		r, err := goavro.NewOCFReader(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("%s: goavro: %v", n, err)
		}
		if r.Codec().Schema() == "" || r.CompressionName() != FileCodec {
			t.Fatalf("%s: codec %q", n, r.CompressionName())
		}
		for r.Scan() {
			v, err := r.Read()
			if err != nil {
				t.Fatalf("%s: %v", n, err)
			}
			rec := v.(map[string]any)
			if _, ok := rec["user_id"]; ok {
				t.Fatalf("%s: user_id is in a raw record", n)
			}
			ids = append(ids, rec["event_id"].(string))
		}
	}
	return ids
}

// scanCanaries fails if any canary appears in any byte under root.
func scanCanaries(t *testing.T, root string, canaries []string) {
	t.Helper()
	files := 0
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		files++
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, c := range append(canaries, "canary-") {
			if bytes.Contains(data, []byte(c)) {
				return fmt.Errorf("plaintext %q in %s", c, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 {
		t.Fatal("no output files")
	}
}

func counters(res beam.PipelineResult) map[string]int64 {
	out := map[string]int64{}
	for _, c := range res.Metrics().AllMetrics().Counters() {
		if c.Namespace() == MetricsNamespace || c.Namespace() == MetricsNamespaceHours {
			out[c.Name()] += c.Result()
		}
	}
	return out
}

func TestReplayAnonymizeWriteComplete(t *testing.T) {
	in := genInput(60)
	file := writeLines(t, in.lines)
	root := t.TempDir()
	keys := &testKeys{}
	res := runIngest(t, file, root, registerTestKeys(keys), time.Second)
	b, err := blob.Open(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// Raw files per (type, hour), decoded by goavro, with exactly the valid events.
	for typ, hours := range in.valid {
		for hour, want := range hours {
			ids := readParts(t, b, layout.RawDir(typ, 1, hour))
			if len(ids) != want {
				t.Errorf("%s %s: %d raw records, want %d", typ, layout.FormatHour(hour), len(ids), want)
			}
			// The run recorded the hour before writing it (package
			// completion); completing it is the driver's and hourly's job.
			if ok, err := b.Exists(ctx, layout.WriterHourMarker("run1", typ, 1, hour)); !ok || err != nil {
				t.Errorf("%s %s: no writer hour marker (%v)", typ, layout.FormatHour(hour), err)
			}
			if ok, _ := b.Exists(ctx, layout.CompleteName(typ, 1, hour)); ok {
				t.Errorf("%s %s: the write stage marked the hour complete", typ, layout.FormatHour(hour))
			}
		}
	}

	// Broken lines: bad_message dead letters with line numbers, no content.
	var bad []record.Rejection
	names, _ := b.List(ctx, layout.DeadLetterArea+"/")
	for _, n := range names {
		data, _ := blob.ReadAll(ctx, b, n)
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			var r record.Rejection
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatalf("%s: %v", n, err)
			}
			if r.Reason == record.ReasonBadMessage {
				bad = append(bad, r)
			}
		}
	}
	if len(bad) != 2 || bad[0].Path != "in.ndjson:3" || bad[1].Path != "in.ndjson:10" {
		t.Errorf("bad_message dead letters %+v, want lines 3 and 10", bad)
	}

	// Accounting counters: in = written + dead + late per (type, hour).
	c := counters(res)
	if got, want := c[HourCounterName(CountIn, "PlaybackEvent", 1, h6)], int64(in.valid["PlaybackEvent"][h6]+1); got != want {
		t.Errorf("in PlaybackEvent 06 = %d, want %d (counters %v)", got, want, c)
	}
	if got := c[CounterName(CountDead+record.ReasonBadMessage, "", 0)]; got != 2 {
		t.Errorf("bad_message counter %d, want 2", got)
	}
	// The bounded counters (no hour: what Dataflow shows) hold the sums.
	var pe int64
	for _, n := range in.valid["PlaybackEvent"] {
		pe += int64(n)
	}
	if got := c[CounterName(CountIn, "PlaybackEvent", 1)]; got != pe+1 || len(in.valid["PlaybackEvent"]) < 2 {
		t.Errorf("in PlaybackEvent = %d, want %d over %d hours", got, pe+1, len(in.valid["PlaybackEvent"]))
	}
	// One key lookup per batch (plus one for the payload keys of batches with rejections).
	batches := int64((len(in.lines) + 6) / 7)
	if n := keys.calls.Load(); n > batches+3 {
		t.Errorf("%d key lookups for %d batches", n, batches)
	}
	scanCanaries(t, root, in.canaries)
}

func TestLateRouting(t *testing.T) {
	in := genInput(40)
	file := writeLines(t, in.lines)
	root := t.TempDir()
	b, _ := blob.Open(context.Background(), root)
	// Hour 06 of PlaybackEvent was closed by an earlier run.
	marker := []byte(`{"format_version":1,"event_type":"PlaybackEvent","schema_version":1,"hour":"2026-11-23T06","files":[],"records":0}`)
	if err := blob.WriteAll(context.Background(), b, layout.CompleteName("PlaybackEvent", 1, h6), marker); err != nil {
		t.Fatal(err)
	}
	res := runIngest(t, file, root, registerTestKeys(&testKeys{}), time.Second)

	if ids := readParts(t, b, layout.RawDir("PlaybackEvent", 1, h6)); len(ids) != 0 {
		t.Errorf("%d raw records in a closed hour", len(ids))
	}
	if ids := readParts(t, b, layout.LateDir("PlaybackEvent", 1, h6)); len(ids) != in.valid["PlaybackEvent"][h6] {
		t.Errorf("%d late records, want %d", len(ids), in.valid["PlaybackEvent"][h6])
	}
	got, _ := blob.ReadAll(context.Background(), b, layout.CompleteName("PlaybackEvent", 1, h6))
	if !bytes.Equal(got, marker) {
		t.Error("the existing marker was rewritten")
	}
	// The open hour is written to raw as usual; the closed one is not
	// recorded as written (the run holds no complete hour).
	h7 := h6.Add(time.Hour)
	if ids := readParts(t, b, layout.RawDir("PlaybackEvent", 1, h7)); len(ids) != in.valid["PlaybackEvent"][h7] {
		t.Errorf("hour 07: %d raw records, want %d", len(ids), in.valid["PlaybackEvent"][h7])
	}
	if ok, _ := b.Exists(context.Background(), layout.WriterHourMarker("run1", "PlaybackEvent", 1, h7)); !ok {
		t.Error("hour 07 was not recorded as written")
	}
	if ok, _ := b.Exists(context.Background(), layout.WriterHourMarker("run1", "PlaybackEvent", 1, h6)); ok {
		t.Error("the complete hour 06 was recorded as written to raw")
	}
	if c := counters(res); c[HourCounterName(CountLate, "PlaybackEvent", 1, h6)] != int64(in.valid["PlaybackEvent"][h6]) {
		t.Errorf("late counter %d", c[HourCounterName(CountLate, "PlaybackEvent", 1, h6)])
	}
	scanCanaries(t, root, in.canaries)
}

// flakyKeys answers its first ok calls, then fails every call as
// unavailable (a key service that goes down mid-run).
type flakyKeys struct {
	ok atomic.Int64
	k  testKeys
}

func (f *flakyKeys) ForEncrypt(ctx context.Context, users, cats []string) ([]keyclient.UserKeys, error) {
	if f.ok.Add(-1) < 0 {
		f.k.calls.Add(1)
		return nil, keyclient.Unavailable(errors.New("connection refused"))
	}
	return f.k.ForEncrypt(ctx, users, cats)
}

func (f *flakyKeys) ForDecrypt(ctx context.Context, subs, cats []string) ([]keyclient.UserKeys, error) {
	return f.k.ForDecrypt(ctx, subs, cats)
}

// A replay run never dead-letters for key unavailability, whether the key
// service is down from the start or goes down mid-run: after the retry
// budget the run fails with the cause and writes nothing of the batch; a
// re-run once the service answers writes every event.
func TestKeyUnavailableFailsReplay(t *testing.T) {
	for name, answered := range map[string]int64{"down at start": 0, "down mid-run": 3} {
		t.Run(name, func(t *testing.T) {
			in := genInput(40)
			file := writeLines(t, in.lines)
			root := t.TempDir()
			keys := &flakyKeys{}
			keys.ok.Store(answered)
			p := replayPipeline(t, file, 7, WriteConfig{Root: root, KeysURL: RegisterKeys(fmt.Sprintf("transforms-test-%d", keysSeq.Add(1)), keys), RunID: "run1", KeyRetryBudget: 200 * time.Millisecond})
			_, err := ptest.RunWithMetrics(p)
			if err == nil || !strings.Contains(err.Error(), "did not answer") || !strings.Contains(err.Error(), "connection refused") {
				t.Fatalf("run: err %v, want the key service's unavailability as the cause", err)
			}
			if n := keys.k.calls.Load() - answered; n < 2 {
				t.Errorf("%d failed attempts: no retries", n)
			}
			b, err := blob.Open(context.Background(), root)
			if err != nil {
				t.Fatal(err)
			}
			dead, err := b.List(context.Background(), layout.DeadLetterArea+"/"+record.ReasonKeyUnavailable+"/")
			if err != nil {
				t.Fatal(err)
			}
			if len(dead) > 0 {
				t.Fatalf("dead letters for key unavailability: %v", dead)
			}
			scanCanaries(t, root, in.canaries)

			// The service is back: a re-run writes every event.
			res := runIngest(t, file, root, registerTestKeys(&testKeys{}), 200*time.Millisecond)
			got := map[string]bool{}
			for _, h := range []time.Time{h6, h6.Add(time.Hour)} {
				for _, id := range readParts(t, b, layout.RawDir("PlaybackEvent", 1, h)) {
					got[id] = true
				}
			}
			if want := in.valid["PlaybackEvent"][h6] + in.valid["PlaybackEvent"][h6.Add(time.Hour)]; len(got) != want {
				t.Fatalf("after the re-run: %d distinct playback events in raw, want %d", len(got), want)
			}
			if n := counters(res)[CounterName(CountDead+record.ReasonKeyUnavailable, "PlaybackEvent", 1)]; n != 0 {
				t.Fatalf("re-run dead-lettered %d as key_unavailable", n)
			}
		})
	}
}

// TestReplayWriteFailureFailsRun: a batch's files are written while the
// next batch is anonymized (writeFn); a write that fails must still fail
// the run, with its cause, whether the next batch or the end of the
// bundle finds it. The second hour's raw directory is a file, so every
// batch of that hour fails to write, the last one included, after the
// first hour's batches were written.
func TestReplayWriteFailureFailsRun(t *testing.T) {
	for name, batchSize := range map[string]int{"a later batch finds it": 7, "the end of the bundle finds it": 1000} {
		t.Run(name, func(t *testing.T) {
			in := genInput(60)
			file := writeLines(t, in.lines)
			root := t.TempDir()
			h7 := h6.Add(time.Hour)
			blocked := filepath.Join(root, strings.TrimSuffix(layout.RawDir("PlaybackEvent", 1, h7), "/"))
			if err := os.MkdirAll(filepath.Dir(blocked), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(blocked, []byte("not a directory"), 0o644); err != nil {
				t.Fatal(err)
			}
			p := replayPipeline(t, file, batchSize, WriteConfig{Root: root, KeysURL: registerTestKeys(&testKeys{}), RunID: "run1", KeyRetryBudget: time.Second})
			_, err := ptest.RunWithMetrics(p)
			if err == nil || !strings.Contains(err.Error(), "not a directory") {
				t.Fatalf("run: err %v, want the failed write's cause", err)
			}
			if batchSize == 7 {
				// The first hour's batches came before the failure: written.
				b, err := blob.Open(context.Background(), root)
				if err != nil {
					t.Fatal(err)
				}
				if ids := readParts(t, b, layout.RawDir("PlaybackEvent", 1, h6)); len(ids) < 7 {
					t.Fatalf("%d records of the first hour written before the failure", len(ids))
				}
			}
		})
	}
}

func TestConstructionValidation(t *testing.T) {
	// Every transform returns its configuration errors, before anything
	// runs.
	write := WriteConfig{Root: "x", KeysURL: "local:x", RunID: "r"}
	for name, tc := range map[string]struct {
		f    func() error
		want string
	}{
		"replay no files": {func() error {
			_, err := ReadReplay(beam.NewPipeline().Root(), ReplayConfig{BatchSize: 1, RunID: "r"})
			return err
		}, "no input files"},
		"replay batch size": {func() error {
			_, err := ReadReplay(beam.NewPipeline().Root(), ReplayConfig{Files: []string{"x"}, RunID: "r"})
			return err
		}, "BatchSize 0"},
		"replay run id": {func() error {
			_, err := ReadReplay(beam.NewPipeline().Root(), ReplayConfig{Files: []string{"x"}, BatchSize: 1, RunID: "a/b"})
			return err
		}, "RunID"},
		"pubsub sub": {func() error {
			_, err := IngestPubSub(beam.NewPipeline().Root(), PubSubConfig{Subscription: "s", BatchSize: 1, Write: write})
			return err
		}, "is not projects/P/subscriptions/S"},
		"pubsub batch": {func() error {
			_, err := IngestPubSub(beam.NewPipeline().Root(), PubSubConfig{Subscription: "projects/p/subscriptions/s", BatchSize: 5000, Write: write})
			return err
		}, "BatchSize 5000"},
		"pubsub streams": {func() error {
			_, err := IngestPubSub(beam.NewPipeline().Root(), PubSubConfig{Subscription: "projects/p/subscriptions/s", BatchSize: 10, Streams: 1000, Write: write})
			return err
		}, "Streams 1000"},
		"pubsub flow control": {func() error {
			_, err := IngestPubSub(beam.NewPipeline().Root(), PubSubConfig{Subscription: "projects/p/subscriptions/s", BatchSize: 100, MaxOutstandingMessages: 10, Write: write})
			return err
		}, "below the batch size"},
		"pubsub run id": {func() error {
			w := write
			w.RunID = ""
			_, err := IngestPubSub(beam.NewPipeline().Root(), PubSubConfig{Subscription: "projects/p/subscriptions/s", BatchSize: 10, Write: w})
			return err
		}, "RunID"},
		"write keys": {func() error {
			w := write
			w.KeysURL = "nope"
			_, err := AnonymizeAndWrite(beam.NewPipeline().Root(), beam.PCollection{}, w)
			return err
		}, "keys URL"},
		"write key cache size": {func() error {
			w := write
			w.KeyCacheSize = -1
			_, err := AnonymizeAndWrite(beam.NewPipeline().Root(), beam.PCollection{}, w)
			return err
		}, "KeyCacheSize -1"},
	} {
		t.Run(name, func(t *testing.T) {
			if err := tc.f(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
}

func TestOpenKeys(t *testing.T) {
	if _, err := OpenKeys(context.Background(), "registered:nobody", "", 0); !errors.Is(err, ErrKeysURL) {
		t.Errorf("unregistered name: %v", err)
	}
	k := &testKeys{}
	url := registerTestKeys(k)
	got, err := OpenKeys(context.Background(), url, "", 0)
	if err != nil || got != keyclient.Keys(k) {
		t.Errorf("OpenKeys(%s) = %v, %v", url, got, err)
	}
}
