package cache

import (
	"bytes"
	"encoding/binary"
	"hash/maphash"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Blobs is the cache for keys and values that are byte strings, with
// Cache's behavior (a time to live per entry, CLOCK eviction, shards),
// kept where the garbage collector never looks: each shard is one index
// array of 16-byte slots (open addressing, linear probing, grown with the
// entries so that it stays small enough for the CPU's caches) and arenas
// of bytes holding each entry's expiry, key and value side by side. A
// lookup reads a slot of the index and then one record, both
// pointer-free; nothing is allocated per entry. This is what the key client keeps its users' key
// bytes in (hundreds of thousands of them).
//
// Get copies a value out (into the caller's room), so that what a caller
// holds is never written by a later Put. A value is at most MaxBlob bytes
// with its key; Put refuses a larger one.
type Blobs struct {
	seed   maphash.Seed
	weak   uint64 // tests: only this many hashes (0: maphash's 2⁶⁴)
	now    func() time.Time
	shards []blobShard
	cap    int
	// batches is PeekMany's scratch, reused.
	batches sync.Pool
}

// MaxBlob is the most bytes a Blobs entry holds, key and value together.
const MaxBlob = maxUnits*unitSize - recordHeader

const (
	unitSize     = 64 // arena space is handed out in units of a cache line
	maxUnits     = 64
	recordHeader = 12 // key length, value length (uint16 each), expiry (int64)
	chunkShift   = 12 // a record's handle: chunk << chunkShift | unit
	chunkUnits   = 1 << chunkShift
)

type blobShard struct {
	mu    sync.RWMutex
	slots []blobSlot // a power of two long, at least twice n
	mask  uint64
	most  int // the length slots grows to: at least twice limit
	n     int // entries
	limit int // most entries
	hand  uint64
	// The records, in chunks of chunkUnits units that never move; free
	// lists by size, in units.
	chunks [][]byte
	top    int // units used of the last chunk
	free   [maxUnits + 1][]uint32
	_      [40]byte
}

// blobSlot is one slot of a shard's index: hash 0 is an empty slot.
type blobSlot struct {
	hash uint64
	at   uint32        // the record's handle
	ref  atomic.Uint32 // referenced since the hand last passed
}

// NewBlobs returns a cache of at most capacity entries (minimum 1), split
// into shards as Options say (TTL is not used: entries live until the
// time PutUntil gives).
func NewBlobs(capacity int, o Options) *Blobs {
	capacity = max(capacity, 1)
	n := o.shards(capacity)
	c := &Blobs{seed: maphash.MakeSeed(), now: o.Now, shards: make([]blobShard, n), cap: capacity}
	if c.now == nil {
		c.now = time.Now
	}
	c.batches.New = func() any { return new(peekBatch) }
	limit := (capacity + n - 1) / n
	for i := range c.shards {
		c.shards[i].limit = limit
		c.shards[i].reset()
	}
	return c
}

// reset empties the shard and lets go of its memory (mu held, or new),
// zeroed first: records may hold key bytes, as release says.
func (sh *blobShard) reset() {
	for _, ch := range sh.chunks {
		clear(ch)
	}
	sh.most = 1 << bits.Len(uint(2*sh.limit-1))
	size := min(sh.most, 64)
	sh.slots, sh.mask, sh.n, sh.hand = make([]blobSlot, size), uint64(size-1), 0, 0
	sh.chunks, sh.top, sh.free = nil, 0, [maxUnits + 1][]uint32{}
}

func (c *Blobs) hash(key []byte) uint64 {
	h := maphash.Bytes(c.seed, key)
	if c.weak != 0 {
		h = (h%c.weak + 1) * 0x9e3779b97f4a7c15
	}
	if h == 0 {
		h = 1
	}
	return h
}

func (c *Blobs) shard(h uint64) *blobShard { return &c.shards[c.shardIndex(h)] }

// shardIndex picks a shard by the high bits of a hash (the low ones pick
// the slot in its index).
func (c *Blobs) shardIndex(h uint64) int { return int((h >> 32) % uint64(len(c.shards))) }

// record returns the bytes of the record at handle at: its header, key and
// value, and room up to its size in units.
func (sh *blobShard) record(at uint32) []byte {
	ch := sh.chunks[at>>chunkShift]
	off := int(at&(chunkUnits-1)) * unitSize
	return ch[off:]
}

func recordKey(r []byte) []byte {
	return r[recordHeader : recordHeader+int(binary.LittleEndian.Uint16(r))]
}

func recordValue(r []byte) []byte {
	k, v := int(binary.LittleEndian.Uint16(r)), int(binary.LittleEndian.Uint16(r[2:]))
	return r[recordHeader+k : recordHeader+k+v]
}

// recordExpires is the record's expiry, in Unix nanoseconds (0: none).
func recordExpires(r []byte) int64 { return int64(binary.LittleEndian.Uint64(r[4:])) }

func live(r []byte, now int64) bool {
	exp := recordExpires(r)
	return exp == 0 || now < exp
}

func recordUnits(r []byte) int {
	return unitsFor(int(binary.LittleEndian.Uint16(r)) + int(binary.LittleEndian.Uint16(r[2:])))
}

func unitsFor(kv int) int { return (recordHeader + kv + unitSize - 1) / unitSize }

// find returns the index slot of key (mu held).
func (sh *blobShard) find(h uint64, key []byte) (uint64, bool) {
	for i := h & sh.mask; ; i = (i + 1) & sh.mask {
		s := &sh.slots[i]
		if s.hash == 0 {
			return i, false
		}
		if s.hash == h && bytes.Equal(recordKey(sh.record(s.at)), key) {
			return i, true
		}
	}
}

// hit returns the value of key's entry if it is live at now (Unix
// nanoseconds), and marks the entry referenced (mu held, read or write).
func (sh *blobShard) hit(h uint64, key []byte, now int64) ([]byte, bool) {
	i, ok := sh.find(h, key)
	if !ok {
		return nil, false
	}
	s := &sh.slots[i]
	r := sh.record(s.at)
	if !live(r, now) {
		return nil, false
	}
	if s.ref.Load() == 0 {
		s.ref.Store(1) // written once per pass of the hand, not per hit
	}
	return recordValue(r), true
}

// Get appends the value of key's live entry to dst and marks the entry
// referenced; false (and dst) when there is none.
func (c *Blobs) Get(dst, key []byte) ([]byte, bool) {
	return c.GetAt(dst, key, c.now())
}

// GetAt is Get with the time the entry must be live at (a caller looking
// up many keys reads the clock once).
func (c *Blobs) GetAt(dst, key []byte, now time.Time) ([]byte, bool) {
	ok := c.PeekAt(key, now, func(v []byte) { dst = append(dst, v...) })
	return dst, ok
}

// PeekAt calls f with the value of key's entry, if live at now, under the
// entry's read lock, without copying it, and marks the entry referenced;
// it reports whether there was one. f must not keep or modify the value,
// nor use the cache.
func (c *Blobs) PeekAt(key []byte, now time.Time, f func(value []byte)) bool {
	h := c.hash(key)
	sh := c.shard(h)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	v, ok := sh.hit(h, key, now.UnixNano())
	if ok {
		f(v)
	}
	return ok
}

// PeekMany is PeekAt of every key of keys, calling f(i, value) for each
// live entry found (in no particular order), taking each shard's read
// lock once. It reads ahead: the index slots and records of one shard's
// keys are all asked of memory before the first is answered, so that a
// cache much larger than the CPU's waits once per shard rather than once
// per key.
func (c *Blobs) PeekMany(keys [][]byte, now time.Time, f func(i int, value []byte)) {
	if len(keys) == 0 {
		return
	}
	b := c.batches.Get().(*peekBatch)
	defer c.batches.Put(b)
	b.order(c, keys)
	t := now.UnixNano()
	for si := range c.shards {
		refs := b.refs[b.start[si]:b.start[si+1]]
		if len(refs) == 0 {
			continue
		}
		sh := &c.shards[si]
		sh.mu.RLock()
		sh.readAhead(refs, &b.touched)
		for _, r := range refs {
			if v, ok := sh.hit(r.h, keys[r.i], t); ok {
				f(int(r.i), v)
			}
		}
		sh.mu.RUnlock()
	}
}

// peekBatch is PeekMany's scratch: the keys' hashes in shard order.
type peekBatch struct {
	hashes  []peekRef // in key order
	refs    []peekRef // in shard order
	start   []int     // refs of shard s: refs[start[s]:start[s+1]]
	next    []int
	touched byte // keeps readAhead's loads from being optimized away
}

type peekRef struct {
	h uint64
	i int32
}

// order sorts keys by shard (counting sort: one pass to count, one to place).
func (b *peekBatch) order(c *Blobs, keys [][]byte) {
	n := len(c.shards)
	b.start = slices.Grow(b.start[:0], n+1)[:n+1]
	clear(b.start)
	b.hashes = slices.Grow(b.hashes[:0], len(keys))[:len(keys)]
	b.refs = slices.Grow(b.refs[:0], len(keys))[:len(keys)]
	for i, k := range keys {
		h := c.hash(k)
		b.hashes[i] = peekRef{h: h, i: int32(i)}
		b.start[c.shardIndex(h)+1]++
	}
	for s := range n {
		b.start[s+1] += b.start[s]
	}
	b.next = append(b.next[:0], b.start[:n]...)
	for _, r := range b.hashes {
		si := c.shardIndex(r.h)
		b.refs[b.next[si]] = r
		b.next[si]++
	}
}

// readAhead loads the index slot and record head of each ref (mu held),
// independent loads the CPU overlaps, so that the answers find them in
// its cache.
func (sh *blobShard) readAhead(refs []peekRef, sink *byte) {
	var x byte
	for _, r := range refs {
		if s := &sh.slots[r.h&sh.mask]; s.hash == r.h {
			rec := sh.record(s.at)
			x ^= rec[0]
			if len(rec) > unitSize {
				x ^= rec[unitSize]
			}
		}
	}
	*sink ^= x
}

// PutUntil inserts or replaces key's entry, to live until expires (zero:
// until evicted). It reports false, and leaves the cache as it was, when
// key and value together are longer than MaxBlob.
func (c *Blobs) PutUntil(key, value []byte, expires time.Time) bool {
	if len(key)+len(value) > MaxBlob {
		return false
	}
	var exp int64
	if !expires.IsZero() {
		exp = expires.UnixNano()
	}
	h := c.hash(key)
	sh := c.shard(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	i, ok := sh.find(h, key)
	if ok {
		s := &sh.slots[i]
		sh.release(s.at)
		s.at = sh.write(key, value, exp)
		s.ref.Store(1) // fetched again while cached: in use
		return true
	}
	switch {
	case sh.n >= sh.limit:
		sh.evict(c.now().UnixNano())
		i, _ = sh.find(h, key) // eviction moves slots
	case 2*(sh.n+1) > len(sh.slots) && len(sh.slots) < sh.most:
		sh.grow()
		i, _ = sh.find(h, key)
	}
	s := &sh.slots[i]
	s.hash, s.at = h, sh.write(key, value, exp)
	s.ref.Store(0) // a new entry read only once goes at the hand's next pass
	sh.n++
	return true
}

// grow doubles the index (mu held).
func (sh *blobShard) grow() {
	old := sh.slots
	sh.slots = make([]blobSlot, 2*len(old))
	sh.mask = uint64(len(sh.slots) - 1)
	for i := range old {
		o := &old[i]
		if o.hash == 0 {
			continue
		}
		j := o.hash & sh.mask
		for sh.slots[j].hash != 0 {
			j = (j + 1) & sh.mask
		}
		s := &sh.slots[j]
		s.hash, s.at = o.hash, o.at
		s.ref.Store(o.ref.Load())
	}
}

// write stores a record of key and value and returns its handle (mu held).
func (sh *blobShard) write(key, value []byte, expires int64) uint32 {
	u := unitsFor(len(key) + len(value))
	var at uint32
	if f := sh.free[u]; len(f) > 0 {
		at, sh.free[u] = f[len(f)-1], f[:len(f)-1]
	} else {
		if len(sh.chunks) == 0 || sh.top+u > chunkUnits {
			sh.chunks = append(sh.chunks, make([]byte, chunkUnits*unitSize))
			sh.top = 0
		}
		at = uint32(len(sh.chunks)-1)<<chunkShift | uint32(sh.top)
		sh.top += u
	}
	r := sh.record(at)
	binary.LittleEndian.PutUint16(r, uint16(len(key)))
	binary.LittleEndian.PutUint16(r[2:], uint16(len(value)))
	binary.LittleEndian.PutUint64(r[4:], uint64(expires))
	copy(r[recordHeader:], key)
	copy(r[recordHeader+len(key):], value)
	return at
}

// release zeroes a record (it may hold key bytes) and frees its room.
func (sh *blobShard) release(at uint32) {
	r := sh.record(at)
	u := recordUnits(r)
	clear(r[:u*unitSize])
	sh.free[u] = append(sh.free[u], at)
}

// evict removes one entry (the shard is full; mu held): the first expired
// entry or entry unreferenced since the hand last passed.
func (sh *blobShard) evict(now int64) {
	for {
		i := sh.hand & sh.mask
		sh.hand++
		s := &sh.slots[i]
		if s.hash == 0 {
			continue
		}
		if s.ref.Load() != 0 && live(sh.record(s.at), now) {
			s.ref.Store(0)
			continue
		}
		sh.remove(i)
		return
	}
}

// remove deletes the entry at index slot i (mu held), moving the entries
// after it back so that every entry stays reachable from its home slot
// (deletion in linear probing without tombstones).
func (sh *blobShard) remove(i uint64) {
	sh.release(sh.slots[i].at)
	sh.n--
	for j := (i + 1) & sh.mask; ; j = (j + 1) & sh.mask {
		s := &sh.slots[j]
		if s.hash == 0 {
			break
		}
		// s may fill the hole at i when i lies between its home and j.
		if (j-s.hash)&sh.mask >= (j-i)&sh.mask {
			d := &sh.slots[i]
			d.hash, d.at = s.hash, s.at
			d.ref.Store(s.ref.Load())
			i = j
		}
	}
	s := &sh.slots[i]
	s.hash, s.at = 0, 0
	s.ref.Store(0)
}

// Delete removes key's entry.
func (c *Blobs) Delete(key []byte) {
	h := c.hash(key)
	sh := c.shard(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if i, ok := sh.find(h, key); ok {
		sh.remove(i)
	}
}

// DeleteFunc removes every entry for which f returns true and returns how
// many it removed. f runs with the entry's shard locked (keep it short,
// do not use the cache from it) and must not keep key or value.
func (c *Blobs) DeleteFunc(f func(key, value []byte) bool) int {
	n := 0
	for si := range c.shards {
		sh := &c.shards[si]
		sh.mu.Lock()
		// Removing moves later entries back into the slot: look at it
		// again. An entry moved back across the end of the array is seen
		// twice, which deletes nothing more.
		for i := uint64(0); i < uint64(len(sh.slots)); {
			s := &sh.slots[i]
			if s.hash != 0 {
				r := sh.record(s.at)
				if f(recordKey(r), recordValue(r)) {
					sh.remove(i)
					n++
					continue
				}
			}
			i++
		}
		sh.mu.Unlock()
	}
	return n
}

// Purge removes every entry and lets go of the memory.
func (c *Blobs) Purge() {
	for si := range c.shards {
		sh := &c.shards[si]
		sh.mu.Lock()
		sh.reset()
		sh.mu.Unlock()
	}
}

// Len is the number of entries (expired ones not yet evicted included).
func (c *Blobs) Len() int {
	n := 0
	for si := range c.shards {
		sh := &c.shards[si]
		sh.mu.RLock()
		n += sh.n
		sh.mu.RUnlock()
	}
	return n
}

// Capacity is the most entries the cache holds.
func (c *Blobs) Capacity() int { return c.cap }
