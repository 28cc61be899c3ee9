package fieldcrypt

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/lockstream/lockstream/cache"
)

// Cache keeps the per-algorithm keys of category keys (Ciphers), so that
// a key met again is not derived again (HKDF: ~1.2 µs). Entries are keyed
// by the key material and version themselves, so a changed key can never
// be answered from the cache, and a shredded user's entries can no longer
// be found by anyone once the key service stops handing out their
// material. Keys and values hold no pointer: the garbage collector never
// scans the cache (package cache). It is safe for concurrent use.
type Cache struct {
	c       *cache.Cache[cacheKey, Cipher]
	derived atomic.Uint64 // answers for keys that carried their derived key (hits)
}

type cacheKey struct {
	secret  [CategoryKeySize]byte
	version uint32
}

// hashKey is the key material's first bytes: they are random already.
func hashKey(k cacheKey) uint64 { return binary.LittleEndian.Uint64(k.secret[:8]) ^ uint64(k.version) }

// NewCache returns a cache of at most capacity keys (minimum 1); ttl 0
// keeps entries until evicted.
func NewCache(capacity int, ttl time.Duration) *Cache {
	return &Cache{c: cache.NewHashed[cacheKey, Cipher](capacity, cache.Options{TTL: ttl}, hashKey)}
}

// Cipher returns the cipher of k, deriving and caching its keys on a miss.
// A key that carries its derived keys is answered from them, without a
// lookup; deterministic asks for its AES-SIV key too (a cipher asked
// without it refuses to seal deterministically), and a key whose carried
// keys lack it (DeriveGCMKey) is then answered as one carrying none.
func (c *Cache) Cipher(k CategoryKey, deterministic bool) (Cipher, error) {
	var carried uint64
	ci, err := c.CipherCounting(k, deterministic, &carried)
	c.AddCarried(&carried)
	return ci, err
}

// CipherCounting is Cipher for callers that ask it for every field of a
// batch: an answer from carried keys is counted in *carried, which the
// caller adds to Stats once a batch (AddCarried), not in the counter
// every core writes. Written per field from two cores, that counter cost
// more than the answer: 94-96 against 9.5-9.6 ns per answer
// (BenchmarkCarriedCipherParallel).
func (c *Cache) CipherCounting(k CategoryKey, deterministic bool, carried *uint64) (Cipher, error) {
	if k.Secret.Len() != CategoryKeySize {
		return Cipher{}, ErrKeySize
	}
	if k.derived != nil && (!deterministic || k.derived.HasSIV()) {
		// Derived by the key's holder (DeriveKey, DeriveGCMKey): no
		// lookup, no HKDF.
		if k.Version < 1 || k.Version > 1<<31-1 {
			return Cipher{}, fmt.Errorf("fieldcrypt: key version %d out of range", k.Version)
		}
		*carried++
		ci := Cipher{version: uint32(k.Version), gcm: k.derived.gcm()}
		if deterministic {
			// Only then: the AES-SIV key is on another cache line, often
			// one the CPU has not read yet.
			ci.hasSIV, ci.siv = true, k.derived.siv()
		}
		return ci, nil
	}
	id := cacheKey{secret: [CategoryKeySize]byte(k.Secret.b), version: uint32(k.Version)}
	if ci, ok := c.c.Get(id); ok {
		return ci, nil
	}
	ci, err := cipherOf(k)
	if err != nil {
		return Cipher{}, err
	}
	c.c.Put(id, ci)
	return ci, nil
}

// Purge removes every entry and lets go of the memory; Stats go on
// counting.
func (c *Cache) Purge() { c.c.Purge() }

// Capacity is the most keys the cache keeps.
func (c *Cache) Capacity() int { return c.c.Capacity() }

// Len is the number of cached keys.
func (c *Cache) Len() int { return c.c.Len() }

// AddCarried adds the answers from carried keys counted in *n
// (CipherCounting) to the hits, and zeroes *n for the next batch.
func (c *Cache) AddCarried(n *uint64) {
	if *n > 0 {
		c.derived.Add(*n)
		*n = 0
	}
}

// Stats returns hit and miss counts since creation; an answer from a key
// that carried its derived key counts as a hit once added (Cipher adds it
// at once, CipherCounting's caller when it calls AddCarried).
func (c *Cache) Stats() (hits, misses uint64) {
	hits, misses = c.c.Stats()
	return hits + c.derived.Load(), misses
}
