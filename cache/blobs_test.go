package cache

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// blobModel is what a Blobs must answer: a map with expiry times.
type blobModel map[string]blobEntry

type blobEntry struct {
	v   string
	exp int64 // Unix nanoseconds; 0: none
}

// TestBlobsAgainstAMap: random puts, replaces, deletes, expiries and
// evictions, checked after each step against a map (every entry the
// cache answers is the model's, live, and the cache never holds more
// than its capacity), with hashes weak enough that probe chains run long
// and keys share hashes, so that deletion's moving back is exercised.
func TestBlobsAgainstAMap(t *testing.T) {
	for _, tc := range []struct {
		name string
		weak uint64
	}{
		{"maphash", 0},
		{"16 hashes", 16},
		{"one hash", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Unix(1000, 0)
			c := NewBlobs(96, Options{Shards: 1, Now: func() time.Time { return now }})
			c.weak = tc.weak
			m := blobModel{}
			r := rand.New(rand.NewPCG(7, uint64(len(tc.name))))
			key := func() []byte { return fmt.Appendf(nil, "k%d", r.IntN(300)) }
			for step := range 10000 {
				k := key()
				switch op := r.IntN(10); {
				case op < 5:
					v := bytes.Repeat([]byte{byte(step)}, r.IntN(300))
					exp := time.Time{}
					if r.IntN(2) == 0 {
						exp = now.Add(time.Duration(r.IntN(50)) * time.Second)
					}
					if !c.PutUntil(k, v, exp) {
						t.Fatalf("step %d: put of %d bytes refused", step, len(v))
					}
					e := m[string(k)]
					e.v, e.exp = string(v), 0
					if !exp.IsZero() {
						e.exp = exp.UnixNano()
					}
					m[string(k)] = e
				case op < 6:
					c.Delete(k)
					delete(m, string(k))
				case op < 7:
					now = now.Add(time.Second)
				default:
					got, ok := c.Get([]byte("x"), k)
					e, in := m[string(k)]
					live := in && (e.exp == 0 || now.UnixNano() < e.exp)
					if ok && (!live || string(got[1:]) != e.v || got[0] != 'x') {
						t.Fatalf("step %d: %s answered %d bytes, model live %v with %d", step, k, len(got), live, len(e.v))
					}
				}
				// Evicted entries leave the model's answer unknowable:
				// drop from the model what the cache no longer has.
				for mk := range m {
					if _, ok := c.GetAt(nil, []byte(mk), time.Time{}); !ok {
						delete(m, mk)
					}
				}
				if c.Len() > 96 || c.Len() != len(m) {
					t.Fatalf("step %d: len %d, model %d, capacity 96", step, c.Len(), len(m))
				}
			}
		})
	}
}

// TestBlobsEvictionAndReuse: a full cache evicts what was not read since
// the hand last passed before what was, prefers expired entries, and its
// arenas do not grow under churn (freed room is reused).
func TestBlobsEvictionAndReuse(t *testing.T) {
	now := time.Unix(1000, 0)
	c := NewBlobs(64, Options{Shards: 1, Now: func() time.Time { return now }})
	val := make([]byte, 200)
	for i := range 64 {
		c.PutUntil(fmt.Appendf(nil, "k%d", i), val, time.Time{})
	}
	for i := range 32 { // the first half is read
		if _, ok := c.Get(nil, fmt.Appendf(nil, "k%d", i)); !ok {
			t.Fatalf("k%d missing", i)
		}
	}
	for i := 64; i < 96; i++ {
		c.PutUntil(fmt.Appendf(nil, "k%d", i), val, time.Time{})
	}
	// CLOCK over an index of moving slots approximates: an entry moved
	// back behind the hand is passed over until the next pass. Most read
	// entries stay, most unread go.
	read, unread := 0, 0
	for i := range 64 {
		if _, ok := c.GetAt(nil, fmt.Appendf(nil, "k%d", i), now); ok && i < 32 {
			read++
		} else if ok {
			unread++
		}
	}
	if read < 28 || unread > 16 {
		t.Fatalf("after 32 new entries, %d of 32 read entries stayed and %d of 32 never read", read, unread)
	}
	if c.Len() != 64 {
		t.Fatalf("len %d", c.Len())
	}
	chunks := len(c.shards[0].chunks)
	for i := range 100_000 {
		c.PutUntil(fmt.Appendf(nil, "k%d", i%1000), val[:i%200], time.Time{})
	}
	if got := len(c.shards[0].chunks); got > chunks+2 {
		t.Fatalf("arena grew from %d to %d chunks under churn of 64 entries", chunks, got)
	}

	// An expired entry goes before a referenced live one.
	c.Purge()
	c.PutUntil([]byte("old"), val, now.Add(time.Second))
	for i := range 63 {
		c.PutUntil(fmt.Appendf(nil, "live%d", i), val, time.Time{})
		c.Get(nil, fmt.Appendf(nil, "live%d", i))
	}
	now = now.Add(2 * time.Second)
	c.PutUntil([]byte("new"), val, time.Time{})
	for i := range 63 {
		if _, ok := c.Get(nil, fmt.Appendf(nil, "live%d", i)); !ok {
			t.Fatalf("live%d evicted while an expired entry was held", i)
		}
	}
}

// TestBlobsLimits: a record larger than MaxBlob is refused and changes
// nothing; DeleteFunc sees every key and value; Purge empties.
func TestBlobsLimits(t *testing.T) {
	c := NewBlobs(10, Options{})
	c.PutUntil([]byte("a"), []byte("1"), time.Time{})
	if c.PutUntil([]byte("a"), make([]byte, MaxBlob), time.Time{}) {
		t.Fatal("a record past MaxBlob was taken")
	}
	if v, ok := c.Get(nil, []byte("a")); !ok || string(v) != "1" {
		t.Fatalf("a refused put changed a: %q %v", v, ok)
	}
	if !c.PutUntil([]byte("b"), make([]byte, MaxBlob-1), time.Time{}) {
		t.Fatal("a record of MaxBlob refused")
	}
	if v, ok := c.Get(nil, []byte("b")); !ok || len(v) != MaxBlob-1 {
		t.Fatal("b lost")
	}
	c.PutUntil([]byte("c"), []byte("3"), time.Time{})
	n := c.DeleteFunc(func(k, v []byte) bool { return string(k) == "a" || string(v) == "3" })
	if n != 2 || c.Len() != 1 {
		t.Fatalf("DeleteFunc removed %d, %d left", n, c.Len())
	}
	// Removed and purged records are zeroed: they may hold key bytes.
	ch := c.shards[0].chunks[0]
	if bytes.Contains(ch, []byte("3")) || bytes.Contains(ch, []byte{'a', '1'}) {
		t.Fatal("a deleted record's bytes are still in the arena")
	}
	c.Purge()
	if c.Len() != 0 {
		t.Fatal("purge left entries")
	}
	if !bytes.Equal(ch, make([]byte, len(ch))) {
		t.Fatal("purge left bytes in the arena")
	}
	if _, ok := c.Get(nil, []byte("b")); ok {
		t.Fatal("purged entry found")
	}
}

// TestBlobsConcurrent: readers and writers over shared keys (run with
// -race): a value read is always one that was written for its key, whole.
func TestBlobsConcurrent(t *testing.T) {
	c := NewBlobs(512, Options{Shards: 4})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			var buf []byte
			for range 20000 {
				k := fmt.Appendf(nil, "k%d", r.IntN(2000))
				if r.IntN(3) == 0 {
					c.PutUntil(k, bytes.Repeat(k, 1+r.IntN(20)), time.Time{})
					continue
				}
				var ok bool
				if buf, ok = c.Get(buf[:0], k); ok && (len(buf)%len(k) != 0 || !bytes.Equal(buf, bytes.Repeat(k, len(buf)/len(k)))) {
					t.Errorf("%s read %q", k, buf)
					return
				}
			}
		}()
	}
	wg.Wait()
	if c.Len() > 512 {
		t.Fatalf("len %d over capacity", c.Len())
	}
}

// TestBlobsPeekMany: PeekMany answers as Get does, key by key, over every
// shard (present, absent, expired and repeated keys, weak hashes too).
func TestBlobsPeekMany(t *testing.T) {
	for _, weak := range []uint64{0, 3} {
		now := time.Unix(1000, 0)
		c := NewBlobs(2000, Options{Shards: 8, Now: func() time.Time { return now }})
		c.weak = weak
		r := rand.New(rand.NewPCG(3, weak))
		for i := range 1500 {
			exp := time.Time{}
			if i%5 == 0 {
				exp = now.Add(time.Duration(r.IntN(20)-10) * time.Second)
			}
			c.PutUntil(fmt.Appendf(nil, "k%d", i), fmt.Appendf(nil, "v%d", i), exp)
		}
		for round := range 20 {
			keys := make([][]byte, r.IntN(600))
			for i := range keys {
				keys[i] = fmt.Appendf(nil, "k%d", r.IntN(2000))
			}
			got := make([]string, len(keys))
			seen := make([]int, len(keys))
			c.PeekMany(keys, now, func(i int, v []byte) {
				got[i] = string(v)
				seen[i]++
			})
			for i, k := range keys {
				want, ok := c.Get(nil, k)
				if seen[i] > 1 || (seen[i] == 1) != ok || got[i] != string(want) {
					t.Fatalf("weak %d round %d: %s: PeekMany %q (%d calls), Get %q %v", weak, round, k, got[i], seen[i], want, ok)
				}
			}
		}
	}
}

// FuzzBlobs runs the operations its input spells (put, delete, get, tick
// of the clock, PeekMany) against a map, with weak hashes, as
// TestBlobsAgainstAMap does with random ones (make fuzz).
func FuzzBlobs(f *testing.F) {
	f.Add([]byte{0, 1, 5, 0, 2, 9, 2, 1, 3, 1, 4, 0})
	f.Add(bytes.Repeat([]byte{0, 7, 200, 1, 7, 0}, 40))
	f.Fuzz(func(t *testing.T, ops []byte) {
		now := time.Unix(1000, 0)
		c := NewBlobs(16, Options{Shards: 1, Now: func() time.Time { return now }})
		c.weak = 4
		m := blobModel{}
		for len(ops) >= 3 {
			op, k, arg := ops[0]%5, fmt.Appendf(nil, "k%d", ops[1]%40), ops[2]
			ops = ops[3:]
			switch op {
			case 0:
				exp := time.Time{}
				if arg%2 == 1 {
					exp = now.Add(time.Duration(arg%8) * time.Second)
				}
				v := bytes.Repeat([]byte{arg}, int(arg))
				c.PutUntil(k, v, exp)
				e := blobEntry{v: string(v)}
				if !exp.IsZero() {
					e.exp = exp.UnixNano()
				}
				m[string(k)] = e
			case 1:
				c.Delete(k)
				delete(m, string(k))
			case 2:
				now = now.Add(time.Duration(arg%4) * time.Second)
			case 3:
				got, ok := c.Get(nil, k)
				e, in := m[string(k)]
				if ok && (!in || (e.exp != 0 && now.UnixNano() >= e.exp) || string(got) != e.v) {
					t.Fatalf("%s answered %d bytes; model %v %d bytes", k, len(got), in, len(e.v))
				}
			case 4:
				keys := [][]byte{k, fmt.Appendf(nil, "k%d", arg%40)}
				c.PeekMany(keys, now, func(i int, v []byte) {
					e, in := m[string(keys[i])]
					if !in || (e.exp != 0 && now.UnixNano() >= e.exp) || string(v) != e.v {
						t.Fatalf("PeekMany %s answered %d bytes; model %v %d bytes", keys[i], len(v), in, len(e.v))
					}
				})
			}
			for mk := range m {
				if _, ok := c.GetAt(nil, []byte(mk), time.Time{}); !ok {
					delete(m, mk) // evicted
				}
			}
			if c.Len() != len(m) || c.Len() > 16 {
				t.Fatalf("len %d, model %d, capacity 16", c.Len(), len(m))
			}
		}
	})
}
