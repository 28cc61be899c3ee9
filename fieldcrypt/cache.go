package fieldcrypt

import (
	"container/list"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Cache keeps built ciphers per category key, least recently used first out,
// with an optional time to live. A hit is returned only when the cached
// cipher was built from the very same key material, so a changed key can
// never be served from the cache. It is safe for concurrent use.
//
// A memoized key (CategoryKey.Memoized) whose cipher the cache already
// built is answered from the key's own slot, without the cache's lock or
// lookup (which were a sixth of ingest's CPU, once per encrypted field);
// the slot is emptied when the cache evicts, expires or forgets the cipher.
type Cache struct {
	mu    sync.Mutex
	cap   int
	ttl   time.Duration
	now   func() time.Time
	ll    *list.List
	items map[cacheID]*list.Element

	hits, misses atomic.Uint64
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
	memos   []*cipherMemo // slots filled with this cipher
}

// cipherMemo is the slot of a memoized key.
type cipherMemo struct{ p atomic.Pointer[memoized] }

type memoized struct {
	src     *byte // the key material the cipher was built from (identity)
	n       int
	version int
	expires time.Time // zero: no TTL
	cipher  *Cipher
}

// answers reports whether m holds the cipher of k's very key material
// (and, with a TTL, is unexpired).
func (m *memoized) answers(k CategoryKey, now func() time.Time) bool {
	return m.src == unsafe.SliceData(k.Secret.b) && m.n == len(k.Secret.b) && m.version == k.Version &&
		(m.expires.IsZero() || now().Before(m.expires))
}

// clock reads the cache's clock (SetClock may replace it).
func (c *Cache) clock() time.Time {
	c.mu.Lock()
	now := c.now
	c.mu.Unlock()
	return now()
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
	if k.memo != nil {
		if m := k.memo.p.Load(); m != nil && m.answers(k, c.clock) {
			c.hits.Add(1)
			return m.cipher, nil
		}
	}
	id := cacheID{k.Subject, k.Category, k.Version}
	c.mu.Lock()
	if el, ok := c.items[id]; ok {
		e := el.Value.(*cacheEntry)
		if e.secret.Equal(k.Secret) && (c.ttl == 0 || c.now().Before(e.expires)) {
			c.ll.MoveToFront(el)
			c.remember(e, k)
			c.hits.Add(1)
			c.mu.Unlock()
			return e.cipher, nil
		}
		c.drop(el)
	}
	c.misses.Add(1)
	c.mu.Unlock()

	ci, err := NewCipher(k)
	if err != nil {
		return nil, err
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[id]; ok { // another goroutine built it meanwhile
		c.drop(el)
	}
	e := &cacheEntry{id: id, secret: k.Secret, cipher: ci}
	if c.ttl > 0 {
		e.expires = c.now().Add(c.ttl)
	}
	c.items[id] = c.ll.PushFront(e)
	c.remember(e, k)
	for c.ll.Len() > c.cap {
		c.drop(c.ll.Back())
	}
	return ci, nil
}

// remember fills k's slot with e's cipher (c.mu held).
func (c *Cache) remember(e *cacheEntry, k CategoryKey) {
	if k.memo == nil {
		return
	}
	if m := k.memo.p.Load(); m != nil && m.cipher == e.cipher {
		return
	}
	if len(e.memos) == maxMemosPerCipher {
		// The oldest slot gives way (a holder that refreshed its key made a
		// new one; the old is usually gone with its cache entry).
		empty(e.memos[0], e.cipher)
		e.memos = append(e.memos[:0], e.memos[1:]...)
	}
	k.memo.p.Store(&memoized{src: unsafe.SliceData(k.Secret.b), n: len(k.Secret.b), version: k.Version, expires: e.expires, cipher: e.cipher})
	e.memos = append(e.memos, k.memo)
}

// maxMemosPerCipher bounds the slots one cached cipher fills.
const maxMemosPerCipher = 4

// empty clears slot m if it still holds cipher.
func empty(m *cipherMemo, cipher *Cipher) {
	if p := m.p.Load(); p != nil && p.cipher == cipher {
		m.p.CompareAndSwap(p, nil)
	}
}

// drop removes an entry and empties the slots it filled (c.mu held).
func (c *Cache) drop(el *list.Element) {
	e := el.Value.(*cacheEntry)
	for _, m := range e.memos {
		empty(m, e.cipher)
	}
	c.ll.Remove(el)
	delete(c.items, e.id)
}

// ForgetSubject drops every cipher of a subject (after a shred or revoke).
func (c *Cache) ForgetSubject(subject string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, el := range c.items {
		if id.subject == subject {
			c.drop(el)
		}
	}
}

// Capacity is the most ciphers the cache keeps.
func (c *Cache) Capacity() int { return c.cap }

// Len is the number of cached ciphers.
func (c *Cache) Len() int { c.mu.Lock(); defer c.mu.Unlock(); return c.ll.Len() }

// Stats returns hit and miss counts since creation.
func (c *Cache) Stats() (hits, misses uint64) { return c.hits.Load(), c.misses.Load() }
