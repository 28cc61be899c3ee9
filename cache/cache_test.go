package cache

import (
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"
)

func TestGetPutDelete(t *testing.T) {
	c := New[string, int](4, Options{Shards: 1})
	if _, ok := c.Get("a"); ok {
		t.Fatal("hit in an empty cache")
	}
	c.Put("a", 1)
	c.Put("b", 2)
	c.Put("a", 3) // replaced
	if v, ok := c.Get("a"); !ok || v != 3 {
		t.Fatalf("a = %d %v", v, ok)
	}
	if c.Len() != 2 {
		t.Fatalf("len %d", c.Len())
	}
	c.Delete("a")
	if _, ok := c.Get("a"); ok || c.Len() != 1 {
		t.Fatalf("deleted entry found, len %d", c.Len())
	}
	c.Put("c", 4) // reuses the freed slot
	if v, ok := c.Get("c"); !ok || v != 4 {
		t.Fatal("c lost")
	}
	if n := c.DeleteFunc(func(k string, v int) bool { return v%2 == 0 }); n != 2 || c.Len() != 0 {
		t.Fatalf("DeleteFunc removed %d, %d left", n, c.Len())
	}
	if h, m := c.Stats(); h != 2 || m != 2 {
		t.Fatalf("stats %d hits %d misses", h, m)
	}
}

// TestHashCollision: the hash only picks a shard (NewHashed allows one
// that merely spreads keys): keys of one hash are all held and never
// answer for each other, through every call.
func TestHashCollision(t *testing.T) {
	c := NewHashed[string, int](8, Options{Shards: 1}, func(string) uint64 { return 42 })
	c.Put("a", 1)
	if v, ok := c.Get("b"); ok {
		t.Fatalf("b answered with a's value %d", v)
	}
	c.Put("b", 2)
	for k, want := range map[string]int{"a": 1, "b": 2} {
		if v, ok := c.Get(k); !ok || v != want {
			t.Fatalf("%s = %d %v", k, v, ok)
		}
	}
	if _, ok := c.Get("c"); ok || c.Len() != 2 {
		t.Fatalf("c found, or len %d", c.Len())
	}
	c.Delete("a")
	if v, ok := c.Get("b"); !ok || v != 2 {
		t.Fatal("deleting a removed b")
	}
	if c.Peek("a", func(*int) bool { return true }) || c.Update("a", func(*int) bool { return true }) {
		t.Fatal("Peek or Update found the deleted a")
	}
	if got := c.GetOrPut("a", func() int { return 3 }); got != 3 {
		t.Fatalf("GetOrPut(a) = %d", got)
	}
	if n := c.DeleteFunc(func(k string, _ int) bool { return k == "a" }); n != 1 || c.Len() != 1 {
		t.Fatalf("DeleteFunc removed %d, len %d", n, c.Len())
	}
}

func TestCapacityAndSecondChance(t *testing.T) {
	c := New[int, int](3, Options{Shards: 1})
	for i := range 3 {
		c.Put(i, i)
	}
	c.Get(0) // 0 is referenced: it survives the next eviction
	c.Put(3, 3)
	if c.Len() != 3 {
		t.Fatalf("len %d over capacity 3", c.Len())
	}
	if _, ok := c.Get(0); !ok {
		t.Fatal("the referenced entry was evicted")
	}
	if _, ok := c.Get(1); ok {
		t.Fatal("the first unreferenced entry survived")
	}
	// Many puts never exceed the capacity, over every shard.
	big := New[int, [4]int](1000, Options{})
	for i := range 10_000 {
		big.Put(i, [4]int{i})
	}
	if big.Len() > 1000 || big.Capacity() != 1000 {
		t.Fatalf("len %d, capacity %d", big.Len(), big.Capacity())
	}
}

func TestTTL(t *testing.T) {
	now := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	c := New[string, int](10, Options{TTL: time.Minute, Now: func() time.Time { return now }})
	c.Put("a", 1)
	c.PutUntil("b", 2, now.Add(10*time.Second))
	c.PutUntil("c", 3, time.Time{}) // no expiry
	now = now.Add(30 * time.Second)
	if _, ok := c.Get("b"); ok {
		t.Fatal("an expired entry was returned")
	}
	if _, ok := c.Get("a"); !ok {
		t.Fatal("a live entry was missed")
	}
	now = now.Add(time.Minute)
	if _, ok := c.Get("a"); ok {
		t.Fatal("an entry outlived its TTL")
	}
	if _, ok := c.Get("c"); !ok {
		t.Fatal("an entry without expiry expired")
	}
	// Expired entries go first, even when referenced.
	small := New[string, int](2, Options{Shards: 1, Now: func() time.Time { return now }})
	small.PutUntil("old", 1, now.Add(-time.Second))
	small.Put("live", 2)
	small.Get("live")
	small.Put("new", 3)
	if _, ok := small.Get("live"); !ok {
		t.Fatal("a live entry was evicted before an expired one")
	}
}

func TestConcurrent(t *testing.T) {
	c := New[int, int](512, Options{})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20_000 {
				k := (i*7 + g) % 2000
				if v, ok := c.Get(k); ok && v != k*10 {
					t.Errorf("key %d holds %d", k, v)
					return
				}
				c.Put(k, k*10)
				if i%1000 == 0 {
					c.Delete(k)
				}
			}
		}()
	}
	wg.Wait()
	if c.Len() > 512 {
		t.Fatalf("len %d over capacity", c.Len())
	}
}

// BenchmarkGCWithFullCache reports what a full GC cycle costs with a
// 500k-entry cache alive, pointer-free (what the key caches use) and with
// a string key and a pointer value: the first is never scanned.
func BenchmarkGCWithFullCache(b *testing.B) {
	type key [32]byte
	type val struct {
		a [32]byte
		v int32
	}
	gcTime := func() float64 {
		runtime.GC()
		start := time.Now()
		for range 5 {
			runtime.GC()
		}
		return float64(time.Since(start).Microseconds()) / 5
	}
	for range b.N {
		flat := New[key, val](500_000, Options{})
		for i := range 500_000 {
			var k key
			copy(k[:], fmt.Sprint(i))
			flat.Put(k, val{v: int32(i)})
		}
		b.ReportMetric(gcTime(), "gc-us-pointer-free")
		runtime.KeepAlive(flat)
		flat = nil
		ptrs := New[string, *int](500_000, Options{})
		for i := range 500_000 {
			v := i
			ptrs.Put(fmt.Sprint(i), &v)
		}
		b.ReportMetric(gcTime(), "gc-us-with-pointers")
		runtime.KeepAlive(ptrs)
	}
}

func TestPeekAndGetOrPut(t *testing.T) {
	c := New[string, [64]byte](8, Options{})
	var v [64]byte
	v[0] = 7
	c.Put("a", v)
	var seen byte
	if !c.Peek("a", func(p *[64]byte) bool { seen = p[0]; return true }) || seen != 7 {
		t.Fatalf("Peek saw %d", seen)
	}
	if c.Peek("b", func(*[64]byte) bool { t.Fatal("called for a missing key"); return true }) {
		t.Fatal("Peek found a missing key")
	}
	// Concurrent GetOrPut of one key: one value for all.
	p := New[string, *int](8, Options{})
	var wg sync.WaitGroup
	got := make([]*int, 8)
	made := 0
	var mu sync.Mutex
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = p.GetOrPut("k", func() *int { mu.Lock(); made++; mu.Unlock(); return new(int) })
		}()
	}
	wg.Wait()
	for _, g := range got {
		if g != got[0] {
			t.Fatal("GetOrPut gave concurrent callers different values")
		}
	}
	if made != 1 {
		t.Fatalf("mk ran %d times", made)
	}
}
