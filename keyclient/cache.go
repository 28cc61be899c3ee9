package keyclient

import (
	"errors"
	"hash/maphash"
	"sync"
	"time"

	"github.com/lockstream/lockstream/cache"
	"github.com/lockstream/lockstream/fieldcrypt"
)

// entryKind separates the by-user (encrypt) and by-subject (decrypt) spaces.
type entryKind uint8

const (
	kindUser    entryKind = 1 // id is a user id; keys hold the current version
	kindSubject entryKind = 2 // id is a subject; keys hold every live version
)

// cacheKey names the entry of one user id or subject.
type cacheKey struct {
	kind entryKind
	id   string
}

// maxSlots bounds the (category, version) keys one entry holds: a user's
// categories, and for a subject every live version of each. An answer
// with more is not cached (it is rare: many rotations).
const maxSlots = 8

// entry is what the cache knows of one user or subject: either a negative
// answer (deleted, unknown) or the categories fetched so far, each with
// its own expiry. An entry is never written once cached (store replaces
// it): the keys an answer hands out point into it, to its secrets and
// derived keys, rather than copying them. What tells the categories apart
// (cats, expires) comes first, so that an answer reads a cache line or
// two of it, and the key bytes of the categories used only when sealing.
type entry struct {
	subject string
	neg     negKind
	n       uint8
	revoked [maxSlots]bool
	cats    [maxSlots]uint16 // index into keyCache.cats
	version [maxSlots]int32
	expires [maxSlots]int64 // Unix nanoseconds
	keys    []slotKey       // n of them: an entry holds the key bytes of the categories it has, no more
}

// slotKey is the key bytes of one slot: the secret and what was derived
// from it (fieldcrypt.DeriveKey).
type slotKey struct {
	secret  [fieldcrypt.CategoryKeySize]byte
	derived fieldcrypt.Derived
}

// slot is one category of an entry being built (store): one key version
// of it, or its revocation.
type slot struct {
	cat     uint16
	revoked bool
	version int32
	expires int64
	key     slotKey
}

func (e *entry) slot(i uint8) slot {
	return slot{cat: e.cats[i], revoked: e.revoked[i], version: e.version[i], expires: e.expires[i], key: e.keys[i]}
}

// slots collects the slots of an entry being built (store).
type slots struct {
	n uint8
	s [maxSlots]slot
}

func (ss *slots) add(s slot) bool {
	if int(ss.n) == maxSlots {
		return false
	}
	ss.s[ss.n] = s
	ss.n++
	return true
}

// entry makes the entry of subject holding ss.
func (ss *slots) entry(subject string) *entry {
	e := &entry{subject: subject, n: ss.n, keys: make([]slotKey, ss.n)}
	for i, s := range ss.s[:ss.n] {
		e.cats[i], e.revoked[i], e.version[i], e.expires[i], e.keys[i] = s.cat, s.revoked, s.version, s.expires, s.key
	}
	return e
}

// negKind is a negative answer's error, as a number (a value type).
type negKind uint8

const (
	negNone negKind = iota
	negDeleted
	negUnknownSubject
	negUnknownUser
)

func negOf(err error) negKind {
	switch {
	case errors.Is(err, ErrUserDeleted):
		return negDeleted
	case errors.Is(err, ErrUnknownSubject):
		return negUnknownSubject
	case errors.Is(err, ErrUnknownUser):
		return negUnknownUser
	}
	return negNone
}

func (n negKind) err() error {
	switch n {
	case negDeleted:
		return ErrUserDeleted
	case negUnknownSubject:
		return ErrUnknownSubject
	case negUnknownUser:
		return ErrUnknownUser
	}
	return nil
}

// keyCache is the client's cache of entries (package cache: CLOCK
// eviction, a time to live per entry), with the category names interned.
type keyCache struct {
	c   *cache.Cache[cacheKey, *entry]
	now func() time.Time

	mu   sync.RWMutex
	cats []string
	idx  map[string]uint16
}

func newKeyCache(capacity int, now func() time.Time) *keyCache {
	kc := &keyCache{now: now, idx: map[string]uint16{}}
	if capacity > 0 {
		seed := maphash.MakeSeed()
		kc.c = cache.NewHashed[cacheKey, *entry](capacity, cache.Options{Now: now, Shards: 32},
			func(k cacheKey) uint64 { return maphash.String(seed, k.id) ^ uint64(k.kind)*0x9e3779b97f4a7c15 })
	}
	return kc
}

// intern returns the index of a category name.
func (kc *keyCache) intern(cat string) (uint16, bool) {
	kc.mu.RLock()
	i, ok := kc.idx[cat]
	kc.mu.RUnlock()
	if ok {
		return i, true
	}
	kc.mu.Lock()
	defer kc.mu.Unlock()
	if i, ok := kc.idx[cat]; ok {
		return i, true
	}
	if len(kc.cats) >= 1<<16-1 {
		return 0, false
	}
	i = uint16(len(kc.cats))
	kc.cats = append(kc.cats, cat)
	kc.idx[cat] = i
	return i, true
}

// query is one lookup's categories, as asked and as interned, and the
// time their entries must be live at: resolved once for every id of a
// call, not per id.
type query struct {
	cats []string
	ids  []uint16
	now  int64 // Unix nanoseconds
	// keys is where the answers' keys are carved from: one allocation
	// for every id of a call.
	keys []fieldcrypt.CategoryKey
	// touched keeps lookup's reads ahead of the answers (see lookup) from
	// being optimized away; its value means nothing.
	touched byte
}

// newQuery interns categories; false when one cannot be (the category
// table is full: nothing of them can be cached either).
func (kc *keyCache) newQuery(categories []string) (*query, bool) {
	q := &query{cats: categories, ids: make([]uint16, len(categories)), now: kc.now().UnixNano()}
	for j, cat := range categories {
		ci, ok := kc.intern(cat)
		if !ok {
			return nil, false
		}
		q.ids[j] = ci
	}
	return q, true
}

// carve returns room for n keys from q's arena (lookup sizes it for
// every answer of the call).
func (q *query) carve(n int) []fieldcrypt.CategoryKey {
	if cap(q.keys)-len(q.keys) < n {
		q.keys = make([]fieldcrypt.CategoryKey, 0, n)
	}
	k := q.keys[len(q.keys) : len(q.keys) : len(q.keys)+n]
	q.keys = q.keys[:len(q.keys)+n]
	return k
}

// lookup answers q for each of ids from live entries, into out, and
// returns the indexes of the ids it could not answer: no entry, a
// negative one expired, or no live part for one of the categories. The
// entries are found in one pass (cache.GetMany), then answered.
func (kc *keyCache) lookup(kind entryKind, ids []string, q *query, a *Answers) (misses []int) {
	if kc.c == nil {
		misses = make([]int, len(ids))
		for i := range misses {
			misses[i] = i
		}
		return misses
	}
	a.lookups = grow(a.lookups, len(ids))
	for i, id := range ids {
		a.lookups[i] = cacheKey{kind, id}
	}
	a.entries, a.found = grow(a.entries, len(ids)), grow(a.found, len(ids))
	entries, found := a.entries, a.found
	kc.c.GetMany(a.lookups, entries, found)
	defer clear(entries) // held by the answers' keys as long as they are, no longer
	// Each entry is a memory read that likely misses the CPU caches: one
	// tight loop reads every entry (independent loads the CPU overlaps)
	// before the answers, which then find them in its cache, as sealing
	// finds the key bytes and subjects it touched. It also sizes the arena
	// of the answers' keys: at most one key per slot of the entries found.
	var touched byte
	size := 0
	for i, e := range entries {
		if !found[i] || e.neg != negNone {
			continue
		}
		size += int(e.n)
		for j := range e.keys {
			touched ^= e.keys[j].secret[0]
		}
		if e.subject != "" {
			touched ^= e.subject[0]
		}
	}
	if cap(a.keys) < size {
		a.keys = make([]fieldcrypt.CategoryKey, 0, size)
	}
	clear(a.keys[:cap(a.keys)]) // the last call's keys: nothing holds entries past their answers
	q.keys = a.keys[:0]
	q.touched = touched
	for i, e := range entries {
		if !found[i] || !kc.answer(e, q, &a.out[i]) {
			misses = append(misses, i)
		}
	}
	return misses
}

// answer builds the answer for q from e.
func (kc *keyCache) answer(e *entry, q *query, dst *UserKeys) bool {
	if e.neg != negNone {
		*dst = UserKeys{Subject: e.subject, Err: e.neg.err()}
		return true
	}
	n := 0
	for _, ci := range q.ids {
		found := false
		for i := range e.n {
			if e.cats[i] != ci {
				continue
			}
			if q.now >= e.expires[i] {
				return false
			}
			found = true
			if !e.revoked[i] {
				n++
			}
		}
		if !found {
			return false
		}
	}
	r := UserKeys{Subject: e.subject}
	if n > 0 {
		r.Keys = q.carve(n)
	}
	for j, ci := range q.ids {
		for i := range e.n {
			switch {
			case e.cats[i] != ci:
			case e.revoked[i]:
				r.Revoked = append(r.Revoked, q.cats[j])
			default:
				k := &e.keys[i]
				r.Keys = append(r.Keys, fieldcrypt.CategoryKey{Subject: e.subject, Category: q.cats[j], Version: int(e.version[i]),
					Secret: fieldcrypt.SecretOf(k.secret[:])}.WithDerived(&k.derived))
			}
		}
	}
	*dst = r
	return true
}

// store caches the answer r for id and the categories asked (negative
// answers for negativeTTL): the categories of the entry already cached
// that are not in cats stay, if unexpired and of the same subject.
func (kc *keyCache) store(kind entryKind, id string, cats []string, r UserKeys, ttl, negativeTTL time.Duration) {
	if kc.c == nil {
		return
	}
	now := kc.now()
	key := cacheKey{kind, id}
	if r.Err != nil {
		if neg := negOf(r.Err); neg != negNone {
			kc.c.PutUntil(key, &entry{subject: r.Subject, neg: neg}, now.Add(negativeTTL))
		}
		return
	}
	exp := now.Add(ttl)
	var e slots
	want := make([]uint16, 0, len(cats))
	for _, cat := range cats {
		ci, ok := kc.intern(cat)
		if !ok {
			return
		}
		want = append(want, ci)
	}
	latest := exp.UnixNano()
	if old, ok := kc.c.Get(key); ok && old.neg == negNone && old.subject == r.Subject {
		for i := range old.n {
			if now.UnixNano() < old.expires[i] && !containsCat(want, old.cats[i]) {
				if !e.add(old.slot(i)) {
					return
				}
			}
		}
	}
	for j, cat := range cats {
		s := slot{cat: want[j], expires: exp.UnixNano()}
		if containsString(r.Revoked, cat) {
			s.revoked = true
			if !e.add(s) {
				return
			}
			continue
		}
		for _, k := range r.Keys {
			if k.Category != cat || k.Secret.Len() != fieldcrypt.CategoryKeySize {
				continue
			}
			d := k.Derived()
			if d == nil {
				continue // not a usable key (deriveKeys): the caller's cipher reports it
			}
			s.version, s.key = int32(k.Version), slotKey{secret: [fieldcrypt.CategoryKeySize]byte(k.Secret.Expose()), derived: *d}
			if !e.add(s) {
				return // more than an entry holds: not cached
			}
		}
	}
	if e.n == 0 {
		return // the service said nothing about them: do not cache
	}
	for _, s := range e.s[:e.n] {
		latest = max(latest, s.expires)
	}
	kc.c.PutUntil(key, e.entry(r.Subject), time.Unix(0, latest))
}

func containsCat(s []uint16, c uint16) bool {
	for _, x := range s {
		if x == c {
			return true
		}
	}
	return false
}

func containsString(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// forget drops every entry of one user id or subject (both spaces, matched by
// id and by the subject an entry holds).
func (kc *keyCache) forget(idOrSubject string) {
	if kc.c == nil {
		return
	}
	kc.c.DeleteFunc(func(k cacheKey, e *entry) bool { return k.id == idOrSubject || e.subject == idOrSubject })
}

// purge drops every entry.
func (kc *keyCache) purge() {
	if kc.c != nil {
		kc.c.Purge()
	}
}

func (kc *keyCache) len() int {
	if kc.c == nil {
		return 0
	}
	return kc.c.Len()
}
