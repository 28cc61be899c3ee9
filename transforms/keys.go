package transforms

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

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

// ValidateKeysURL checks the form of a keys URL without opening it.
func ValidateKeysURL(url string) error {
	switch {
	case strings.HasPrefix(url, "registered:") && len(url) > len("registered:"):
	case strings.HasPrefix(url, "local:") && len(url) > len("local:"):
	case strings.HasPrefix(url, "http://"), strings.HasPrefix(url, "https://"):
	default:
		return fmt.Errorf("%w %q: want local:DIR, http(s)://host:port or registered:NAME", ErrKeysURL, url)
	}
	return nil
}

// OpenKeys returns the process-wide key source for url and scope (scope ""
// means DefaultKeyScope; registered sources ignore it), opening it on first
// use.
func OpenKeys(ctx context.Context, url, scope string) (keyclient.Keys, error) {
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
		e.keys, e.err = openKeyService(context.WithoutCancel(ctx), url, scope)
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

// cipherCacheSize is the number of built ciphers (one per user, category
// and key version) a worker keeps: about 1.2 KB each, so 300 MB when full.
// A miss costs ~2.5 µs (HKDF + AES-GCM setup). 100k thrashed on the 1M
// benchmark's ~160k active keys (38% misses).
const cipherCacheSize = 250_000

// sharedCiphers is the process-wide cipher cache of the anonymizers.
func sharedCiphers() *fieldcrypt.Cache {
	ciphers.mu.Lock()
	defer ciphers.mu.Unlock()
	if ciphers.cache == nil {
		ciphers.cache = fieldcrypt.NewCache(cipherCacheSize, 0)
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
