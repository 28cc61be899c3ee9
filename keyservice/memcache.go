package keyservice

import (
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/lockstream/lockstream/fieldcrypt"
)

// MemcachedStore is a read-through cache tier on memcached in front of any
// [Store]. It caches rows as stored — index rows (HMAC keys, subjects,
// tombstones), keychain rows (root keys sealed under the master key) and
// policies — so memcached never sees a plaintext user id or key.
//
// Rules:
//   - Only found rows are cached; a missing row ("unknown user") is never
//     cached, so a user created on any node is readable at once everywhere.
//   - Every write (Put, Delete) goes to the inner store first, then deletes
//     the memcached entry, so the writing node never serves its own stale
//     row.
//   - Each entry carries the time it was read from the inner store and
//     expires (memcached TTL, rounded up to whole seconds, and an age check
//     on read) one stale window after it. Another node therefore serves a
//     deleted or revoked keychain for at most the stale window after the
//     delete (plus clock skew between nodes), however the delete raced with
//     its reads.
//   - memcached failures are not errors: the tier reads through to the inner
//     store (Stats counts them).
//   - Every entry is authenticated (see "Memcached entries" in the package
//     documentation): an entry that is corrupt, forged, stored under
//     another key or namespace, older than memcached could have kept it
//     (replayed) or read in the future is rejected, counted
//     ([MemcachedStore.Rejected]) and read through to the inner store. What
//     memcached returns can therefore never map a user to another keychain,
//     mark a live user deleted, or keep a row beyond the stale window.
type MemcachedStore struct {
	inner  Store
	mc     *memcache.Client
	window time.Duration
	ns     string // namespace (SetNamespace)
	prefix string
	now    func() time.Time
	macs   sync.Pool // of hash.Hash: HMAC-SHA256 under the cache MAC key

	hits, misses, errs atomic.Uint64
	rejected           [numRejectReasons]atomic.Uint64
}

var _ Store = (*MemcachedStore)(nil)

// mcPrefix starts every memcached key. Entry format 2 (authenticated) lives
// under "ks2": entries of format 1 (unauthenticated, "ks1") are never read.
const mcPrefix = "lockstream/ks2/"

// Memcached entry format (a change is a new version and a new mcPrefix).
const (
	mcFormat  = 2
	mcMACInfo = "lockstream/keyservice/v1/master/cache-mac"
	mcMACTag  = "lockstream/keyservice/cache/v2"
	mcMACSize = sha256.Size
	mcHeader  = 1 + 8 + 8 + mcMACSize // format | revision | read time | MAC
)

// Why an entry memcached returned was not used (Rejected).
const (
	// RejectMalformed: too short or of an unknown format.
	RejectMalformed = iota
	// RejectMAC: the MAC does not match: corrupt bytes, a forged entry, or
	// an entry of another key or namespace (swapped).
	RejectMAC
	// RejectReplayed: authentic, but older than memcached could have kept
	// it (its expiry plus memcached's clock granularity): replayed.
	RejectReplayed
	// RejectFuture: authentic, but read more than a stale window in the
	// future of this node's clock (it would outlive the window here).
	RejectFuture
	numRejectReasons
)

// RejectReasons names the reasons of Rejected, by index (metric labels).
var RejectReasons = [numRejectReasons]string{"malformed", "mac", "replayed", "future"}

// NewMemcached wraps inner with a memcached tier on addrs (host:port);
// staleWindow <= 0 means DefaultStaleWindow. Use the same window as the
// Services' Options.StaleWindow. masterKey is the service's master key:
// the entries' MAC key is derived from it, so only nodes holding it can
// write entries the others accept.
func NewMemcached(inner Store, addrs []string, staleWindow time.Duration, masterKey fieldcrypt.Secret) (*MemcachedStore, error) {
	if inner == nil || len(addrs) == 0 {
		return nil, errors.New("keyservice: memcached tier needs an inner store and at least one address")
	}
	if masterKey.Len() != MasterKeySize {
		return nil, fmt.Errorf("%w: memcached tier: master key must be %d bytes, got %d", ErrInvalidArgument, MasterKeySize, masterKey.Len())
	}
	macKey, err := hkdf.Key(sha256.New, masterKey.Expose(), nil, mcMACInfo, 32)
	if err != nil {
		return nil, err
	}
	if staleWindow <= 0 {
		staleWindow = DefaultStaleWindow
	}
	mc := memcache.New(addrs...)
	mc.Timeout = 200 * time.Millisecond
	mc.MaxIdleConns = 16
	m := &MemcachedStore{inner: inner, mc: mc, window: staleWindow, prefix: mcPrefix, now: time.Now}
	m.macs.New = func() any { return hmac.New(sha256.New, macKey) }
	return m, nil
}

// SetNamespace sets the namespace of this tier's memcached keys (default
// none). Deployments (or tests) that share a memcached but not a store must
// use distinct namespaces; an entry of one namespace is rejected by the
// others. Call before use.
func (m *MemcachedStore) SetNamespace(ns string) { m.ns, m.prefix = ns, mcPrefix+ns+"/" }

// StaleWindow is the window entries live.
func (m *MemcachedStore) StaleWindow() time.Duration { return m.window }

// Inner is the wrapped store.
func (m *MemcachedStore) Inner() Store { return m.inner }

// Stats reports cache hits, misses and memcached errors so far. A rejected
// entry counts as a miss too.
func (m *MemcachedStore) Stats() (hits, misses, errs uint64) {
	return m.hits.Load(), m.misses.Load(), m.errs.Load()
}

// Rejected reports the entries memcached returned that were not used, by
// reason (indexed like RejectReasons).
func (m *MemcachedStore) Rejected() [numRejectReasons]uint64 {
	var out [numRejectReasons]uint64
	for i := range out {
		out[i] = m.rejected[i].Load()
	}
	return out
}

func (m *MemcachedStore) key(k string) string {
	ok := len(k)+len(m.prefix) <= 240
	for i := 0; ok && i < len(k); i++ {
		ok = k[i] > ' ' && k[i] < 0x7f
	}
	if ok {
		return m.prefix + k
	}
	h := sha256.Sum256([]byte(m.prefix + k))
	return mcPrefix + "h" + hex.EncodeToString(h[:])
}

// An entry is: format (1 byte, 2) | revision (8, big-endian) | read time
// (8, Unix ns, big-endian) | MAC (32) | value. The MAC is HMAC-SHA256 under
// the cache MAC key over mcMACTag, LP(namespace), LP(row key), revision,
// read time and value (LP: 4-byte big-endian length, then the bytes).
func (m *MemcachedStore) encodeEntry(it Item) []byte {
	b := make([]byte, mcHeader, mcHeader+len(it.Value))
	b[0] = mcFormat
	binary.BigEndian.PutUint64(b[1:], it.Rev)
	binary.BigEndian.PutUint64(b[9:], uint64(it.ReadAt.UnixNano()))
	m.mac(b[17:17], it.Key, b[1:17], it.Value)
	return append(b, it.Value...)
}

// mac appends to dst the MAC of an entry of row key with header (revision
// and read time) and value.
func (m *MemcachedStore) mac(dst []byte, key string, header, value []byte) []byte {
	h := m.macs.Get().(hash.Hash)
	defer m.macs.Put(h)
	h.Reset()
	var lp [4]byte
	h.Write([]byte(mcMACTag))
	for _, s := range [...]string{m.ns, key} {
		binary.BigEndian.PutUint32(lp[:], uint32(len(s)))
		h.Write(lp[:])
		h.Write([]byte(s))
	}
	h.Write(header)
	h.Write(value)
	return h.Sum(dst)
}

// decodeEntry checks and decodes the entry memcached returned for row key;
// reason is the RejectXxx of an entry that must not be used.
func (m *MemcachedStore) decodeEntry(key string, b []byte, now time.Time) (it Item, reason int, ok bool) {
	if len(b) < mcHeader || b[0] != mcFormat {
		return Item{}, RejectMalformed, false
	}
	var sum [mcMACSize]byte
	if !hmac.Equal(m.mac(sum[:0], key, b[1:17], b[mcHeader:]), b[17:mcHeader]) {
		return Item{}, RejectMAC, false
	}
	it = Item{Key: key, Rev: binary.BigEndian.Uint64(b[1:]), ReadAt: time.Unix(0, int64(binary.BigEndian.Uint64(b[9:])))}
	if it.Rev == 0 {
		return Item{}, RejectMalformed, false // only found rows are cached
	}
	age := now.Sub(it.ReadAt)
	switch {
	case age < -m.window:
		return Item{}, RejectFuture, false
	case age > m.replayAge():
		return Item{}, RejectReplayed, false
	}
	it.Value = append([]byte{}, b[mcHeader:]...)
	return it, 0, true
}

// replayAge is the oldest an entry memcached returns can honestly be: its
// TTL plus memcached's clock granularity (1 s) and a second for the time
// between the read and the set.
func (m *MemcachedStore) replayAge() time.Duration {
	return time.Duration(m.ttlSeconds())*time.Second + 2*time.Second
}

func (m *MemcachedStore) ttlSeconds() int32 {
	s := math.Ceil(m.window.Seconds())
	return int32(max(1, min(s, 30*24*3600)))
}

// Get implements [Store].
func (m *MemcachedStore) Get(ctx context.Context, keys []string) ([]Item, error) {
	out := make([]Item, len(keys))
	mkeys := make([]string, len(keys))
	for i, k := range keys {
		mkeys[i] = m.key(k)
	}
	got, err := m.mc.GetMulti(mkeys)
	if err != nil {
		m.errs.Add(1)
		got = nil
	}
	now := m.now()
	var missIdx []int
	var miss []string
	for i, k := range keys {
		if e, ok := got[mkeys[i]]; ok {
			it, reason, ok := m.decodeEntry(k, e.Value, now)
			if !ok {
				m.rejected[reason].Add(1)
			} else if now.Sub(it.ReadAt) < m.window {
				out[i] = it
				m.hits.Add(1)
				continue
			}
		}
		m.misses.Add(1)
		missIdx = append(missIdx, i)
		miss = append(miss, k)
	}
	if len(miss) == 0 {
		return out, nil
	}
	items, err := m.inner.Get(ctx, miss)
	if err != nil {
		return nil, err
	}
	ttl := m.ttlSeconds()
	for j, it := range items {
		out[missIdx[j]] = it
		if it.Found() {
			if err := m.mc.Set(&memcache.Item{Key: mkeys[missIdx[j]], Value: m.encodeEntry(it), Expiration: ttl}); err != nil {
				m.errs.Add(1)
			}
		}
	}
	return out, nil
}

func (m *MemcachedStore) evict(key string) {
	if err := m.mc.Delete(m.key(key)); err != nil && !errors.Is(err, memcache.ErrCacheMiss) {
		m.errs.Add(1)
	}
}

// Put implements [Store]: the inner store decides, then the entry is
// evicted (whatever the outcome).
func (m *MemcachedStore) Put(ctx context.Context, key string, value []byte, rev uint64) (Item, error) {
	it, err := m.inner.Put(ctx, key, value, rev)
	m.evict(key) // also on failure: the write may have happened
	return it, err
}

// Delete implements [Store].
func (m *MemcachedStore) Delete(ctx context.Context, key string) error {
	err := m.inner.Delete(ctx, key)
	m.evict(key)
	return err
}

// Close closes the inner store and the memcached connections.
func (m *MemcachedStore) Close() error {
	_ = m.mc.Close()
	return m.inner.Close()
}
