package keyclient

import (
	"container/list"
	"sync"
	"time"

	"github.com/lockstream/lockstream/fieldcrypt"
)

// entryKind separates the by-user (encrypt) and by-subject (decrypt) spaces.
type entryKind uint8

const (
	kindUser    entryKind = 1 // id is a user id; keys hold the current version
	kindSubject entryKind = 2 // id is a subject; keys hold every live version
)

// cacheKey names one (user or subject, category) pair; category "" is the
// negative entry of the whole user or subject.
type cacheKey struct {
	kind     entryKind
	id       string
	category string
}

type cacheEntry struct {
	key     cacheKey
	subject string
	keys    []fieldcrypt.CategoryKey
	revoked bool
	err     error // negative entries only
	expires time.Time
}

// keyCache is an LRU of derived keys with a time to live; negative entries
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

// get returns a live entry; the entry must not be modified.
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
