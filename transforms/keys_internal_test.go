package transforms

import (
	"context"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/layout"
)

// fakeKeyService makes OpenKeys open its key clients over fake for the rest
// of the test; opened returns the cache sizes they were opened with since
// it was last called.
func fakeKeyService(t *testing.T, fake *keyclient.Fake) (opened func() []int) {
	var mu sync.Mutex
	var sizes []int
	old := openKeyService
	t.Cleanup(func() { openKeyService = old })
	openKeyService = func(_ context.Context, _, scope string, cacheSize int) (keyclient.Keys, error) {
		mu.Lock()
		sizes = append(sizes, cacheSize)
		mu.Unlock()
		return keyclient.New(fake, keyclient.Options{Scope: scope, CacheSize: cacheSize})
	}
	return func() []int {
		mu.Lock()
		defer mu.Unlock()
		got := sizes
		sizes = nil
		return got
	}
}

// runWrite runs the replay file through AnonymizeAndWrite (batches of 20)
// on prism and returns the write stage's counters.
func runWrite(t *testing.T, file string, cfg WriteConfig) map[string]int64 {
	t.Helper()
	p, s := beam.NewPipelineWithRoot()
	batches := ReadReplay(s, ReplayConfig{Files: []string{file}, BatchSize: 20, RunID: "run1", Fallback: h6})
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
func TestKeyCacheSize(t *testing.T) {
	opened := fakeKeyService(t, keyclient.NewFake())
	in := genInput(40)
	file := writeLines(t, in.lines)
	for _, tc := range []struct{ size, want int }{{3, 3}, {0, DefaultKeyCacheSize}} {
		DropKeyCaches() // the cipher cache takes the size of its first user
		root := t.TempDir()
		runWrite(t, file, WriteConfig{Root: root, KeysURL: "local:" + filepath.Join(t.TempDir(), "keys"), KeyRetryBudget: time.Second, KeyCacheSize: tc.size})
		if got := opened(); !slices.Equal(got, []int{tc.want}) {
			t.Errorf("KeyCacheSize %d: key sources opened with cache sizes %v, want [%d]", tc.size, got, tc.want)
		}
		if n := sharedCiphers(1).Capacity(); n != tc.want {
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
	DropKeyCaches()
	fn := &decryptFileFn{Cfg: DecryptConfig{Root: t.TempDir(), Type: "PlaybackEvent", Version: 1, KeysURL: "local:" + filepath.Join(t.TempDir(), "keys"),
		OutRoot: t.TempDir(), OutName: "parts/", Format: FormatNDJSON, KeyCacheSize: 5}}
	if err := fn.Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := opened(); !slices.Equal(got, []int{5}) || sharedCiphers(1).Capacity() != 5 {
		t.Errorf("DecryptConfig.KeyCacheSize 5: key sources opened with cache sizes %v, cipher cache of %d", got, sharedCiphers(1).Capacity())
	}
	DropKeyCaches()
}

// TestKeyActivityCounters: the write stage's key counters count what the
// key client and the cipher cache did in this run only: run twice over one
// key source, the second run finds every key and cipher cached.
func TestKeyActivityCounters(t *testing.T) {
	fake := keyclient.NewFake()
	fakeKeyService(t, fake)
	DropKeyCaches()
	defer DropKeyCaches()
	file := writeLines(t, genInput(40).lines)
	keysURL := "local:" + filepath.Join(t.TempDir(), "keys")
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
	if built, n := first[CountCiphersBuilt], int64(sharedCiphers(0).Len()); built == 0 || built != n {
		t.Errorf("first run: %d ciphers built counted, the cache holds %d", built, n)
	}

	calls := fake.Calls()
	second := run()
	if second[CountKeyLookups] != first[CountKeyLookups] || second[CountKeyCacheHits] != second[CountKeyLookups] ||
		second[CountKeyCalls] != 0 || fake.Calls() != calls {
		t.Errorf("second run: %d lookups (first run %d), %d from the cache, %d key-service calls counted, %d made; want all from the cache, none made",
			second[CountKeyLookups], first[CountKeyLookups], second[CountKeyCacheHits], second[CountKeyCalls], fake.Calls()-calls)
	}
	if second[CountCiphersBuilt] != 0 || second[CountCipherHits] != first[CountCipherHits]+first[CountCiphersBuilt] {
		t.Errorf("second run: %d ciphers built, %d found built; want 0 and %d", second[CountCiphersBuilt], second[CountCipherHits], first[CountCipherHits]+first[CountCiphersBuilt])
	}
}
