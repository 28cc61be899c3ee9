package fieldcrypt

import (
	"container/list"
	"sync"
	"time"
)

// Cache keeps built ciphers per category key, least recently used first out,
// with an optional time to live. A hit is returned only when the cached
// cipher was built from the very same key material, so a changed key can
// never be served from the cache. It is safe for concurrent use.
type Cache struct {
	mu    sync.Mutex
	cap   int
	ttl   time.Duration
	now   func() time.Time
	ll    *list.List
	items map[cacheID]*list.Element

	hits, misses uint64
}

type cacheID struct {
	subject, category string
	version           int
}

type cacheEntry struct {
	id      cacheID
	secret  Secret
	cipher  *Cipher
	expires time.Time
}

// NewCache returns a cache of at most capacity ciphers (minimum 1); ttl 0
// keeps entries until evicted.
func NewCache(capacity int, ttl time.Duration) *Cache {
	if capacity < 1 {
		capacity = 1
	}
	return &Cache{cap: capacity, ttl: ttl, now: time.Now, ll: list.New(), items: make(map[cacheID]*list.Element)}
}

// SetClock replaces the clock (tests).
func (c *Cache) SetClock(now func() time.Time) { c.mu.Lock(); c.now = now; c.mu.Unlock() }

// Cipher returns the cipher of k, building and caching it on a miss.
func (c *Cache) Cipher(k CategoryKey) (*Cipher, error) {
	id := cacheID{k.Subject, k.Category, k.Version}
	c.mu.Lock()
	if el, ok := c.items[id]; ok {
		e := el.Value.(*cacheEntry)
		if e.secret.Equal(k.Secret) && (c.ttl == 0 || c.now().Before(e.expires)) {
			c.ll.MoveToFront(el)
			c.hits++
			c.mu.Unlock()
			return e.cipher, nil
		}
		c.ll.Remove(el)
		delete(c.items, id)
	}
	c.misses++
	c.mu.Unlock()

	ci, err := NewCipher(k)
	if err != nil {
		return nil, err
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[id]; ok { // another goroutine built it meanwhile
		c.ll.Remove(el)
		delete(c.items, id)
	}
	e := &cacheEntry{id: id, secret: k.Secret, cipher: ci}
	if c.ttl > 0 {
		e.expires = c.now().Add(c.ttl)
	}
	c.items[id] = c.ll.PushFront(e)
	for c.ll.Len() > c.cap {
		old := c.ll.Back()
		c.ll.Remove(old)
		delete(c.items, old.Value.(*cacheEntry).id)
	}
	return ci, nil
}

// ForgetSubject drops every cipher of a subject (after a shred or revoke).
func (c *Cache) ForgetSubject(subject string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, el := range c.items {
		if id.subject == subject {
			c.ll.Remove(el)
			delete(c.items, id)
		}
	}
}

// Len is the number of cached ciphers.
func (c *Cache) Len() int { c.mu.Lock(); defer c.mu.Unlock(); return c.ll.Len() }

// Stats returns hit and miss counts since creation.
func (c *Cache) Stats() (hits, misses uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits, c.misses
}
