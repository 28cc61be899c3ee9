package memcachedstore

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
	"github.com/lockstream/lockstream/keyservice"
)

// Store is a read-through cache tier on memcached in front of any
// [keyservice.Store]. See the package documentation for its rules and its
// entry format.
type Store struct {
	inner  keyservice.Store
	mc     *memcache.Client
	window time.Duration
	ns     string // namespace (SetNamespace)
	prefix string
	now    func() time.Time
	macs   sync.Pool // of hash.Hash: HMAC-SHA256 under the cache MAC key

	hits, misses, errs atomic.Uint64
	rejected           [keyservice.NumRejectReasons]atomic.Uint64
}

var _ keyservice.CacheTier = (*Store)(nil)

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

// New wraps inner with a memcached tier on addrs (host:port); staleWindow
// <= 0 means keyservice.DefaultStaleWindow. Use the same window as the
// Services' Options.StaleWindow. masterKey is the service's master key:
// the entries' MAC key is derived from it, so only nodes holding it can
// write entries the others accept.
func New(inner keyservice.Store, addrs []string, staleWindow time.Duration, masterKey fieldcrypt.Secret) (*Store, error) {
	if inner == nil || len(addrs) == 0 {
		return nil, errors.New("keyservice: memcached tier needs an inner store and at least one address")
	}
	if masterKey.Len() != keyservice.MasterKeySize {
		return nil, fmt.Errorf("%w: memcached tier: master key must be %d bytes, got %d", keyservice.ErrInvalidArgument, keyservice.MasterKeySize, masterKey.Len())
	}
	macKey, err := hkdf.Key(sha256.New, masterKey.Expose(), nil, mcMACInfo, 32)
	if err != nil {
		return nil, err
	}
	if staleWindow <= 0 {
		staleWindow = keyservice.DefaultStaleWindow
	}
	mc := memcache.New(addrs...)
	mc.Timeout = 200 * time.Millisecond
	mc.MaxIdleConns = 16
	m := &Store{inner: inner, mc: mc, window: staleWindow, prefix: mcPrefix, now: time.Now}
	m.macs.New = func() any { return hmac.New(sha256.New, macKey) }
	return m, nil
}

// SetNamespace sets the namespace of this tier's memcached keys (default
// none). Deployments (or tests) that share a memcached but not a store must
// use distinct namespaces; an entry of one namespace is rejected by the
// others. Call before use.
func (m *Store) SetNamespace(ns string) { m.ns, m.prefix = ns, mcPrefix+ns+"/" }

// StaleWindow is the window entries live.
func (m *Store) StaleWindow() time.Duration { return m.window }

// Inner is the wrapped store.
func (m *Store) Inner() keyservice.Store { return m.inner }

// Stats implements [keyservice.CacheTier]: cache hits, misses and
// memcached errors so far. A rejected entry counts as a miss too.
func (m *Store) Stats() (hits, misses, errs uint64) {
	return m.hits.Load(), m.misses.Load(), m.errs.Load()
}

// Rejected implements [keyservice.CacheTier]: the entries memcached
// returned that were not used, by reason (indexed like
// keyservice.RejectReasons).
func (m *Store) Rejected() [keyservice.NumRejectReasons]uint64 {
	var out [keyservice.NumRejectReasons]uint64
	for i := range out {
		out[i] = m.rejected[i].Load()
	}
	return out
}

func (m *Store) key(k string) string {
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
func (m *Store) encodeEntry(it keyservice.Item) []byte {
	b := make([]byte, mcHeader, mcHeader+len(it.Value))
	b[0] = mcFormat
	binary.BigEndian.PutUint64(b[1:], it.Rev)
	binary.BigEndian.PutUint64(b[9:], uint64(it.ReadAt.UnixNano()))
	m.mac(b[17:17], it.Key, b[1:17], it.Value)
	return append(b, it.Value...)
}

// mac appends to dst the MAC of an entry of row key with header (revision
// and read time) and value.
func (m *Store) mac(dst []byte, key string, header, value []byte) []byte {
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
// reason is the keyservice.RejectXxx of an entry that must not be used.
func (m *Store) decodeEntry(key string, b []byte, now time.Time) (it keyservice.Item, reason int, ok bool) {
	if len(b) < mcHeader || b[0] != mcFormat {
		return keyservice.Item{}, keyservice.RejectMalformed, false
	}
	var sum [mcMACSize]byte
	if !hmac.Equal(m.mac(sum[:0], key, b[1:17], b[mcHeader:]), b[17:mcHeader]) {
		return keyservice.Item{}, keyservice.RejectMAC, false
	}
	it = keyservice.Item{Key: key, Rev: binary.BigEndian.Uint64(b[1:]), ReadAt: time.Unix(0, int64(binary.BigEndian.Uint64(b[9:])))}
	if it.Rev == 0 {
		return keyservice.Item{}, keyservice.RejectMalformed, false // only found rows are cached
	}
	age := now.Sub(it.ReadAt)
	switch {
	case age < -m.window:
		return keyservice.Item{}, keyservice.RejectFuture, false
	case age > m.replayAge():
		return keyservice.Item{}, keyservice.RejectReplayed, false
	}
	it.Value = append([]byte{}, b[mcHeader:]...)
	return it, 0, true
}

// replayAge is the oldest an entry memcached returns can honestly be: its
// TTL plus memcached's clock granularity (1 s) and a second for the time
// between the read and the set.
func (m *Store) replayAge() time.Duration {
	return time.Duration(m.ttlSeconds())*time.Second + 2*time.Second
}

func (m *Store) ttlSeconds() int32 {
	s := math.Ceil(m.window.Seconds())
	return int32(max(1, min(s, 30*24*3600)))
}

// Get implements [keyservice.Store].
func (m *Store) Get(ctx context.Context, keys []string) ([]keyservice.Item, error) {
	out := make([]keyservice.Item, len(keys))
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

func (m *Store) evict(key string) {
	if err := m.mc.Delete(m.key(key)); err != nil && !errors.Is(err, memcache.ErrCacheMiss) {
		m.errs.Add(1)
	}
}

// Put implements [keyservice.Store]: the inner store decides, then the
// entry is evicted (whatever the outcome).
func (m *Store) Put(ctx context.Context, key string, value []byte, rev uint64) (keyservice.Item, error) {
	it, err := m.inner.Put(ctx, key, value, rev)
	m.evict(key) // also on failure: the write may have happened
	return it, err
}

// Delete implements [keyservice.Store].
func (m *Store) Delete(ctx context.Context, key string) error {
	err := m.inner.Delete(ctx, key)
	m.evict(key)
	return err
}

// Close closes the inner store and the memcached connections.
func (m *Store) Close() error {
	_ = m.mc.Close()
	return m.inner.Close()
}
