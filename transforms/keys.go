package transforms

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/lockstream/lockstream/fieldcrypt"
	"github.com/lockstream/lockstream/keyclient"
)

// Key sources are opened once per process and configuration (URL, scope,
// cache size) and shared by every DoFn instance of the process: DoFns
// carry only the configuration (it is serialized with the pipeline), and
// "local:DIR" stores allow one opener per process. They live in env.
//
// URL forms:
//
//	registered:NAME         a source registered in this process with RegisterKeys or RegisterKeySource (tests, benchmarks, the demo)
//	local:DIR | http(s)://  opened with keyclient (see openKeyService)

// KeySourceOpener opens a registered key source for a scope and a cache of
// the keys of up to cacheSize users.
type KeySourceOpener func(ctx context.Context, scope string, cacheSize int) (keyclient.Keys, error)

// keyConfig is what makes a key environment: two DoFns with the same
// configuration share one.
type keyConfig struct {
	url, scope string
	cacheSize  int
}

// keyEnv is a key source and its cache of derived keys.
type keyEnv struct {
	once    sync.Once
	keys    keyclient.Keys
	ciphers *fieldcrypt.Cache
	err     error
	opened  atomic.Bool // keys and ciphers are set: DropKeyCaches may use them
	// The report baseline of keys (nil if it does not count its lookups).
	activity *sourceActivity

	mu           sync.Mutex // what reportKeyActivity last reported of ciphers
	hits, misses uint64
}

// RegisterKeys makes k available to DoFns of this process under the URL
// "registered:<name>", which it returns, whatever the scope and cache size
// asked (k has its own). Registering a name again replaces it for DoFns
// set up afterwards.
func RegisterKeys(name string, k keyclient.Keys) string {
	return RegisterKeySource(name, func(context.Context, string, int) (keyclient.Keys, error) { return k, nil })
}

// RegisterKeySource makes open the opener of the URL "registered:<name>",
// which it returns: DoFns set up afterwards open their key source with it,
// once per scope and cache size.
func RegisterKeySource(name string, open KeySourceOpener) string {
	url := "registered:" + name
	env.mu.Lock()
	defer env.mu.Unlock()
	if env.sources == nil {
		env.sources = map[string]KeySourceOpener{}
	}
	env.sources[url] = open
	for c := range env.keys {
		if c.url == url {
			delete(env.keys, c)
		}
	}
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

// OpenKeys returns the process's key source for url and scope (scope ""
// means DefaultKeyScope; cacheSize 0 means DefaultKeyCacheSize), opening
// it on first use with a cache of the keys of up to cacheSize users.
func OpenKeys(ctx context.Context, url, scope string, cacheSize int) (keyclient.Keys, error) {
	e, err := keyEnvFor(ctx, url, scope, cacheSize)
	if err != nil {
		return nil, err
	}
	return e.keys, nil
}

// keyEnvFor returns the key environment of a configuration, opening its
// key source and making its cache of derived keys (of cacheSize category
// keys) on first use.
func keyEnvFor(ctx context.Context, url, scope string, cacheSize int) (*keyEnv, error) {
	if err := ValidateKeysURL(url); err != nil {
		return nil, err
	}
	c := keyConfig{url: url, scope: cmp.Or(scope, DefaultKeyScope), cacheSize: cmp.Or(cacheSize, DefaultKeyCacheSize)}
	env.mu.Lock()
	open, registered := env.sources[url]
	if strings.HasPrefix(url, "registered:") && !registered {
		env.mu.Unlock()
		return nil, fmt.Errorf("%w %q: nothing registered under that name in this process", ErrKeysURL, url)
	}
	if env.keys == nil {
		env.keys = map[keyConfig]*keyEnv{}
	}
	e, ok := env.keys[c]
	if !ok {
		e = &keyEnv{}
		env.keys[c] = e
	}
	env.mu.Unlock()
	e.once.Do(func() {
		// The source outlives the context of the first DoFn's Setup.
		ctx := context.WithoutCancel(ctx)
		if registered {
			e.keys, e.err = open(ctx, c.scope, c.cacheSize)
		} else {
			e.keys, e.err = openKeyService(ctx, url, c.scope, c.cacheSize)
		}
		e.ciphers = fieldcrypt.NewCache(c.cacheSize, 0)
		if e.err == nil {
			e.activity = env.activityOf(e.keys)
		}
		e.opened.Store(e.err == nil)
	})
	if e.err != nil {
		return nil, e.err
	}
	return e, nil
}

// DefaultKeyCacheSize is how many users' keys (keyclient's cache) and how
// many category keys' per-algorithm keys (fieldcrypt's cache, for keys
// that come without them) a worker keeps unless told otherwise. A cached
// user is one object of ~150 bytes plus 128 per category (secret and
// derived AES-GCM and AES-SIV keys, no pointer): ~0.8 KB for the five
// categories of the benchmark's users, ~40 MB for its 50k users, ~200 MB
// when full. AES state is built where a value is sealed, not cached. A key
// miss costs a share of a key-service round trip and ~1.2 µs of HKDF.
const DefaultKeyCacheSize = 250_000

// DropKeyCaches lets go of what this process caches for encryption: every
// key environment's derived keys, and what its key source holds in its
// cache (sources with a Purge method, as keyclient.Client, whose Purge
// also empties the cache of an in-process "local:DIR" key service).
// pipelines.Ingest calls it when its run has ended: a process that goes on
// to publish hours or decrypt (the demo, tests, benchmarks, a scheduler
// running jobs one after another) would otherwise keep hundreds of MB of
// keys for the rest of its life. A run still going in the process only
// fetches and derives again what it needs.
func DropKeyCaches() {
	var opened []*keyEnv
	env.mu.Lock()
	for _, e := range env.keys {
		opened = append(opened, e)
	}
	env.mu.Unlock()
	for _, e := range opened {
		if !e.opened.Load() {
			continue
		}
		e.ciphers.Purge()
		if p, ok := e.keys.(interface{ Purge() }); ok {
			p.Purge()
		}
	}
}

// Counters of the write stage (MetricsNamespace) for what the workers' key
// caches did: users looked up, answered from the key client's cache,
// key-service calls (retries included), and ciphers found built (a key
// that came with its derived keys, or whose derived keys the cipher cache
// held) or built (derived: by the key client as each key arrives, or by
// the cipher cache for a key that came without).
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

// statser is a key source that counts its lookups (keyclient.Client).
type statser interface{ Stats() keyclient.Stats }

// reportKeyActivity adds to the counters what keys and ciphers did since
// this process last reported them.
func reportKeyActivity(ctx context.Context, rc *runCounter, e *keyEnv) {
	var d keyclient.Stats
	if a := e.activity; a != nil {
		a.mu.Lock()
		now, last := a.source.Stats(), a.last
		d = keyclient.Stats{Lookups: now.Lookups - last.Lookups, CacheHits: now.CacheHits - last.CacheHits, RPCs: now.RPCs - last.RPCs,
			Derived: now.Derived - last.Derived}
		a.last = now
		a.mu.Unlock()
	}
	e.mu.Lock()
	hits, misses := e.ciphers.Stats()
	dHits, dMisses := hits-e.hits, misses-e.misses
	e.hits, e.misses = hits, misses
	e.mu.Unlock()

	counts := make(map[string]int64, 5)
	for _, c := range [...]struct {
		name string
		n    int64
	}{
		{CountKeyLookups, d.Lookups}, {CountKeyCacheHits, d.CacheHits}, {CountKeyCalls, d.RPCs},
		{CountCipherHits, int64(dHits)}, {CountCiphersBuilt, int64(dMisses) + d.Derived},
	} {
		if c.n > 0 {
			beam.NewCounter(MetricsNamespace, c.name).Inc(ctx, c.n)
			counts[c.name] = c.n
		}
	}
	rc.add(counts)
}

// sourceActivity is what reportKeyActivity last reported of one key
// source. A registered source can serve several key environments: what it
// did is reported once, by whichever reports next.
type sourceActivity struct {
	source statser
	mu     sync.Mutex
	last   keyclient.Stats
}

// activityOf returns the report baseline of a key source that counts its
// lookups, nil for one that does not.
func (r *registry) activityOf(k keyclient.Keys) *sourceActivity {
	s, ok := k.(statser)
	if !ok {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.activity == nil {
		r.activity = map[statser]*sourceActivity{}
	}
	a := r.activity[s]
	if a == nil {
		a = &sourceActivity{source: s}
		r.activity[s] = a
	}
	return a
}
