package keyservice

import (
	"bytes"
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
	st := NewMemoryStore()
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
