package transforms

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/lockstream/lockstream/fieldcrypt"
	"github.com/lockstream/lockstream/keyclient"
)

// Key sources are opened once per process and URL and shared by every DoFn
// instance: DoFns carry only the URL (it is serialized with the pipeline),
// and "local:DIR" stores allow one opener per process.
//
// URL forms:
//
//	registered:NAME         a keyclient.Keys registered in this process with RegisterKeys (tests, benchmarks)
//	local:DIR | http(s)://  opened with keyclient (see openKeyService)

var keyRegistry struct {
	mu      sync.Mutex
	entries map[string]*keysEntry
}

type keysEntry struct {
	once   sync.Once
	keys   keyclient.Keys
	err    error
	opened bool // keys is set (keyRegistry.mu): DropKeyCaches may use it
}

// RegisterKeys makes k available to DoFns of this process under the URL
// "registered:<name>", which it returns. Registering a name again replaces
// it for DoFns set up afterwards.
func RegisterKeys(name string, k keyclient.Keys) string {
	url := "registered:" + name
	keyRegistry.mu.Lock()
	defer keyRegistry.mu.Unlock()
	if keyRegistry.entries == nil {
		keyRegistry.entries = map[string]*keysEntry{}
	}
	e := &keysEntry{keys: k, opened: true}
	e.once.Do(func() {})
	keyRegistry.entries[url] = e
	return url
}

// ErrKeysURL is wrapped by errors about an unusable keys URL.
var ErrKeysURL = errors.New("transforms: keys URL")

// ValidateKeysURL checks the form of a keys URL without opening it: a
// "local:DIR" with a directory, a "registered:NAME", or one or more
// comma-separated http(s) endpoints that each parse (keyclient.ParseEndpoints).
// An unknown scheme or an address that does not parse fails here, before
// any input is read.
func ValidateKeysURL(url string) error {
	switch {
	case strings.HasPrefix(url, "registered:") && len(url) > len("registered:"):
	case strings.HasPrefix(url, "local:") && len(url) > len("local:"):
	case keyclient.IsRemoteURL(url):
		if _, err := keyclient.ParseEndpoints(url); err != nil {
			return fmt.Errorf("%w: %w", ErrKeysURL, err)
		}
	default:
		return fmt.Errorf("%w %q: want local:DIR, http(s)://HOST:PORT[,http(s)://HOST:PORT…] or registered:NAME", ErrKeysURL, url)
	}
	return nil
}

// OpenKeys returns the process-wide key source for url and scope (scope ""
// means DefaultKeyScope; registered sources ignore it), opening it on first
// use with a cache of the keys of up to cacheSize users (0 means
// DefaultKeyCacheSize; the first opener's size holds for the process).
func OpenKeys(ctx context.Context, url, scope string, cacheSize int) (keyclient.Keys, error) {
	if scope == "" {
		scope = DefaultKeyScope
	}
	if err := ValidateKeysURL(url); err != nil {
		return nil, err
	}
	keyRegistry.mu.Lock()
	if keyRegistry.entries == nil {
		keyRegistry.entries = map[string]*keysEntry{}
	}
	id := url
	if !strings.HasPrefix(url, "registered:") {
		id = url + "#" + scope
	}
	e, ok := keyRegistry.entries[id]
	if !ok {
		if strings.HasPrefix(url, "registered:") {
			keyRegistry.mu.Unlock()
			return nil, fmt.Errorf("%w %q: nothing registered under that name in this process", ErrKeysURL, url)
		}
		e = &keysEntry{}
		keyRegistry.entries[id] = e
	}
	keyRegistry.mu.Unlock()
	e.once.Do(func() {
		// The client outlives the context of the first DoFn's Setup.
		e.keys, e.err = openKeyService(context.WithoutCancel(ctx), url, scope, cmp.Or(cacheSize, DefaultKeyCacheSize))
		keyRegistry.mu.Lock()
		e.opened = e.err == nil
		keyRegistry.mu.Unlock()
	})
	return e.keys, e.err
}

var ciphers struct {
	mu    sync.Mutex
	cache *fieldcrypt.Cache
}

// DefaultKeyCacheSize is how many users' keys (keyclient's cache) and how
// many category keys' per-algorithm keys (fieldcrypt's cache) a worker
// keeps unless told otherwise. Both hold key bytes and no pointer (package
// cache): ~0.4 KB per user and ~0.25 KB per category key, so ~160 MB when
// both are full; the 1M-event benchmark's 50k users and ~250k keys take
// ~80 MB. AES state is built where a value is sealed, not cached. A key
// miss costs a share of a key-service round trip, a derived-key miss
// ~1.2 µs of HKDF.
const DefaultKeyCacheSize = 250_000

// sharedCiphers is the process-wide cache of derived keys of the
// anonymizers and decryptors; the first caller sets its capacity (0 means
// DefaultKeyCacheSize) until DropKeyCaches.
func sharedCiphers(capacity int) *fieldcrypt.Cache {
	ciphers.mu.Lock()
	defer ciphers.mu.Unlock()
	if ciphers.cache == nil {
		ciphers.cache = fieldcrypt.NewCache(cmp.Or(capacity, DefaultKeyCacheSize), 0)
	}
	return ciphers.cache
}

// DropKeyCaches lets go of what this process caches for encryption: the
// anonymizers' shared cipher cache (DoFns already set up keep theirs), and
// what every key source opened or registered here holds in its cache
// (sources with a Purge method, as keyclient.Client, whose Purge also
// empties the cache of an in-process "local:DIR" key service). pipelines.Ingest
// calls it when its run has ended: a process that goes on to publish hours
// or decrypt (the demo, tests, benchmarks, a scheduler running jobs one
// after another) would otherwise keep hundreds of MB of keys and built
// ciphers, the largest pointerful heap of the process, for every GC cycle
// of the next job to mark. A run still going in the process only fetches
// and builds again what it needs.
func DropKeyCaches() {
	ciphers.mu.Lock()
	ciphers.cache = nil
	ciphers.mu.Unlock()
	var opened []keyclient.Keys
	keyRegistry.mu.Lock()
	for _, e := range keyRegistry.entries {
		if e.opened {
			opened = append(opened, e.keys)
		}
	}
	keyRegistry.mu.Unlock()
	for _, k := range opened {
		if p, ok := k.(interface{ Purge() }); ok {
			p.Purge()
		}
	}
}

// Counters of the write stage (MetricsNamespace) for what the workers' key
// caches did: users looked up, answered from the key client's cache,
// key-service calls (retries included), and ciphers found built or built.
// The key source and cipher cache are shared by every writeFn of a worker,
// so the figures are per process, each reported by whichever batch comes
// next (reportKeyActivity); a run's totals add them up over its workers.
// The share of a bundle that fails and is retried can be lost.
const (
	CountKeyLookups   = "key_lookups"
	CountKeyCacheHits = "key_cache_hits"
	CountKeyCalls     = "key_service_calls"
	CountCipherHits   = "cipher_cache_hits"
	CountCiphersBuilt = "ciphers_built"
)

// keyActivity is what reportKeyActivity last reported, per key source and
// for the cipher cache.
var keyActivity struct {
	mu           sync.Mutex
	sources      map[statser]keyclient.Stats
	cache        *fieldcrypt.Cache
	hits, misses uint64
}

// statser is a key source that counts its lookups (keyclient.Client).
type statser interface{ Stats() keyclient.Stats }

// reportKeyActivity adds to the counters what keys and ciphers did since
// this process last reported them.
func reportKeyActivity(ctx context.Context, run string, keys keyclient.Keys, ciphers *fieldcrypt.Cache) {
	var d keyclient.Stats
	keyActivity.mu.Lock()
	if s, ok := keys.(statser); ok {
		if keyActivity.sources == nil {
			keyActivity.sources = map[statser]keyclient.Stats{}
		}
		now, last := s.Stats(), keyActivity.sources[s]
		d = keyclient.Stats{Lookups: now.Lookups - last.Lookups, CacheHits: now.CacheHits - last.CacheHits, RPCs: now.RPCs - last.RPCs}
		keyActivity.sources[s] = now
	}
	if ciphers != keyActivity.cache { // DropKeyCaches made a new one
		keyActivity.cache, keyActivity.hits, keyActivity.misses = ciphers, 0, 0
	}
	hits, misses := ciphers.Stats()
	dHits, dMisses := hits-keyActivity.hits, misses-keyActivity.misses
	keyActivity.hits, keyActivity.misses = hits, misses
	keyActivity.mu.Unlock()

	counts := make(map[string]int64, 5)
	for _, c := range [...]struct {
		name string
		n    int64
	}{
		{CountKeyLookups, d.Lookups}, {CountKeyCacheHits, d.CacheHits}, {CountKeyCalls, d.RPCs},
		{CountCipherHits, int64(dHits)}, {CountCiphersBuilt, int64(dMisses)},
	} {
		if c.n > 0 {
			beam.NewCounter(MetricsNamespace, c.name).Inc(ctx, c.n)
			counts[c.name] = c.n
		}
	}
	addRunCounts(run, counts)
}
