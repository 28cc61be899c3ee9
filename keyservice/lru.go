package keyservice

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"sync"
	"sync/atomic"
	"time"
)

// lru is the service's in-process cache of rows (user index entries,
// keychains, the policies) with per-entry expiry; safe for concurrent use.
//
// The index is split into lruShards Go maps, each behind a read-write
// mutex: a read holds its shard's read lock for one map lookup, and a hit
// only sets the entry's reference bit, so readers never wait for each
// other, and a reader preempted by the OS delays only a writer of the same
// shard. Eviction is CLOCK (second chance), an approximation of
// least-recently-used: when more than cap entries are held, a hand sweeps
// the ring of entries, clearing reference bits, and evicts the first entry
// it finds without one. Puts, deletes and evictions share one mutex; gets
// never touch it. (The LRU list this replaced took a lock and moved list
// elements on every lookup, 200 per batch RPC: under load on 2 cores, a
// lock holder preempted by the OS stalled every request. The sync.Map that
// replaced it next took ~300 ns a lookup, walking its hash trie and
// comparing keys through interfaces: a third of the server's CPU in the
// load bench at 50% load.)
//
// An expired entry is never returned by get; it stays (counted in the
// capacity) until put replaces it, del removes it or it is evicted, so that
// a refresh can see what it held (expired).
type lru struct {
	hits, misses atomic.Uint64 // get answers (an expired entry is a miss)
	renewals     atomic.Uint64 // expired entries served again by renew

	cap    int
	shards [lruShards]lruShard

	mu   sync.Mutex // guards the fields below (taken before a shard's)
	ring []*lruEntry
	hand int
	live int // entries in the index
}

// lruShards is the number of index shards (a power of two).
const lruShards = 64

type lruShard struct {
	mu sync.RWMutex
	m  map[ckey]*lruEntry
	_  [64 - 8 - 24]byte // a cache line each: shards read on both cores do not share one
}

// shard is key's index shard. User and long-subject ids are hashes, and
// subjects random: the id's first bytes spread keys well, mixed with the
// kind and the next bytes in case some are not.
func (c *lru) shard(key ckey) *lruShard {
	h := binary.LittleEndian.Uint64(key.id[:8]) ^ binary.LittleEndian.Uint64(key.id[8:16]) ^ uint64(key.kind)
	h *= 0x9E3779B97F4A7C15
	return &c.shards[h>>(64-6)]
}

func (c *lru) load(key ckey) (*lruEntry, bool) {
	sh := c.shard(key)
	sh.mu.RLock()
	e, ok := sh.m[key]
	sh.mu.RUnlock()
	return e, ok
}

// store and remove change the index (c.mu held).
func (c *lru) store(key ckey, e *lruEntry) {
	sh := c.shard(key)
	sh.mu.Lock()
	sh.m[key] = e
	sh.mu.Unlock()
}

// remove deletes key from the index if it maps to e (any entry if e is nil)
// and reports whether it did.
func (c *lru) remove(key ckey, e *lruEntry) (*lruEntry, bool) {
	sh := c.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	old, ok := sh.m[key]
	if !ok || e != nil && old != e {
		return nil, false
	}
	delete(sh.m, key)
	return old, true
}

// ckey names a cache entry. It is a fixed-size value, not a string: the
// map's keys are then compared in place, without chasing a pointer to key
// bytes elsewhere in the heap (string keys of 66 bytes were a fifth of the
// server's CPU in the load bench), and hold no pointer for the garbage
// collector to trace.
type ckey struct {
	kind byte
	id   [32]byte
}

// Kinds of cache entries.
const (
	kindPolicies    byte = 'p' // the category policies (id zero)
	kindUser        byte = 'u' // a user's index entry, by the HMAC of the user id; value: its subject
	kindSubject     byte = 's' // a keychain, by its subject (ids up to 32 bytes, zero-padded)
	kindLongSubject byte = 'S' // a keychain by SHA-256 of a longer subject (never made by this service)
)

var policiesKey = ckey{kind: kindPolicies}

func userKey(sum [32]byte) ckey { return ckey{kind: kindUser, id: sum} }

// userKeyHex is userKey of the hex form of the sum (as in row keys).
func userKeyHex(hash string) ckey {
	k := ckey{kind: kindUser}
	if _, err := hex.Decode(k.id[:], []byte(hash)); err != nil || len(hash) != 2*len(k.id) {
		k.kind = 0 // not a sum: names no entry
	}
	return k
}

func subjectKey(subject string) ckey {
	if len(subject) > 32 {
		return ckey{kind: kindLongSubject, id: sha256.Sum256([]byte(subject))}
	}
	k := ckey{kind: kindSubject}
	copy(k.id[:], subject)
	return k
}

type lruEntry struct {
	key  ckey
	v    atomic.Pointer[lruValue]
	ref  atomic.Bool // read since the hand last passed
	gone atomic.Bool // deleted or evicted: no longer in the index (the hand drops it from the ring)
}

type lruValue struct {
	val     any
	expires time.Time
	writes  uint64 // the store's write count for the row when read (Item.Writes); 0: unknown
}

func newLRU(capacity int) *lru {
	if capacity <= 0 {
		return nil
	}
	c := &lru{cap: capacity}
	for i := range c.shards {
		c.shards[i].m = map[ckey]*lruEntry{}
	}
	return c
}

func (c *lru) get(key ckey, now time.Time) (any, bool) {
	if c == nil {
		return nil, false
	}
	e, ok := c.load(key)
	if !ok {
		c.misses.Add(1)
		return nil, false
	}
	v := e.v.Load()
	if !now.Before(v.expires) {
		c.misses.Add(1)
		return nil, false // kept for expired(); replaced by put or evicted
	}
	if !e.ref.Load() {
		e.ref.Store(true) // written once per sweep, not on every hit
	}
	c.hits.Add(1)
	return v.val, true
}

// expired returns the value under key if it is there but expired (it is
// never served; the caller may reuse work derived from it when what it
// reads again from the store is byte-identical).
func (c *lru) expired(key ckey, now time.Time) (any, bool) {
	if c == nil {
		return nil, false
	}
	if e, ok := c.load(key); ok {
		if v := e.v.Load(); !now.Before(v.expires) {
			return v.val, true
		}
	}
	return nil, false
}

// renew serves the expired entry under key again, until expires, when it
// was read at the store write count writes (not 0): the row is unchanged
// (see LocalWriter). It answers false when the entry is absent, fresh (get
// serves those) or read at another count.
func (c *lru) renew(key ckey, now time.Time, writes uint64, expires time.Time) (any, bool) {
	if c == nil || writes == 0 {
		return nil, false
	}
	e, ok := c.load(key)
	if !ok {
		return nil, false
	}
	v := e.v.Load()
	if now.Before(v.expires) || v.writes != writes {
		return nil, false
	}
	if !e.v.CompareAndSwap(v, &lruValue{val: v.val, expires: expires, writes: writes}) {
		return nil, false // replaced meanwhile
	}
	e.ref.Store(true)
	c.renewals.Add(1)
	return v.val, true
}

// put stores val under key until expires; writes is Item.Writes of the
// row it was made from (0 if none or several).
func (c *lru) put(key ckey, val any, expires time.Time, writes uint64) {
	if c == nil {
		return
	}
	nv := &lruValue{val: val, expires: expires, writes: writes}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.load(key); ok {
		e.v.Store(nv)
		e.ref.Store(true)
		return
	}
	e := &lruEntry{key: key}
	e.v.Store(nv)
	c.store(key, e)
	c.ring = append(c.ring, e)
	c.live++
	for c.live > c.cap {
		c.evictOne()
	}
}

func (c *lru) del(key ckey) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.remove(key, nil); ok {
		e.gone.Store(true)
		c.live--
		if len(c.ring) > 2*c.live+64 {
			c.compact()
		}
	}
}

// evictOne removes one entry, the first the hand finds unread since it last
// passed (c.mu held, c.live > 0).
func (c *lru) evictOne() {
	for {
		if c.hand >= len(c.ring) {
			c.hand = 0
		}
		e := c.ring[c.hand]
		switch {
		case e.gone.Load():
			c.removeAtHand()
		case e.ref.Load():
			e.ref.Store(false)
			c.hand++
		default:
			c.remove(e.key, e)
			e.gone.Store(true)
			c.live--
			c.removeAtHand()
			return
		}
	}
}

// removeAtHand drops the ring slot under the hand, moving the last slot
// into it (c.mu held).
func (c *lru) removeAtHand() {
	last := len(c.ring) - 1
	c.ring[c.hand] = c.ring[last]
	c.ring[last] = nil
	c.ring = c.ring[:last]
}

// compact drops deleted entries from the ring (c.mu held).
func (c *lru) compact() {
	live := c.ring[:0]
	for _, e := range c.ring {
		if !e.gone.Load() {
			live = append(live, e)
		}
	}
	clear(c.ring[len(live):])
	c.ring, c.hand = live, 0
}

// purge drops every entry. Readers holding one keep a valid value; the
// next get of any key misses and reads the store again.
func (c *lru) purge() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		for _, e := range sh.m {
			e.gone.Store(true)
		}
		sh.m = map[ckey]*lruEntry{}
		sh.mu.Unlock()
	}
	clear(c.ring)
	c.ring, c.hand, c.live = nil, 0, 0
}

func (c *lru) len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.live
}
