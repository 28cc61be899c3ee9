package keyservice

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockstream/lockstream/fieldcrypt"
)

// TestRefreshReusesUnchangedKeychain: when a cached keychain expires and
// the row read again is byte-identical, the opened root keys and memoized
// derived keys are reused (no decryption, no HKDF); a changed row (a revoke
// by another node) is opened afresh, and a deleted row's expired entry is
// dropped. Expiry never exceeds the stale window, and is spread below it.
func TestRefreshReusesUnchangedKeychain(t *testing.T) {
	const window = 10 * time.Second
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	st := NewMemoryStoreForTest()
	mk := fieldcrypt.NewSecret(bytes.Repeat([]byte{7}, 32))
	node, err := New(st, Options{MasterKey: mk, Now: clock, StaleWindow: window})
	if err != nil {
		t.Fatal(err)
	}
	peer, err := New(st, Options{MasterKey: mk})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	users, cats := []string{"kept", "revoked", "deleted"}, []string{"contact", "device"}
	res, err := node.GetOrCreate(ctx, "svc", users, cats)
	if err != nil {
		t.Fatal(err)
	}
	cached := func(i int) *keychain {
		t.Helper()
		v, ok := node.cache.get(subjectKey(res[i].Subject), clock())
		if !ok {
			t.Fatalf("%s: not cached", users[i])
		}
		return v.(*keychain)
	}
	before := []*keychain{cached(0), cached(1), cached(2)}
	if _, err := node.GetByUser(ctx, "svc", users[:2], cats); err != nil { // memoize
		t.Fatal(err)
	}
	if err := peer.Revoke(ctx, users[1], "contact"); err != nil {
		t.Fatal(err)
	}
	if err := peer.DeleteUser(ctx, users[2]); err != nil {
		t.Fatal(err)
	}
	warm := node.CacheStats()
	if warm.ProcessHits == 0 || warm.ProcessMisses == 0 || warm.Memcached {
		t.Fatalf("cache stats after a cold and a warm call: %+v", warm)
	}
	advance(window)
	got, err := node.GetByUser(ctx, "svc", users, cats)
	if err != nil {
		t.Fatal(err)
	}
	if len(got[0].Keys) != 2 || len(got[1].Keys) != 1 || got[2].Err == nil {
		t.Fatalf("after refresh: %+v", got)
	}
	if st := node.CacheStats(); st.ProcessMisses <= warm.ProcessMisses {
		t.Fatalf("expired entries not counted as misses: %+v then %+v", warm, st)
	}
	same := func(a, b []rootKey) bool {
		return len(a) > 0 && len(b) > 0 && &a[0] == &b[0]
	}
	kept := cached(0)
	if kept == before[0] || !same(kept.roots, before[0].roots) || kept.derived.Load() != before[0].derived.Load() {
		t.Fatal("unchanged keychain was not reused (a new entry sharing the opened roots and memo)")
	}
	if rev := cached(1); same(rev.roots, before[1].roots) {
		t.Fatal("a keychain changed in the store reused the old opened roots")
	}
	if _, ok := node.cache.expired(subjectKey(res[2].Subject), clock().Add(time.Hour)); ok {
		t.Fatal("the expired entry of a deleted keychain is still held")
	}
	for range 100 {
		if e := node.expiry(time.Time{}); e.After(clock().Add(window)) || e.Before(clock().Add(window*4/5-time.Millisecond)) {
			t.Fatalf("expiry %v not in [%v, %v] from now", e.Sub(clock()), window*4/5, window)
		}
	}
}

// countingBolt counts the user-index and keychain rows read from a bolt
// store (it stays a LocalWriter: Writes is promoted).
type countingBolt struct {
	LocalWriter
	mu   sync.Mutex
	read map[string]int
}

func (c *countingBolt) Get(ctx context.Context, keys []string) ([]Item, error) {
	c.mu.Lock()
	for _, k := range keys {
		if strings.HasPrefix(k, prefixUser) || strings.HasPrefix(k, prefixSubject) {
			c.read[k]++
		}
	}
	c.mu.Unlock()
	return c.LocalWriter.Get(ctx, keys)
}

func (c *countingBolt) reads() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := maps.Clone(c.read)
	clear(c.read)
	return out
}

// TestRenewUnchangedRowsOnLocalStore: on the embedded store, which is the
// only writer of its rows, an expired entry whose row was not written
// since it was read is served again without a store read; a row written
// since (by another Service over the same store) is read again, so a
// deletion or revocation is seen at the next expiry as before, never
// later.
func TestRenewUnchangedRowsOnLocalStore(t *testing.T) {
	const window = 10 * time.Second
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	bs, err := OpenBoltForTest(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bs.Close() })
	st := &countingBolt{LocalWriter: bs, read: map[string]int{}}
	mk := fieldcrypt.NewSecret(bytes.Repeat([]byte{7}, 32))
	node, err := New(st, Options{MasterKey: mk, Now: clock, StaleWindow: window})
	if err != nil {
		t.Fatal(err)
	}
	peer, err := New(st, Options{MasterKey: mk})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	users, cats := []string{"kept", "revoked", "deleted"}, []string{"contact", "device"}
	res, err := node.GetOrCreate(ctx, "svc", users, cats)
	if err != nil {
		t.Fatal(err)
	}
	rows := func(i int) []string {
		return []string{prefixUser + node.kr.userHash(users[i]), prefixSubject + res[i].Subject}
	}
	// Rows this node wrote are read once more at their first expiry (their
	// entry holds the write count from before the write).
	advance(window)
	if _, err := node.GetByUser(ctx, "svc", users, cats); err != nil {
		t.Fatal(err)
	}
	st.reads()

	// Unchanged rows: renewed, not read, however many windows pass.
	for range 3 {
		advance(window)
		got, err := node.GetByUser(ctx, "svc", users, cats)
		if err != nil {
			t.Fatal(err)
		}
		for i := range users {
			if got[i].Err != nil || len(got[i].Keys) != 2 {
				t.Fatalf("%s: %+v", users[i], got[i])
			}
		}
		if r := st.reads(); len(r) != 0 {
			t.Fatalf("unchanged rows read again: %v", r)
		}
	}
	if cs := node.CacheStats(); cs.ProcessRenewed < 6 {
		t.Fatalf("renewals not counted: %+v", cs)
	}

	// Written rows: read again at the next expiry, and what changed is seen.
	writes := map[string]uint64{}
	for _, k := range rows(0) {
		writes[k] = bs.Writes(k)
	}
	if err := peer.Revoke(ctx, users[1], "contact"); err != nil {
		t.Fatal(err)
	}
	if err := peer.DeleteUser(ctx, users[2]); err != nil {
		t.Fatal(err)
	}
	advance(window)
	got, err := node.GetByUser(ctx, "svc", users, cats)
	if err != nil {
		t.Fatal(err)
	}
	if len(got[0].Keys) != 2 || len(got[1].Keys) != 1 || !errors.Is(got[2].Err, ErrUserDeleted) {
		t.Fatalf("after a revoke and a delete by another service: %+v", got)
	}
	r := st.reads()
	if r[rows(1)[1]] == 0 || r[rows(2)[0]] == 0 {
		t.Fatalf("written rows not read again: %v", r)
	}
	for _, k := range rows(0) {
		// A row shares its write counter with ~1/4096 of the keys: only a
		// row whose counter did not move must not be read.
		if bs.Writes(k) == writes[k] && r[k] != 0 {
			t.Fatalf("unchanged row %s read again: %v", k, r)
		}
	}
}
