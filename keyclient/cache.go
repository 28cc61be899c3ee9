package keyclient

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockstream/lockstream/fieldcrypt"
)

// entryKind separates the by-user (encrypt) and by-subject (decrypt) spaces.
type entryKind uint8

const (
	kindUser    entryKind = 1 // id is a user id; keys hold the current version
	kindSubject entryKind = 2 // id is a subject; keys hold every live version
)

// cacheKey names the entry of one user id or subject.
type cacheKey struct {
	kind entryKind
	id   string
}

// cacheEntry is what the cache knows of one user or subject: either a
// negative answer (err: deleted, unknown) or the categories fetched so far,
// each with its own expiry. One entry per id, not per (id, category): a
// lookup of a user's categories is one map lookup, which was most of a
// pipeline's key-lookup CPU when it was one per category. Entries are
// immutable once in the cache; store replaces them.
type cacheEntry struct {
	key     cacheKey
	subject string
	err     error // negative entries only
	cats    []catEntry
	expires time.Time // the latest expiry of the entry's parts
	// answer memoizes the last answer built from this entry for one list of
	// categories: a pipeline asks the same list batch after batch, and
	// copying the keys for every user of every batch was most of the
	// cache's cost. Answers are shared, read-only.
	answer atomic.Pointer[cachedAnswer]

	ref  atomic.Bool // read since the eviction hand last passed
	slot int         // position in keyCache.ring (keyCache.mu)
}

type cachedAnswer struct {
	cats    []string
	keys    []fieldcrypt.CategoryKey
	revoked []string
	until   time.Time // the earliest expiry of the categories it holds
}

type catEntry struct {
	category string
	// keys are memoized (fieldcrypt.CategoryKey.Memoized): the cipher built
	// for one is found again through every copy the cache hands out.
	keys    []fieldcrypt.CategoryKey
	revoked bool
	expires time.Time
}

// cat returns the live part of e for category.
func (e *cacheEntry) cat(category string, now time.Time) (*catEntry, bool) {
	for i := range e.cats {
		if c := &e.cats[i]; c.category == category {
			return c, now.Before(c.expires)
		}
	}
	return nil, false
}

// keyCache is a cache of entries with a time to live (negative entries,
// deleted users and unknown subjects, have their own, shorter one) and a
// capacity, evicting by CLOCK (second chance), an approximation of least
// recently used.
//
// A lookup takes one shard's read lock for one map lookup and sets the
// entry's reference bit; it never waits for another lookup. (The
// mutex-guarded LRU list this replaced moved an element on every lookup,
// one per user of every batch: ~1.2 µs a lookup on 2 cores, an eighth of
// ingest's CPU.) Puts, forgets and evictions take c.mu, then a shard's
// write lock.
type keyCache struct {
	cap    int
	now    func() time.Time
	seed   maphash.Seed
	shards [cacheShards]cacheShard

	mu   sync.Mutex // guards ring and hand, and each entry's slot
	ring []*cacheEntry
	hand int
}

const cacheShards = 32

type cacheShard struct {
	mu sync.RWMutex
	m  map[cacheKey]*cacheEntry
	_  [64 - 8 - 24]byte // a cache line each
}

func newKeyCache(capacity int, now func() time.Time) *keyCache {
	c := &keyCache{cap: capacity, now: now, seed: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i].m = map[cacheKey]*cacheEntry{}
	}
	return c
}

func (c *keyCache) shard(k cacheKey) *cacheShard {
	return &c.shards[maphash.String(c.seed, k.id)%cacheShards]
}

// get returns a live entry (at least one part unexpired); the entry must
// not be modified. An expired entry stays until put replaces it or it is
// evicted.
func (c *keyCache) get(k cacheKey) (*cacheEntry, bool) {
	if c.cap <= 0 {
		return nil, false
	}
	sh := c.shard(k)
	sh.mu.RLock()
	e, ok := sh.m[k]
	sh.mu.RUnlock()
	if !ok || !c.now().Before(e.expires) {
		return nil, false
	}
	if !e.ref.Load() {
		e.ref.Store(true) // written once per sweep of the hand, not per hit
	}
	return e, true
}

func (c *keyCache) put(e *cacheEntry) {
	if c.cap <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	sh := c.shard(e.key)
	sh.mu.Lock()
	old, ok := sh.m[e.key]
	sh.m[e.key] = e
	sh.mu.Unlock()
	if ok {
		// Fetched again while cached: in use.
		e.ref.Store(true)
		e.slot = old.slot
		c.ring[e.slot] = e
		return
	}
	// A new entry starts unreferenced: one looked up only once goes at the
	// hand's next pass, before entries read since its last one.
	e.slot = len(c.ring)
	c.ring = append(c.ring, e)
	for len(c.ring) > c.cap {
		c.evictOne()
	}
}

// evictOne removes the first entry the hand finds unread since it last
// passed (c.mu held).
func (c *keyCache) evictOne() {
	for {
		if c.hand >= len(c.ring) {
			c.hand = 0
		}
		e := c.ring[c.hand]
		if e.ref.Load() {
			e.ref.Store(false)
			c.hand++
			continue
		}
		c.remove(e)
		return
	}
}

// remove drops e from its shard and the ring (c.mu held).
func (c *keyCache) remove(e *cacheEntry) {
	sh := c.shard(e.key)
	sh.mu.Lock()
	if sh.m[e.key] == e {
		delete(sh.m, e.key)
	}
	sh.mu.Unlock()
	last := len(c.ring) - 1
	moved := c.ring[last]
	c.ring[e.slot], moved.slot = moved, e.slot
	c.ring[last] = nil
	c.ring = c.ring[:last]
}

// forget drops every entry of one user id or subject (both spaces, matched by
// id and by the subject an entry holds).
func (c *keyCache) forget(idOrSubject string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := 0; i < len(c.ring); {
		if e := c.ring[i]; e.key.id == idOrSubject || e.subject == idOrSubject {
			c.remove(e) // moves the last entry to i
			continue
		}
		i++
	}
}

// purge drops every entry.
func (c *keyCache) purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		sh.m = map[cacheKey]*cacheEntry{}
		sh.mu.Unlock()
	}
	c.ring, c.hand = nil, 0
}

func (c *keyCache) len() int { c.mu.Lock(); defer c.mu.Unlock(); return len(c.ring) }
