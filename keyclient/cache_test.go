package keyclient

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// TestCacheCapacityForgetPurge: the cache never holds more than CacheSize
// users; users looked up again and again stay while a stream of one-off
// users passes through (CLOCK gives them a second chance); Forget drops one
// user, Purge every one.
func TestCacheCapacityForgetPurge(t *testing.T) {
	f := NewFake()
	c := newTestClient(t, f, func(o *Options) { o.CacheSize = 50; o.BatchWindow = -1 })
	ctx := context.Background()
	hot := []string{"hot-1", "hot-2", "hot-3"}
	if _, err := c.ForEncrypt(ctx, hot, cats); err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		if _, err := c.ForEncrypt(ctx, []string{fmt.Sprintf("cold-%d", i)}, cats); err != nil {
			t.Fatal(err)
		}
		if n := c.Stats().CacheEntries; n > 50 {
			t.Fatalf("%d entries cached, capacity 50", n)
		}
		if i%10 == 0 {
			before := f.Calls()
			if _, err := c.ForEncrypt(ctx, hot, cats); err != nil {
				t.Fatal(err)
			}
			if f.Calls() != before {
				t.Fatalf("after %d one-off users, a hot user was evicted", i)
			}
		}
	}
	c.Forget("hot-2")
	before := f.Calls()
	if _, err := c.ForEncrypt(ctx, []string{"hot-1"}, cats); err != nil || f.Calls() != before {
		t.Fatalf("Forget(hot-2) dropped hot-1 too (err %v)", err)
	}
	if _, err := c.ForEncrypt(ctx, []string{"hot-2"}, cats); err != nil || f.Calls() != before+1 {
		t.Fatalf("hot-2 was still cached after Forget (err %v)", err)
	}
	c.Purge()
	if n := c.Stats().CacheEntries; n != 0 {
		t.Fatalf("%d entries after Purge", n)
	}
	before = f.Calls()
	if _, err := c.ForEncrypt(ctx, hot, cats); err != nil || f.Calls() != before+1 {
		t.Fatalf("hot users still cached after Purge (err %v)", err)
	}
}

// TestCacheKeyIDs: ids are cache keys by value, whatever their length:
// ids that differ only past their first 40 bytes, or only by trailing
// zero bytes, are different users with different subjects and keys; a
// cached long id answers from the cache, and Forget drops it.
func TestCacheKeyIDs(t *testing.T) {
	f := NewFake()
	c := newTestClient(t, f, func(o *Options) { o.BatchWindow = -1 })
	ctx := context.Background()
	long := strings.Repeat("u", 40)
	ids := []string{"a", "a\x00", "\x00", long[:39], long, long + "1", long + "2", long + long + "1", long + long + "2"}
	first, err := c.ForEncrypt(ctx, ids, cats)
	if err != nil {
		t.Fatal(err)
	}
	subjects := map[string]string{}
	for i, u := range first {
		if u.Err != nil {
			t.Fatalf("%q: %v", ids[i], u.Err)
		}
		if other, ok := subjects[u.Subject]; ok {
			t.Fatalf("ids %q and %q answered with one subject", other, ids[i])
		}
		subjects[u.Subject] = ids[i]
	}
	calls := f.Calls()
	again, err := c.ForEncrypt(ctx, ids, cats)
	if err != nil {
		t.Fatal(err)
	}
	if f.Calls() != calls {
		t.Fatalf("%d RPCs for ids all cached", f.Calls()-calls)
	}
	for i := range ids {
		if again[i].Subject != first[i].Subject || !again[i].Keys[0].Secret.Equal(first[i].Keys[0].Secret) {
			t.Fatalf("%q: the cache answered another user's keys", ids[i])
		}
	}
	c.Forget(long + "1")
	if _, err := c.ForEncrypt(ctx, []string{long + "1"}, cats); err != nil || f.Calls() != calls+1 {
		t.Fatalf("a forgotten long id was answered from the cache (%v)", err)
	}
	if _, err := c.ForEncrypt(ctx, []string{long + "2"}, cats); err != nil || f.Calls() != calls+1 {
		t.Fatalf("forgetting one long id dropped another (%v)", err)
	}
}

// TestEntriesOfEveryWidth: users cached with 1 to maxSlots categories
// answer from the cache with the keys the service gave, each in its
// place; an answer with more categories is not cached.
func TestEntriesOfEveryWidth(t *testing.T) {
	f := NewFake()
	c := newTestClient(t, f, func(o *Options) { o.BatchWindow = -1 })
	ctx := context.Background()
	var all []string
	for i := range maxSlots + 1 {
		all = append(all, fmt.Sprintf("cat%d", i))
	}
	for n := 1; n <= maxSlots+1; n++ {
		user := fmt.Sprintf("width-%d", n)
		first, err := c.ForEncrypt(ctx, []string{user}, all[:n])
		if err != nil {
			t.Fatal(err)
		}
		calls := f.Calls()
		again, err := c.ForEncrypt(ctx, []string{user}, all[:n])
		if err != nil {
			t.Fatal(err)
		}
		if cached := f.Calls() == calls; cached != (n <= maxSlots) {
			t.Fatalf("%d categories: answered from the cache %v", n, cached)
		}
		if len(again[0].Keys) != n {
			t.Fatalf("%d categories: %d keys", n, len(again[0].Keys))
		}
		for j, k := range again[0].Keys {
			if k.Category != all[j] || !k.Secret.Equal(first[0].Keys[j].Secret) || k.Derived() == nil {
				t.Fatalf("%d categories: key %d is %v, want %v", n, j, k, first[0].Keys[j])
			}
		}
	}
}
