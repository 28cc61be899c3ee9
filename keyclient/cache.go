package keyclient

import (
	"container/list"
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

// keyCache is an LRU of entries with a time to live; negative entries
// (deleted users, unknown subjects) have their own, shorter one.
type keyCache struct {
	mu    sync.Mutex
	cap   int
	ll    *list.List
	items map[cacheKey]*list.Element
	now   func() time.Time
}

func newKeyCache(capacity int, now func() time.Time) *keyCache {
	return &keyCache{cap: capacity, ll: list.New(), items: make(map[cacheKey]*list.Element), now: now}
}

// get returns a live entry (at least one part unexpired); the entry must
// not be modified.
func (c *keyCache) get(k cacheKey) (*cacheEntry, bool) {
	if c.cap <= 0 {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[k]
	if !ok {
		return nil, false
	}
	e := el.Value.(*cacheEntry)
	if !c.now().Before(e.expires) {
		c.ll.Remove(el)
		delete(c.items, k)
		return nil, false
	}
	c.ll.MoveToFront(el)
	return e, true
}

func (c *keyCache) put(e *cacheEntry) {
	if c.cap <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[e.key]; ok {
		el.Value = e
		c.ll.MoveToFront(el)
		return
	}
	c.items[e.key] = c.ll.PushFront(e)
	for c.ll.Len() > c.cap {
		old := c.ll.Back()
		c.ll.Remove(old)
		delete(c.items, old.Value.(*cacheEntry).key)
	}
}

// forget drops every entry of one user id or subject (both spaces, matched by
// id and by the subject an entry holds).
func (c *keyCache) forget(idOrSubject string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, el := range c.items {
		if k.id == idOrSubject || el.Value.(*cacheEntry).subject == idOrSubject {
			c.ll.Remove(el)
			delete(c.items, k)
		}
	}
}

func (c *keyCache) len() int { c.mu.Lock(); defer c.mu.Unlock(); return c.ll.Len() }
