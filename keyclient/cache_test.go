package keyclient

import (
	"context"
	"fmt"
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
