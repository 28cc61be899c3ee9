package keyservice

import (
	"context"
	"time"
)

// Store is the persistence the key service needs: a key-value map of small
// rows with a per-row revision for compare-and-set. Every row the service
// writes is either an opaque index (HMAC of a user id → _subject, or a
// tombstone), a keychain whose root keys are sealed under the master key, or
// a category policy; a Store never sees a plaintext user id or a plaintext
// key.
//
// Implementations, each in its own package: keyservice/memstore (tests),
// keyservice/boltstore (embedded, default), keyservice/bigtablestore, and
// the keyservice/memcachedstore read-through tier (a [CacheTier]); package
// keyservice/stores opens any of them by URL. The contract tests in
// package keyservice/storetest run the service against each.
type Store interface {
	// Get reads keys in one batch. The result has one Item per key, in
	// order; a missing key gives an Item with Rev 0 and nil Value.
	Get(ctx context.Context, keys []string) ([]Item, error)
	// Put writes value under key if the stored revision is rev (rev 0: the
	// key must be absent) and returns the written Item, whose Rev is
	// greater than rev. If the revision differs it writes nothing and
	// returns the current Item together with ErrConflict. Put replaces the
	// value: the previous value must not remain readable.
	Put(ctx context.Context, key string, value []byte, rev uint64) (Item, error)
	// Delete removes key (no error if absent).
	Delete(ctx context.Context, key string) error
	// Close releases the store.
	Close() error
}

// Item is one stored row.
type Item struct {
	Key   string
	Value []byte // nil when absent
	Rev   uint64 // 0 when absent
	// ReadAt is when Value was read from (or written to) the authoritative
	// store. Caches use it so that no tier serves a row longer than the
	// stale window after it was read from the source of truth.
	ReadAt time.Time
	// Writes is, from a store that is the only writer of its rows (a
	// [LocalWriter]), the store's write count for Key taken before the
	// row was read; 0 from other stores. While the store's Writes(Key) is
	// still this value, the row is unchanged.
	Writes uint64
}

// A LocalWriter is a Store that is the only writer of its rows: every write
// goes through this value (keyservice/boltstore: its file is locked to one
// process, and one store value per file). It counts its completed writes per group of
// keys, so that a cache can tell that a row it holds is unchanged without
// reading it again.
type LocalWriter interface {
	Store
	// Writes is the count of completed writes of the keys that share
	// key's group, plus one (never 0). A write is counted after it is
	// durable.
	Writes(key string) uint64
}

// Found reports whether the row exists.
func (it Item) Found() bool { return it.Rev != 0 }

// A CacheTier is a Store that caches the rows of another store
// (keyservice/memcachedstore); [Service.CacheStats] reports its counters.
type CacheTier interface {
	Store
	// Stats reports cache hits, misses and cache errors so far. A
	// rejected entry counts as a miss too.
	Stats() (hits, misses, errs uint64)
	// Rejected reports the entries the cache returned that were not used,
	// by reason (indexed like RejectReasons).
	Rejected() [NumRejectReasons]uint64
}

// Why an entry a CacheTier's cache returned was not used (see "Entries" in
// package keyservice/memcachedstore).
const (
	// RejectMalformed: too short or of an unknown format.
	RejectMalformed = iota
	// RejectMAC: the MAC does not match: corrupt bytes, a forged entry, or
	// an entry of another key or namespace (swapped).
	RejectMAC
	// RejectReplayed: authentic, but older than the cache could have kept
	// it (its expiry plus the cache's clock granularity): replayed.
	RejectReplayed
	// RejectFuture: authentic, but read more than a stale window in the
	// future of this node's clock (it would outlive the window here).
	RejectFuture
	// NumRejectReasons is the number of reasons (not a reason).
	NumRejectReasons
)

// RejectReasons names the reasons of CacheTier.Rejected, by index (metric
// labels).
var RejectReasons = [NumRejectReasons]string{"malformed", "mac", "replayed", "future"}
