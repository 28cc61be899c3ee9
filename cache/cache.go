// Package cache is lockstream's one in-memory cache: a bounded map with a
// time to live per entry and CLOCK (second chance) eviction, an
// approximation of least recently used that a read does not have to lock
// exclusively.
//
// # Behavior
//
// A Cache[K, V] holds up to its capacity of entries, spread over shards
// by the hash of the key. Get returns a copy of a live entry's value (an
// expired entry is a miss) and marks it referenced; Put inserts or
// replaces; when the cache is full, the hand of the new entry's shard
// sweeps its slots, clearing reference marks, and evicts the first entry
// not referenced since the hand last passed (or expired).
//
// Entries live in one slot array per shard, indexed by a map from key to
// slot. When K and V hold no pointers (arrays, integers, structs of
// them), neither does any part of the cache: the garbage collector never
// scans it, whatever its size. That is what fieldcrypt's cache of
// per-algorithm keys relies on.
//
// Blobs is the same cache for keys and values that are byte strings: one
// index of 16-byte slots per shard, and arenas holding each entry's
// expiry, key and value side by side, with no pointer per entry. A lookup
// touches a slot and one record; a hit copies the value out (or reads it
// in place, PeekAt). The key client keeps its users' key bytes there:
// hundreds of thousands of cached keys used to be millions of pointers
// marked on every GC cycle, and a lookup's reads spread over as many
// places (the id, the entry, its keys, its subject).
//
// # Guarantees
//
//   - Safe for concurrent use. Get takes its shard's read lock only; Put,
//     Delete and eviction take the shard's write lock.
//   - An entry is never returned after its expiry (the Now of Options).
//   - Len never exceeds the capacity by more than the number of shards (a
//     full cache makes room in the new entry's shard; a shard with no
//     entry cannot; a Blobs shard holds at most its share, rounded up).
//   - Blobs refuses (PutUntil reports false, and keeps the entry it had) a
//     key and value longer than MaxBlob together.
package cache

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a Cache. Zero values pick the defaults.
type Options struct {
	// TTL is the lifetime of an entry put with Put (0: until evicted).
	TTL time.Duration
	// Shards splits the cache (default 16; fewer, so that each holds at
	// least 64 entries).
	Shards int
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Cache is a bounded map with a TTL and CLOCK eviction.
type Cache[K comparable, V any] struct {
	ttl    time.Duration
	now    func() time.Time
	hash   func(K) uint64 // picks a key's shard
	shards []shard[K, V]
	cap    int64
	count  atomic.Int64 // entries in every shard
}

type shard[K comparable, V any] struct {
	mu    sync.RWMutex
	index map[K]int32
	slots []slot[K, V]
	free  []int32 // slots emptied by Delete
	hand  int
	// hits and misses are counted per shard: one pair of counters for the
	// whole cache, written by every lookup from every core, cost more than
	// the lookups (BenchmarkLRUGet in keyservice: 238-241 ns per lookup on
	// 2 cores against 154 on 1).
	hits, misses atomic.Uint64
	_            [24]byte // keeps shards' locks on cache lines of their own
}

type slot[K comparable, V any] struct {
	key     K
	val     V
	expires int64 // Unix nanoseconds; 0: none
	ref     atomic.Bool
	used    bool
}

// shards is how many shards a cache of capacity entries has: Shards
// (default 16), but fewer so that each holds at least 64 entries (a shard
// of a few would evict its hot ones).
func (o Options) shards(capacity int) int {
	n := o.Shards
	if n <= 0 {
		n = 16
	}
	return max(1, min(n, capacity/64))
}

// New returns a cache of at most capacity entries (minimum 1).
func New[K comparable, V any](capacity int, o Options) *Cache[K, V] {
	seed := maphash.MakeSeed()
	return NewHashed[K, V](capacity, o, func(k K) uint64 { return maphash.Comparable(seed, k) })
}

// NewHashed is New with the hash that spreads keys over the shards (for
// keys cheaper to hash than maphash's generic hash of a comparable value,
// such as keys that are random bytes already).
func NewHashed[K comparable, V any](capacity int, o Options, hash func(K) uint64) *Cache[K, V] {
	capacity = max(capacity, 1)
	n := o.shards(capacity)
	c := &Cache[K, V]{ttl: o.TTL, now: o.Now, hash: hash, shards: make([]shard[K, V], n), cap: int64(capacity)}
	if c.now == nil {
		c.now = time.Now
	}
	for i := range c.shards {
		c.shards[i].index = make(map[K]int32)
	}
	return c
}

// shard returns k's shard. The hash only picks the shard: one that merely
// spreads keys, as NewHashed allows, never makes two keys one.
func (c *Cache[K, V]) shard(k K) *shard[K, V] {
	return &c.shards[c.hash(k)%uint64(len(c.shards))]
}

// find returns the slot of k (mu held).
func (sh *shard[K, V]) find(k K) (*slot[K, V], int32, bool) {
	i, ok := sh.index[k]
	if !ok {
		return nil, 0, false
	}
	return &sh.slots[i], i, true
}

// Get returns the value of a live entry.
func (c *Cache[K, V]) Get(k K) (V, bool) {
	sh := c.shard(k)
	sh.mu.RLock()
	s, _, ok := sh.find(k)
	if !ok {
		sh.mu.RUnlock()
		sh.misses.Add(1)
		var zero V
		return zero, false
	}
	if s.expires != 0 && c.now().UnixNano() >= s.expires {
		sh.mu.RUnlock()
		sh.misses.Add(1)
		var zero V
		return zero, false
	}
	if !s.ref.Load() {
		s.ref.Store(true) // written once per pass of the hand, not per hit
	}
	v := s.val
	sh.mu.RUnlock()
	sh.hits.Add(1)
	return v, true
}

// Peek calls f with a pointer to the value of k's live entry, under the
// entry's read lock, without copying it (for large values); f must not
// keep the pointer or modify the value, nor use the cache. f reports
// whether the entry answers its caller (a value with an expiry of its own
// may not): Peek returns that, false when k has no live entry, and counts
// a hit when the entry answers, a miss otherwise.
func (c *Cache[K, V]) Peek(k K, f func(*V) bool) bool {
	sh := c.shard(k)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	s, _, ok := sh.find(k)
	if !ok {
		sh.misses.Add(1)
		return false
	}
	if s.expires != 0 && c.now().UnixNano() >= s.expires {
		sh.misses.Add(1)
		return false
	}
	if !s.ref.Load() {
		s.ref.Store(true)
	}
	if !f(&s.val) {
		sh.misses.Add(1)
		return false
	}
	sh.hits.Add(1)
	return true
}

// Update calls f with a pointer to the value of k's live entry under the
// shard's write lock, so that f may change it in place (a compare and
// swap: f decides from what it finds); it reports whether the entry was
// there. An entry f changed counts as referenced.
func (c *Cache[K, V]) Update(k K, f func(*V) bool) bool {
	sh := c.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s, _, ok := sh.find(k)
	if !ok {
		return false
	}
	if s.expires != 0 && c.now().UnixNano() >= s.expires {
		return false
	}
	if f(&s.val) {
		s.ref.Store(true)
	}
	return true
}

// GetOrPut returns the value of k's live entry, or, when there is none,
// puts mk()'s (to live for the cache's TTL) and returns it: concurrent
// callers for one key get the same value (mk runs with the key's shard
// locked: keep it cheap).
func (c *Cache[K, V]) GetOrPut(k K, mk func() V) V {
	if v, ok := c.Get(k); ok {
		return v
	}
	sh := c.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := c.now()
	if s, _, ok := sh.find(k); ok {
		if s.expires == 0 || now.UnixNano() < s.expires {
			s.ref.Store(true)
			return s.val
		}
	}
	v := mk()
	var exp int64
	if c.ttl > 0 {
		exp = now.Add(c.ttl).UnixNano()
	}
	c.put(sh, k, v, exp, now.UnixNano())
	return v
}

// Put inserts or replaces k's entry, to live for the cache's TTL.
func (c *Cache[K, V]) Put(k K, v V) {
	var exp time.Time
	if c.ttl > 0 {
		exp = c.now().Add(c.ttl)
	}
	c.PutUntil(k, v, exp)
}

// PutUntil inserts or replaces k's entry, to live until expires (zero:
// until evicted).
func (c *Cache[K, V]) PutUntil(k K, v V, expires time.Time) {
	var exp int64
	if !expires.IsZero() {
		exp = expires.UnixNano()
	}
	sh := c.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	c.put(sh, k, v, exp, c.now().UnixNano())
}

// put inserts or replaces k's entry in its shard sh (sh.mu held). When the
// cache is full, the new entry takes the place of one of the same shard
// (a shard may hold more than its share, the cache never more than its
// capacity but for a new entry of a shard with no entry at all, which
// cannot make room: at most one such entry per shard).
func (c *Cache[K, V]) put(sh *shard[K, V], k K, v V, exp, now int64) {
	if i, ok := sh.index[k]; ok {
		s := &sh.slots[i]
		s.val, s.expires = v, exp
		s.ref.Store(true) // fetched again while cached: in use
		return
	}
	var i int32
	switch {
	case c.reserve():
		i = sh.newSlot()
	case len(sh.index) > 0:
		i = sh.evict(now)
	default:
		c.count.Add(1) // full, and nothing of this shard's to evict
		i = sh.newSlot()
	}
	s := &sh.slots[i]
	s.key, s.val, s.expires, s.used = k, v, exp, true
	s.ref.Store(false) // a new entry read only once goes at the hand's next pass
	sh.index[k] = i
}

// reserve counts one more entry if the cache has room for it. Shards put
// under locks of their own: a count read, then added to, would let two of
// them take the last room at once.
func (c *Cache[K, V]) reserve() bool {
	for {
		n := c.count.Load()
		if n >= c.cap {
			return false
		}
		if c.count.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// newSlot returns an empty slot: one Delete emptied, else a new one (mu
// held; the caller counted the entry).
func (sh *shard[K, V]) newSlot() int32 {
	if n := len(sh.free); n > 0 {
		i := sh.free[n-1]
		sh.free = sh.free[:n-1]
		return i
	}
	sh.slots = append(sh.slots, slot[K, V]{})
	return int32(len(sh.slots) - 1)
}

// evict empties a slot and returns it (the shard is full; mu held): the
// first expired entry or entry unreferenced since the hand last passed.
func (sh *shard[K, V]) evict(now int64) int32 {
	for {
		if sh.hand >= len(sh.slots) {
			sh.hand = 0
		}
		i := sh.hand
		sh.hand++
		s := &sh.slots[i]
		if !s.used {
			continue
		}
		if s.ref.Load() && (s.expires == 0 || now < s.expires) {
			s.ref.Store(false)
			continue
		}
		delete(sh.index, s.key)
		sh.clear(int32(i))
		return int32(i)
	}
}

// clear zeroes a slot (so that it keeps nothing alive).
func (sh *shard[K, V]) clear(i int32) {
	s := &sh.slots[i]
	var zk K
	var zv V
	s.key, s.val, s.expires, s.used = zk, zv, 0, false
	s.ref.Store(false)
}

// Delete removes k's entry.
func (c *Cache[K, V]) Delete(k K) {
	sh := c.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, i, ok := sh.find(k); ok {
		delete(sh.index, k)
		sh.clear(i)
		sh.free = append(sh.free, i)
		c.count.Add(-1)
	}
}

// DeleteFunc removes every entry for which f returns true and returns how
// many it removed (f runs with the entry's shard locked: keep it short,
// and do not use the cache from it).
func (c *Cache[K, V]) DeleteFunc(f func(K, V) bool) int {
	n := 0
	for si := range c.shards {
		sh := &c.shards[si]
		sh.mu.Lock()
		for i := range sh.slots {
			s := &sh.slots[i]
			if s.used && f(s.key, s.val) {
				delete(sh.index, s.key)
				sh.clear(int32(i))
				sh.free = append(sh.free, int32(i))
				c.count.Add(-1)
				n++
			}
		}
		sh.mu.Unlock()
	}
	return n
}

// Purge removes every entry and lets go of the memory.
func (c *Cache[K, V]) Purge() {
	for si := range c.shards {
		sh := &c.shards[si]
		sh.mu.Lock()
		c.count.Add(-int64(len(sh.index)))
		sh.index = make(map[K]int32)
		sh.slots, sh.free, sh.hand = nil, nil, 0
		sh.mu.Unlock()
	}
}

// Len is the number of entries (expired ones not yet evicted included).
func (c *Cache[K, V]) Len() int {
	n := 0
	for si := range c.shards {
		sh := &c.shards[si]
		sh.mu.RLock()
		n += len(sh.index)
		sh.mu.RUnlock()
	}
	return n
}

// Capacity is the most entries the cache holds.
func (c *Cache[K, V]) Capacity() int { return int(c.cap) }

// Stats are the hits and misses of Get and Peek since the cache was made.
func (c *Cache[K, V]) Stats() (hits, misses uint64) {
	for i := range c.shards {
		hits += c.shards[i].hits.Load()
		misses += c.shards[i].misses.Load()
	}
	return hits, misses
}
