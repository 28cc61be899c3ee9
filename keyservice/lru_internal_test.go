package keyservice

import (
	"crypto/sha256"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func testKey(i int) ckey { return subjectKey(fmt.Sprintf("s_%026d", i)) }

// TestLRUPurge: purge empties the cache; it refills and evicts as before,
// and nil caches (capacity 0) take a purge too.
func TestLRUPurge(t *testing.T) {
	now := time.Now()
	c := newLRU(50)
	for i := range 80 {
		c.put(testKey(i), i, now.Add(time.Minute), 0)
	}
	c.purge()
	if n := c.len(); n != 0 {
		t.Fatalf("%d entries after purge", n)
	}
	for i := range 80 {
		if _, ok := c.get(testKey(i), now); ok {
			t.Fatalf("key %d answers after purge", i)
		}
	}
	for i := range 200 {
		c.put(testKey(i), -i, now.Add(time.Minute), 0)
		if n := c.len(); n > 50 {
			t.Fatalf("after purge and %d puts: %d entries, capacity 50", i+1, n)
		}
	}
	if v, ok := c.get(testKey(199), now); !ok || v.(int) != -199 {
		t.Fatalf("last put after purge: %v, %v", v, ok)
	}
	var none *lru
	none.purge()
}

// TestLRUBoundExpiryAndDelete: the cache never holds more than its
// capacity, an expired entry is not served but is still seen by expired,
// put replaces, del removes, and keys of different kinds never collide.
func TestLRUBoundExpiryAndDelete(t *testing.T) {
	now := time.Now()
	c := newLRU(100)
	for i := range 1000 {
		c.put(testKey(i), i, now.Add(time.Minute), 0)
		if n := c.len(); n > 100 {
			t.Fatalf("after %d puts: %d entries, capacity 100", i+1, n)
		}
	}
	if n := c.len(); n != 100 {
		t.Fatalf("%d entries, want 100", n)
	}
	held := 0
	for i := range 1000 {
		if v, ok := c.get(testKey(i), now); ok {
			if v.(int) != i {
				t.Fatalf("key %d holds %v", i, v)
			}
			held++
		}
	}
	if held != 100 {
		t.Fatalf("%d keys answer, want 100", held)
	}

	c = newLRU(10)
	c.put(testKey(1), "a", now.Add(time.Second), 0)
	if v, ok := c.get(testKey(1), now); !ok || v != "a" {
		t.Fatalf("get = %v, %v", v, ok)
	}
	if _, ok := c.get(testKey(1), now.Add(time.Second)); ok {
		t.Fatal("an expired entry was served")
	}
	if v, ok := c.expired(testKey(1), now.Add(time.Second)); !ok || v != "a" {
		t.Fatalf("expired = %v, %v", v, ok)
	}
	if _, ok := c.expired(testKey(1), now); ok {
		t.Fatal("expired reports a live entry")
	}
	c.put(testKey(1), "b", now.Add(time.Minute), 0)
	if v, _ := c.get(testKey(1), now.Add(time.Second)); v != "b" {
		t.Fatalf("after put: %v", v)
	}
	c.del(testKey(1))
	if _, ok := c.get(testKey(1), now); ok {
		t.Fatal("a deleted entry was served")
	}
	if _, ok := c.expired(testKey(1), now.Add(time.Hour)); ok {
		t.Fatal("a deleted entry is still seen by expired")
	}
	if c.len() != 0 {
		t.Fatalf("%d entries after delete", c.len())
	}
	var sum [32]byte
	copy(sum[:], fmt.Sprintf("s_%026d", 2))
	c.put(testKey(2), "subject", now.Add(time.Minute), 0)
	if _, ok := c.get(userKey(sum), now); ok {
		t.Fatal("a user key with a subject's bytes found the subject's entry")
	}
	if k := userKeyHex("not hex"); k.kind != 0 {
		t.Fatal("a malformed hash names a user entry")
	}
}

// TestLRUKeepsWhatIsRead: entries read between evictions survive a scan of
// new keys that fills the cache many times over (the CLOCK hand gives them
// a second chance); unread ones are evicted first.
func TestLRUKeepsWhatIsRead(t *testing.T) {
	now := time.Now()
	c := newLRU(100)
	for i := range 100 {
		c.put(testKey(i), i, now.Add(time.Hour), 0)
	}
	for n := 100; n < 1100; n++ {
		for i := range 10 { // the hot set
			if _, ok := c.get(testKey(i), now); !ok {
				t.Fatalf("hot key %d evicted after %d puts", i, n)
			}
		}
		c.put(testKey(n), n, now.Add(time.Hour), 0)
	}
}

// TestLRUConcurrent: gets, puts and deletes from many goroutines (run
// with -race) keep the bound and never serve another key's value.
func TestLRUConcurrent(t *testing.T) {
	now := time.Now()
	c := newLRU(64)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 5000 {
				k := (i*7 + g) % 200
				switch i % 5 {
				case 0:
					c.put(testKey(k), k, now.Add(time.Minute), 0)
				case 1:
					c.del(testKey(k))
				default:
					if v, ok := c.get(testKey(k), now); ok && v.(int) != k {
						t.Errorf("key %d holds %v", k, v)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if n := c.len(); n > 64 || n < 0 {
		t.Fatalf("%d entries, capacity 64", n)
	}
	held := 0
	for k := range 200 {
		if _, ok := c.get(testKey(k), now); ok {
			held++
		}
	}
	if held != c.len() {
		t.Fatalf("%d keys answer, len says %d", held, c.len())
	}
}

// BenchmarkLRUGet reads a cache of 20k entries (the load bench's 10k users
// and their keychains) from every core.
func BenchmarkLRUGet(b *testing.B) {
	const n = 20_000
	c := newLRU(n)
	now := time.Now()
	keys := make([]ckey, n)
	for i := range keys {
		keys[i] = userKey(sha256.Sum256([]byte(strconv.Itoa(i))))
		c.put(keys[i], i, now.Add(time.Hour), 0)
	}
	var seq atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		i := int(seq.Add(7919))
		for pb.Next() {
			if _, ok := c.get(keys[i%n], now); !ok {
				b.Error("miss")
				return
			}
			i += 7919
		}
	})
}
