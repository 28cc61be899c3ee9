package keyservice

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"sync/atomic"
	"time"

	"github.com/lockstream/lockstream/cache"
)

// lru is the service's in-process cache of rows (user index entries,
// keychains, the policies) with per-entry expiry; safe for concurrent use.
// It is lockstream's one cache (package cache: sharded maps behind
// read-write locks, CLOCK eviction, a read takes its shard's read lock
// for one map lookup), with the expiry kept in the value: an expired
// entry is never returned by get, but stays (counted in the capacity)
// until put replaces it, del removes it or it is evicted, so that a
// refresh can see what it held (expired) and renew it when the store says
// the row is unchanged.
type lru struct {
	renewals atomic.Uint64 // expired entries served again by renew

	c *cache.Cache[ckey, lruValue]
}

// stats are get's answers since the cache was made (an expired entry is
// a miss): the cache counts them, get being its only Peek.
func (c *lru) stats() (hits, misses uint64) { return c.c.Stats() }

type lruValue struct {
	val     any
	expires time.Time
	writes  uint64 // the store's write count for the row when read (Item.Writes); 0: unknown
}

// lruShards is the number of shards (their index maps and slots).
const lruShards = 64

// hashCKey spreads keys over the shards. User and long-subject ids are
// hashes, and subjects random: the id's first bytes spread keys well,
// mixed with the kind and the next bytes in case some are not.
func hashCKey(key ckey) uint64 {
	h := binary.LittleEndian.Uint64(key.id[:8]) ^ binary.LittleEndian.Uint64(key.id[8:16]) ^ uint64(key.kind)
	return h * 0x9E3779B97F4A7C15
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

func newLRU(capacity int) *lru {
	if capacity <= 0 {
		return nil
	}
	return &lru{c: cache.NewHashed[ckey, lruValue](capacity, cache.Options{Shards: lruShards}, hashCKey)}
}

func (c *lru) get(key ckey, now time.Time) (any, bool) {
	if c == nil {
		return nil, false
	}
	var v any
	if !c.c.Peek(key, func(lv *lruValue) bool {
		v = lv.val
		return now.Before(lv.expires)
	}) {
		return nil, false
	}
	return v, true
}

// expired returns the value under key if it is there but expired (it is
// never served; the caller may reuse work derived from it when what it
// reads again from the store is byte-identical).
func (c *lru) expired(key ckey, now time.Time) (any, bool) {
	if c == nil {
		return nil, false
	}
	// Read under Update, which counts nothing: the miss is get's, which
	// came first. The entry read counts as referenced, as the caller may
	// renew it.
	var v any
	ok := false
	c.c.Update(key, func(lv *lruValue) bool {
		if !now.Before(lv.expires) {
			v, ok = lv.val, true
		}
		return ok
	})
	return v, ok
}

// renew serves the expired entry under key again, until expires, when it
// was read at the store write count writes (not 0): the row is unchanged
// (see LocalWriter). It answers false when the entry is absent, fresh (get
// serves those) or read at another count.
func (c *lru) renew(key ckey, now time.Time, writes uint64, expires time.Time) (any, bool) {
	if c == nil || writes == 0 {
		return nil, false
	}
	var v any
	renewed := false
	c.c.Update(key, func(lv *lruValue) bool {
		if now.Before(lv.expires) || lv.writes != writes {
			return false
		}
		lv.expires = expires
		v, renewed = lv.val, true
		return true
	})
	if !renewed {
		return nil, false
	}
	c.renewals.Add(1)
	return v, true
}

// put stores val under key until expires; writes is Item.Writes of the
// row it was made from (0 if none or several).
func (c *lru) put(key ckey, val any, expires time.Time, writes uint64) {
	if c == nil {
		return
	}
	c.c.Put(key, lruValue{val: val, expires: expires, writes: writes})
}

func (c *lru) del(key ckey) {
	if c == nil {
		return
	}
	c.c.Delete(key)
}

// purge drops every entry. Readers holding one keep a valid value; the
// next get of any key misses and reads the store again.
func (c *lru) purge() {
	if c == nil {
		return
	}
	c.c.Purge()
}

func (c *lru) len() int {
	if c == nil {
		return 0
	}
	return c.c.Len()
}
