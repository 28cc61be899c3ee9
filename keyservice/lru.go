package keyservice

import (
	"container/list"
	"sync"
	"sync/atomic"
	"time"
)

// lru is a small LRU with per-entry expiry; safe for concurrent use. An
// expired entry is never returned by get; it stays (counted in the
// capacity) until put replaces it, del removes it or it is evicted, so that
// a refresh can see what it held (expired).
type lru struct {
	hits, misses atomic.Uint64 // get and getBytes answers (an expired entry is a miss)

	mu    sync.Mutex
	cap   int
	ll    *list.List
	items map[string]*list.Element
}

type lruEntry struct {
	key     string
	val     any
	expires time.Time
}

func newLRU(capacity int) *lru {
	if capacity <= 0 {
		return nil
	}
	return &lru{cap: capacity, ll: list.New(), items: make(map[string]*list.Element)}
}

func (c *lru) get(key string, now time.Time) (any, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	return c.answer(el, ok, now)
}

// answer finishes get and getBytes (c.mu held).
func (c *lru) answer(el *list.Element, ok bool, now time.Time) (any, bool) {
	if !ok {
		c.misses.Add(1)
		return nil, false
	}
	e := el.Value.(*lruEntry)
	if !now.Before(e.expires) {
		c.misses.Add(1)
		return nil, false // kept for expired(); replaced by put or evicted
	}
	c.hits.Add(1)
	c.ll.MoveToFront(el)
	return e.val, true
}

// getBytes is get with the key as bytes: the map lookup does not allocate
// a string for it (the warm path builds keys in a stack buffer).
func (c *lru) getBytes(key []byte, now time.Time) (any, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[string(key)]
	return c.answer(el, ok, now)
}

// expired returns the value under key if it is there but expired (it is
// never served; the caller may reuse work derived from it when what it
// reads again from the store is byte-identical).
func (c *lru) expired(key string, now time.Time) (any, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		if e := el.Value.(*lruEntry); !now.Before(e.expires) {
			return e.val, true
		}
	}
	return nil, false
}

func (c *lru) put(key string, val any, expires time.Time) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		e := el.Value.(*lruEntry)
		e.val, e.expires = val, expires
		c.ll.MoveToFront(el)
		return
	}
	c.items[key] = c.ll.PushFront(&lruEntry{key: key, val: val, expires: expires})
	for c.ll.Len() > c.cap {
		el := c.ll.Back()
		c.ll.Remove(el)
		delete(c.items, el.Value.(*lruEntry).key)
	}
}

func (c *lru) del(key string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	if el, ok := c.items[key]; ok {
		c.ll.Remove(el)
		delete(c.items, key)
	}
	c.mu.Unlock()
}
