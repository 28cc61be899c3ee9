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

// TestKeyCacheSize: WriteConfig.KeyCacheSize reaches the workers (through
// the serialized DoFn) as the size of the key client's cache and of the
// cipher cache, and a cache far smaller than the users of a batch still
// writes every event. Without it, both caches have DefaultKeyCacheSize.
func TestKeyCacheSize(t *testing.T) {
	var mu sync.Mutex
	var sizes []int // what each key source opened here was given
	fake := keyclient.NewFake()
	defer func(old func(context.Context, string, string, int) (keyclient.Keys, error)) { openKeyService = old }(openKeyService)
	openKeyService = func(_ context.Context, _, scope string, cacheSize int) (keyclient.Keys, error) {
		mu.Lock()
		sizes = append(sizes, cacheSize)
		mu.Unlock()
		return keyclient.New(fake, keyclient.Options{Scope: scope, CacheSize: cacheSize})
	}
	in := genInput(40)
	file := writeLines(t, in.lines)
	for _, tc := range []struct{ size, want int }{{3, 3}, {0, DefaultKeyCacheSize}} {
		DropKeyCaches() // the cipher cache takes the size of its first user
		root := t.TempDir()
		p, s := beam.NewPipelineWithRoot()
		batches := ReadReplay(s, ReplayConfig{Files: []string{file}, BatchSize: 20, RunID: "run1", Fallback: h6})
		AnonymizeAndWrite(s, batches, WriteConfig{Root: root, KeysURL: "local:" + filepath.Join(t.TempDir(), "keys"), KeyRetryBudget: time.Second, KeyCacheSize: tc.size})
		if err := ptest.Run(p); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		got := slices.Clone(sizes)
		sizes = nil
		mu.Unlock()
		if !slices.Equal(got, []int{tc.want}) {
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
	if !slices.Equal(sizes, []int{5}) || sharedCiphers(1).Capacity() != 5 {
		t.Errorf("DecryptConfig.KeyCacheSize 5: key sources opened with cache sizes %v, cipher cache of %d", sizes, sharedCiphers(1).Capacity())
	}
	DropKeyCaches()
}

// TestKeyActivityCounters: the write stage's key counters count what the
// key client and the cipher cache did in this run only: run twice over one
// key source, the second run finds every key and cipher cached.
func TestKeyActivityCounters(t *testing.T) {
	fake := keyclient.NewFake()
	defer func(old func(context.Context, string, string, int) (keyclient.Keys, error)) { openKeyService = old }(openKeyService)
	openKeyService = func(_ context.Context, _, scope string, cacheSize int) (keyclient.Keys, error) {
		return keyclient.New(fake, keyclient.Options{Scope: scope, CacheSize: cacheSize})
	}
	DropKeyCaches()
	defer DropKeyCaches()
	file := writeLines(t, genInput(40).lines)
	keysURL := "local:" + filepath.Join(t.TempDir(), "keys")
	run := func() map[string]int64 {
		p, s := beam.NewPipelineWithRoot()
		batches := ReadReplay(s, ReplayConfig{Files: []string{file}, BatchSize: 20, RunID: "run1", Fallback: h6})
		AnonymizeAndWrite(s, batches, WriteConfig{Root: t.TempDir(), KeysURL: keysURL, KeyRetryBudget: time.Second})
		res, err := ptest.RunWithMetrics(p)
		if err != nil {
			t.Fatal(err)
		}
		return counters(res)
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
