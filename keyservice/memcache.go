package keyservice

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math"
	"sync/atomic"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
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
type MemcachedStore struct {
	inner  Store
	mc     *memcache.Client
	window time.Duration
	prefix string
	now    func() time.Time

	hits, misses, errs atomic.Uint64
}

var _ Store = (*MemcachedStore)(nil)

const mcPrefix = "lockstream/ks1/"

// NewMemcached wraps inner with a memcached tier on addrs (host:port);
// staleWindow <= 0 means DefaultStaleWindow. Use the same window as the
// Services' Options.StaleWindow.
func NewMemcached(inner Store, addrs []string, staleWindow time.Duration) (*MemcachedStore, error) {
	if inner == nil || len(addrs) == 0 {
		return nil, errors.New("keyservice: memcached tier needs an inner store and at least one address")
	}
	if staleWindow <= 0 {
		staleWindow = DefaultStaleWindow
	}
	mc := memcache.New(addrs...)
	mc.Timeout = 200 * time.Millisecond
	mc.MaxIdleConns = 16
	return &MemcachedStore{inner: inner, mc: mc, window: staleWindow, prefix: mcPrefix, now: time.Now}, nil
}

// SetNamespace sets the namespace of this tier's memcached keys (default
// none). Deployments (or tests) that share a memcached but not a store must
// use distinct namespaces. Call before use.
func (m *MemcachedStore) SetNamespace(ns string) { m.prefix = mcPrefix + ns + "/" }

// StaleWindow is the window entries live.
func (m *MemcachedStore) StaleWindow() time.Duration { return m.window }

// Inner is the wrapped store.
func (m *MemcachedStore) Inner() Store { return m.inner }

// Stats reports cache hits, misses and memcached errors so far.
func (m *MemcachedStore) Stats() (hits, misses, errs uint64) {
	return m.hits.Load(), m.misses.Load(), m.errs.Load()
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

// Entry: 8-byte revision | 8-byte read time (Unix ns) | value.
func encodeEntry(it Item) []byte {
	b := make([]byte, 16, 16+len(it.Value))
	binary.BigEndian.PutUint64(b, it.Rev)
	binary.BigEndian.PutUint64(b[8:], uint64(it.ReadAt.UnixNano()))
	return append(b, it.Value...)
}

func decodeEntry(key string, b []byte) (Item, bool) {
	if len(b) < 16 {
		return Item{}, false
	}
	it := Item{Key: key, Rev: binary.BigEndian.Uint64(b), ReadAt: time.Unix(0, int64(binary.BigEndian.Uint64(b[8:])))}
	it.Value = append([]byte{}, b[16:]...)
	return it, it.Rev != 0
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
			if it, ok := decodeEntry(k, e.Value); ok && now.Sub(it.ReadAt) < m.window {
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
			if err := m.mc.Set(&memcache.Item{Key: mkeys[missIdx[j]], Value: encodeEntry(it), Expiration: ttl}); err != nil {
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
