package transforms

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"
	"github.com/linkedin/goavro/v2"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/fieldcrypt"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/layout"
)

// fakeKeyService registers a key source whose clients go to fake and
// returns its URL; opened returns the cache sizes they were opened with
// since it was last called.
func fakeKeyService(t *testing.T, fake *keyclient.Fake) (url string, opened func() []int) {
	var mu sync.Mutex
	var sizes []int
	url = RegisterKeySource("fake-"+t.Name(), func(_ context.Context, scope string, cacheSize int) (keyclient.Keys, error) {
		mu.Lock()
		sizes = append(sizes, cacheSize)
		mu.Unlock()
		return keyclient.New(fake, keyclient.Options{Scope: scope, CacheSize: cacheSize})
	})
	return url, func() []int {
		mu.Lock()
		defer mu.Unlock()
		got := sizes
		sizes = nil
		return got
	}
}

// ciphersOf returns the cache of derived keys of a key environment.
func ciphersOf(t *testing.T, url string, cacheSize int) *fieldcrypt.Cache {
	t.Helper()
	e, err := keyEnvFor(context.Background(), url, "", cacheSize)
	if err != nil {
		t.Fatal(err)
	}
	return e.ciphers
}

// keyStats is the counters of the key client of url's key environment.
func keyStats(t *testing.T, url string) keyclient.Stats {
	t.Helper()
	e, err := keyEnvFor(context.Background(), url, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	s, ok := e.keys.(statser)
	if !ok {
		t.Fatalf("the key source of %s counts nothing", url)
	}
	return s.Stats()
}

// runWrite runs the replay file through AnonymizeAndWrite (batches of 20)
// on prism and returns the write stage's counters.
func runWrite(t *testing.T, file string, cfg WriteConfig) map[string]int64 {
	t.Helper()
	p, s := beam.NewPipelineWithRoot()
	batches, err := ReadReplay(s, ReplayConfig{Files: []string{file}, BatchSize: 20, RunID: "run1", Fallback: h6})
	if err != nil {
		t.Fatal(err)
	}
	cfg.RunID = "run1"
	files, err := AnonymizeAndWrite(s, batches, cfg)
	if err != nil {
		t.Fatal(err)
	}
	EndBranch(s, files)
	res, err := ptest.RunWithMetrics(p)
	if err != nil {
		t.Fatal(err)
	}
	return counters(res)
}

// TestKeyCacheSize: WriteConfig.KeyCacheSize reaches the workers (through
// the serialized DoFn) as the size of the key client's cache and of the
// cipher cache, and a cache far smaller than the users of a batch still
// writes every event. Without it, both caches have DefaultKeyCacheSize.
// Runs of one process with different sizes get environments of their own.
func TestKeyCacheSize(t *testing.T) {
	url, opened := fakeKeyService(t, keyclient.NewFake())
	in := genInput(40)
	file := writeLines(t, in.lines)
	for _, tc := range []struct{ size, want int }{{3, 3}, {0, DefaultKeyCacheSize}} {
		root := t.TempDir()
		runWrite(t, file, WriteConfig{Root: root, KeysURL: url, KeyRetryBudget: time.Second, KeyCacheSize: tc.size})
		if got := opened(); !slices.Equal(got, []int{tc.want}) {
			t.Errorf("KeyCacheSize %d: key sources opened with cache sizes %v, want [%d]", tc.size, got, tc.want)
		}
		if n := ciphersOf(t, url, tc.size).Capacity(); n != tc.want {
			t.Errorf("KeyCacheSize %d: cipher cache of %d, want %d", tc.size, n, tc.want)
		}
		b, err := blob.Open(context.Background(), root)
		if err != nil {
			t.Fatal(err)
		}
		if ids := readParts(t, b, layout.RawDir("PlaybackEvent", 1, h6)); len(ids) != in.valid["PlaybackEvent"][h6] {
			t.Errorf("KeyCacheSize %d: %d raw records, want %d", tc.size, len(ids), in.valid["PlaybackEvent"][h6])
		}
		scanCanaries(t, root, in.canaries)
	}

	// view's DoFn, DecryptConfig.KeyCacheSize.
	fn := &decryptFileFn{Cfg: DecryptConfig{Root: t.TempDir(), Type: "PlaybackEvent", Version: 1, KeysURL: url,
		OutRoot: t.TempDir(), OutName: "parts/", Format: FormatNDJSON, KeyCacheSize: 5}}
	if err := fn.Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := opened(); !slices.Equal(got, []int{5}) || ciphersOf(t, url, 5).Capacity() != 5 {
		t.Errorf("DecryptConfig.KeyCacheSize 5: key sources opened with cache sizes %v, cipher cache of %d", got, ciphersOf(t, url, 5).Capacity())
	}
}

// TestKeyActivityCounters: the write stage's key counters count what the
// key client and the cipher cache did in this run only: run twice over one
// key source, the second run finds every key and cipher cached.
func TestKeyActivityCounters(t *testing.T) {
	fake := keyclient.NewFake()
	keysURL, _ := fakeKeyService(t, fake)
	file := writeLines(t, genInput(40).lines)
	run := func() map[string]int64 {
		return runWrite(t, file, WriteConfig{Root: t.TempDir(), KeysURL: keysURL, KeyRetryBudget: time.Second})
	}

	first := run()
	if first[CountKeyLookups] == 0 || first[CountKeyCalls] != fake.Calls() {
		t.Errorf("first run: %d lookups, %d key-service calls counted, the service saw %d", first[CountKeyLookups], first[CountKeyCalls], fake.Calls())
	}
	if hits := first[CountKeyCacheHits]; hits >= first[CountKeyLookups] {
		t.Errorf("first run: %d of %d lookups from the cache, want fewer (it started empty)", hits, first[CountKeyLookups])
	}
	derived := keyStats(t, keysURL).Derived
	if built, n := first[CountCiphersBuilt], int64(ciphersOf(t, keysURL, 0).Len()); built == 0 || built != n+derived {
		t.Errorf("first run: %d ciphers built counted; the key client derived %d keys and the cipher cache holds %d", built, derived, n)
	}

	calls := fake.Calls()
	second := run()
	if second[CountKeyLookups] != first[CountKeyLookups] || second[CountKeyCacheHits] != second[CountKeyLookups] ||
		second[CountKeyCalls] != 0 || fake.Calls() != calls {
		t.Errorf("second run: %d lookups (first run %d), %d from the cache, %d key-service calls counted, %d made; want all from the cache, none made",
			second[CountKeyLookups], first[CountKeyLookups], second[CountKeyCacheHits], second[CountKeyCalls], fake.Calls()-calls)
	}
	// Every key came with its derived keys: the first run's ciphers were
	// found built as often as the second's, and only the first derived.
	if second[CountCiphersBuilt] != 0 || second[CountCipherHits] != first[CountCipherHits] || keyStats(t, keysURL).Derived != derived {
		t.Errorf("second run: %d ciphers built, %d found built; want 0 and %d", second[CountCiphersBuilt], second[CountCipherHits], first[CountCipherHits])
	}
}

// TestDecryptLanesKeepOrder: view's DoFn decrypts a file's batches side by
// side, one lane per core, and writes them in order: with batches of 3
// records and 1, 2 or 3 lanes, each output (NDJSON and Avro) is the same
// bytes, a line per record, with a deleted user's PII null.
func TestDecryptLanesKeepOrder(t *testing.T) {
	ctx := context.Background()
	fake := keyclient.NewFake()
	url, _ := fakeKeyService(t, fake)
	root := t.TempDir()
	runWrite(t, writeLines(t, genInput(40).lines), WriteConfig{Root: root, KeysURL: url, KeyRetryBudget: time.Second})
	b, names := rawPlaybackParts(t, root)
	var records int
	for _, n := range names {
		records += len(readParts(t, b, n))
	}
	fake.DeleteUser("canary-user-0003")
	for _, format := range []string{FormatNDJSON, FormatAvro} {
		var want []byte
		for lanes := 1; lanes <= 3; lanes++ {
			out := t.TempDir()
			fn := &decryptFileFn{Cfg: DecryptConfig{Root: root, Type: "PlaybackEvent", Version: 1, KeysURL: url,
				OutRoot: out, OutName: "parts/", Format: format, Batch: 3}}
			if err := fn.Setup(ctx); err != nil {
				t.Fatal(err)
			}
			fn.useLanes(lanes)
			var got []byte
			for _, n := range names {
				if err := fn.ProcessElement(ctx, n, func(part string) {
					data, err := os.ReadFile(filepath.Join(out, part))
					if err != nil {
						t.Fatal(err)
					}
					if format == FormatAvro {
						// Each OCF file has sync markers of its own: compare its records.
						r, err := goavro.NewOCFReader(bytes.NewReader(data))
						if err != nil {
							t.Fatal(err)
						}
						for r.Scan() {
							v, err := r.Read()
							if err != nil {
								t.Fatal(err)
							}
							j, err := json.Marshal(v)
							if err != nil {
								t.Fatal(err)
							}
							got = append(append(got, j...), '\n')
						}
						return
					}
					got = append(got, data...)
				}); err != nil {
					t.Fatal(err)
				}
			}
			// Avro records are compared as goavro's JSON of them, where a
			// null union is null as in NDJSON.
			lines := strings.Split(strings.TrimSuffix(string(got), "\n"), "\n")
			nulls := 0
			for _, l := range lines {
				if strings.Contains(l, `"ip_address":null`) {
					nulls++
				}
			}
			if len(lines) != records || nulls != 1 {
				t.Fatalf("%s, %d lanes: %d lines for %d records, %d with a null ip_address (want 1: the deleted user's)", format, lanes, len(lines), records, nulls)
			}
			if lanes == 1 {
				want = got
			} else if !bytes.Equal(got, want) {
				t.Fatalf("%s, %d lanes: output differs from one lane's", format, lanes)
			}
		}
	}
}

// rawPlaybackParts opens root and lists its raw PlaybackEvent v1 part files
// of hour h6 (at least one).
func rawPlaybackParts(t *testing.T, root string) (blob.Bucket, []string) {
	t.Helper()
	b, err := blob.Open(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	names, err := b.List(context.Background(), layout.RawDir("PlaybackEvent", 1, h6))
	if err != nil {
		t.Fatal(err)
	}
	names = slices.DeleteFunc(names, func(n string) bool { return !IsPart(n) })
	if len(names) == 0 {
		t.Fatal("no raw files written")
	}
	return b, names
}
