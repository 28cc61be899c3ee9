package pipelines

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/synth"
	"github.com/lockstream/lockstream/transforms"
)

func TestMain(m *testing.M) {
	if os.Getenv(benchChildEnv) != "" {
		// A pipeline of BenchmarkEndToEnd, in a process of its own.
		flag.Parse()
		beam.Init()
		os.Exit(runBenchChild())
	}
	ptest.MainWithDefault(m, "prism")
}

var keysSeq atomic.Int64

// register gives the pipelines of this process a fresh client name (no
// cached keys) over the same fake key service.
func registerKeys(k keyclient.Keys) string {
	return transforms.RegisterKeys(fmt.Sprintf("pipelines-test-%d", keysSeq.Add(1)), k)
}

func writeReplay(t testing.TB, path string, msgs []record.Message) {
	t.Helper()
	// Streamed: a buffer of the whole file (378 MB for the 1M benchmark)
	// grew the heap before the first pipeline ran.
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for _, m := range msgs {
		line, err := m.MarshalLine()
		if err != nil {
			t.Fatal(err)
		}
		w.Write(line)
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// synthReplay writes synthetic traffic to dir/in.ndjson and returns its path.
func synthReplay(t testing.TB, dir string, cfg synth.Config) string {
	t.Helper()
	in := filepath.Join(dir, "in.ndjson")
	writeReplay(t, in, synth.Generate(cfg).Messages)
	return in
}

// eventID reads the dedupe key of a valid synthetic message.
func eventID(m record.Message) string {
	s := string(m.Data)
	i := strings.Index(s, `"event_id":"ev-`)
	if i < 0 {
		return ""
	}
	rest := s[i+len(`"event_id":"`):]
	return rest[:strings.IndexByte(rest, '"')]
}

// scanForPlaintext fails if any canary occurs in any byte under root.
func scanForPlaintext(t *testing.T, root string, canaries []string) {
	t.Helper()
	files := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files++
		for _, c := range canaries {
			if bytes.Contains(data, []byte(c)) {
				return fmt.Errorf("plaintext PII %q found in %s", c, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 {
		t.Fatal("nothing to scan")
	}
}

func readDataset(t *testing.T, root string, h layout.Hour) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	dir := filepath.Join(root, filepath.FromSlash(layout.DatasetDir(h.Type, h.Version, h.Hour)))
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = data
	}
	return files
}

func TestIngestHourlyView(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	tr := synth.Generate(synth.Config{Events: 600, Users: 40, Hours: 2, Seed: 3})
	in := filepath.Join(dir, "in.ndjson")
	writeReplay(t, in, tr.Messages)
	fake := keyclient.NewFake()
	keys := registerKeys(fake)

	ing, err := Ingest(ctx, IngestConfig{Inputs: []string{in}, Out: root, KeysURL: keys, BatchSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	tot := ing.Totals()
	if tot.In != int64(len(tr.Messages)) || tot.In != tot.Written+tot.DeadTotal()+tot.Late {
		t.Fatalf("ingest accounting: %+v for %d messages", tot, len(tr.Messages))
	}

	// Publish every (type, hour) in order, as a scheduler would.
	b, err := blob.Open(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC)
	published := map[string]int{} // event id -> times published (per type)
	var hours []layout.Hour
	for _, hr := range []time.Time{start, start.Add(time.Hour)} {
		hs, err := RawHours(ctx, b, hr)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hs {
			res, err := Hourly(ctx, HourlyConfig{Root: root, Type: h.Type, Version: h.Version, Hour: h.Hour, Shards: 3})
			if err != nil {
				t.Fatal(err)
			}
			if res.State != StatePublished {
				t.Fatalf("%s: state %s", h, res.State)
			}
			m := res.Manifest
			if m.Records == 0 || m.Records != m.Input.Published {
				t.Fatalf("%s: manifest %+v", h, m)
			}
			in := m.Input.RawRecords + m.Input.LateRecords
			if in != m.Input.Published+m.Input.DuplicatesDropped+m.Input.LookbackDropped {
				t.Fatalf("%s: accounting does not balance: %+v", h, m.Input)
			}
			if m.SchemaFingerprint == "" || len(m.Lineage.InputHours) == 0 || m.Lineage.CodeVersion == "" {
				t.Fatalf("%s: lineage/fingerprint missing: %+v", h, m)
			}
			if err := VerifyHour(ctx, b, h); err != nil {
				t.Fatal(err)
			}
			err = ReadDatasetEventIDs(ctx, b, h, func(id string) { published[h.Type+"/"+id]++ })
			if err != nil {
				t.Fatal(err)
			}
			hours = append(hours, h)
		}
	}
	// Exactly the valid unique events, each once across all hours.
	want := map[string]bool{}
	for _, m := range tr.Messages {
		if id := eventID(m); id != "" {
			want[m.EventType()+"/"+id] = true
		}
	}
	for id, n := range published {
		if n != 1 {
			t.Fatalf("event %s published %d times", id, n)
		}
		if !want[id] {
			t.Fatalf("event %s published but never sent", id)
		}
	}
	if len(published) != len(want) || len(want) != tr.Unique {
		t.Fatalf("published %d distinct events, sent %d (synth says %d)", len(published), len(want), tr.Unique)
	}

	// Re-run: a no-op, byte-identical. (The last hour: it has a lookback
	// hour, whose ids the first run took from what this process wrote.)
	h := hours[len(hours)-1]
	before := readDataset(t, root, h)
	res, err := Hourly(ctx, HourlyConfig{Root: root, Type: h.Type, Version: h.Version, Hour: h.Hour, Shards: 3})
	if err != nil || res.State != StateAlreadyPublished {
		t.Fatalf("re-run: %v %v", res, err)
	}
	// Crash between data files and _SUCCESS: the next run republishes the
	// same bytes, once — here with the lookback hour read from storage.
	transforms.DropProcessCaches()
	os.Remove(filepath.Join(root, layout.DatasetDir(h.Type, h.Version, h.Hour), layout.Success))
	os.Remove(filepath.Join(root, layout.DatasetDir(h.Type, h.Version, h.Hour), layout.Manifest))
	res, err = Hourly(ctx, HourlyConfig{Root: root, Type: h.Type, Version: h.Version, Hour: h.Hour, Shards: 3})
	if err != nil || res.State != StatePublished || res.Leftovers == 0 {
		t.Fatalf("recovery run: %+v %v", res, err)
	}
	after := readDataset(t, root, h)
	if len(before) != len(after) {
		t.Fatalf("recovered hour has %d objects, had %d", len(after), len(before))
	}
	for name, data := range before {
		got := after[name]
		if name == layout.Manifest { // the same but for the run that wrote it
			data, got = withoutRun(t, data), withoutRun(t, got)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("recovered %s differs", name)
		}
	}

	// View before and after a shred.
	canaries := tr.Canaries
	scanForPlaintext(t, root, canaries)
	var au layout.Hour
	for _, x := range hours {
		if x.Type == "AccountUpdate" {
			au = x
			break
		}
	}
	out := filepath.Join(dir, "view", "au.ndjson")
	vr, err := View(ctx, ViewConfig{Root: root, Type: au.Type, Version: au.Version, Hour: au.Hour, Out: out, KeysURL: registerKeys(fake)})
	if err != nil {
		t.Fatal(err)
	}
	m, _ := ReadManifest(ctx, b, au)
	lines := readLines(t, out)
	if vr.Records != m.Records || int64(len(lines)) != m.Records || vr.ShreddedRecords != 0 || vr.CorruptRecords != 0 {
		t.Fatalf("view: %+v, %d lines, manifest %d", vr, len(lines), m.Records)
	}
	victim := lines[0]["_subject"].(string)
	var victimUser string
	for _, u := range tr.Users {
		if fake.SubjectOf(u) == victim {
			victimUser = u
		}
	}
	email, _ := lines[0]["email"].(string)
	if !strings.HasPrefix(email, "pii-email-") {
		t.Fatalf("email did not decrypt: %v", lines[0])
	}
	if !fake.DeleteUser(victimUser) {
		t.Fatal("delete failed")
	}
	vr, err = View(ctx, ViewConfig{Root: root, Type: au.Type, Version: au.Version, Hour: au.Hour, Out: out, KeysURL: registerKeys(fake)})
	if err != nil {
		t.Fatal(err)
	}
	if vr.ShreddedRecords == 0 {
		t.Fatalf("no shredded records after delete: %+v", vr)
	}
	for _, l := range readLines(t, out) {
		if l["_subject"] == victim && (l["email"] != nil || l["display_name"] != nil) {
			t.Fatalf("shredded user's PII decrypted: %v", l)
		}
		if l["_subject"] != victim && l["email"] == nil {
			t.Fatalf("other user's PII lost: %v", l)
		}
	}
	// Avro output too.
	aout := filepath.Join(dir, "view", "au.avro")
	if _, err := View(ctx, ViewConfig{Root: root, Type: au.Type, Version: au.Version, Hour: au.Hour, Out: aout, Format: "avro", KeysURL: registerKeys(fake)}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(aout); err != nil {
		t.Fatal(err)
	}
}

// withoutRun returns a manifest without its run id and publication time.
func withoutRun(t *testing.T, data []byte) []byte {
	t.Helper()
	var m layout.ManifestDoc
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	m.RunID, m.PublishedAt = "", time.Time{}
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestHourlyNotReady(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	h := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	if _, err := Hourly(ctx, HourlyConfig{Root: root, Type: "PlaybackEvent", Version: 1, Hour: h}); !errors.Is(err, ErrNotReady) {
		t.Fatalf("err = %v, want ErrNotReady", err)
	}
	// --force publishes an (empty) hour.
	res, err := Hourly(ctx, HourlyConfig{Root: root, Type: "PlaybackEvent", Version: 1, Hour: h, Force: true})
	if err != nil || res.State != StatePublished || res.Manifest.Records != 0 {
		t.Fatalf("forced: %+v %v", res, err)
	}
	for _, bad := range []HourlyConfig{{Root: root, Type: "Nope", Version: 1, Hour: h}, {Root: root, Type: "PlaybackEvent", Version: 1, Hour: h.Add(time.Minute)}} {
		if _, err := Hourly(ctx, bad); !errors.Is(err, ErrConfig) {
			t.Fatalf("%+v: %v", bad, err)
		}
	}
	if _, err := View(ctx, ViewConfig{Root: root, Type: "PlaybackEvent", Version: 1, Hour: h.Add(time.Hour), Out: filepath.Join(root, "x.ndjson"), KeysURL: "local:/nonexistent"}); !errors.Is(err, ErrNotPublished) {
		t.Fatalf("view of unpublished hour: %v", err)
	}
}

func readLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// A permanent key-service refusal (here: permission denied) stops the run
// with the cause instead of dead-lettering every message as key_unavailable.
func TestIngestFailsOnPermanentKeyError(t *testing.T) {
	dir := t.TempDir()
	in := synthReplay(t, dir, synth.Config{Events: 50, Users: 5, Hours: 1, Seed: 5})
	fake := keyclient.NewFake()
	fake.FailNext(1<<30, keyclient.ErrPermissionDenied)
	_, err := Ingest(context.Background(), IngestConfig{Inputs: []string{in}, Out: filepath.Join(dir, "root"), KeysURL: registerKeys(fake)})
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("err = %v, want the refusal", err)
	}
	if _, serr := os.Stat(filepath.Join(dir, "root", "raw")); serr == nil {
		t.Fatal("raw data written despite the refusal")
	}
}

// Ingest lets go of the keys it cached when its run ends
// (transforms.DropKeyCaches): a process that publishes hours next does not
// keep marking them in every GC cycle.
func TestIngestDropsKeyCaches(t *testing.T) {
	dir := t.TempDir()
	in := synthReplay(t, dir, synth.Config{Events: 200, Users: 20, Hours: 1, Seed: 9})
	fake := keyclient.NewFake()
	kc, err := keyclient.New(fake, keyclient.Options{Scope: transforms.DefaultKeyScope})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Ingest(context.Background(), IngestConfig{Inputs: []string{in}, Out: filepath.Join(dir, "root"), KeysURL: registerKeys(kc)}); err != nil {
		t.Fatal(err)
	}
	if st := kc.Stats(); st.Lookups == 0 || fake.Calls() == 0 || st.CacheEntries != 0 {
		t.Fatalf("after ingest: %d lookups, %d RPCs, %d users still cached (want lookups, RPCs, 0 cached)", st.Lookups, fake.Calls(), st.CacheEntries)
	}
}
