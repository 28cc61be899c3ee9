package keyclient

import (
	"encoding/binary"
	"errors"
	"slices"
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

// maxSlots bounds the (category, version) keys one entry holds: a user's
// categories, and for a subject every live version of each. An answer
// with more is not cached (it is rare: many rotations).
const maxSlots = 8

// An entry is what the cache knows of one user or subject, encoded into
// the bytes a cache.Blobs holds: either a negative answer (deleted,
// unknown) or the categories fetched so far, each with its own expiry.
// What tells the categories apart comes first, the key bytes after:
//
//	neg u8 | n u8 | len(subject) u16 | subject
//	n × (category u16 | revoked u8 | flags u8 | version i32 | expires i64)
//	n × (secret [32] | AES-GCM key [32] | AES-SIV key [64] if flags&flagSIV)
//
// A key derived without its AES-SIV key (keyclient.Options.Deterministic)
// keeps 64 bytes, not 128: most of an entry's categories have no
// deterministic field.
//
// The cache holds no pointer per entry and the collector never scans it;
// an answer copies out what it hands over, so that a later store never
// changes keys a caller holds.
type entry []byte

const (
	entryHeader = 4
	metaSize    = 16
	slotKeySize = fieldcrypt.CategoryKeySize + fieldcrypt.DerivedSize    // with an AES-SIV key
	slotGCMSize = fieldcrypt.CategoryKeySize + fieldcrypt.DerivedGCMSize // without one
	maxSubject  = 1024                                                   // a longer subject's answers are not cached
	flagSIV     = 1                                                      // the slot holds an AES-SIV key
)

func (e entry) neg() negKind { return negKind(e[0]) }
func (e entry) n() int       { return int(e[1]) }

// metaStart is where the categories start: past the subject.
func (e entry) metaStart() int      { return entryHeader + int(binary.LittleEndian.Uint16(e[2:])) }
func (e entry) subject() []byte     { return e[entryHeader:e.metaStart()] }
func (e entry) meta(i int) []byte   { off := e.metaStart() + i*metaSize; return e[off : off+metaSize] }
func (e entry) cat(i int) uint16    { return binary.LittleEndian.Uint16(e.meta(i)) }
func (e entry) revoked(i int) bool  { return e.meta(i)[2] != 0 }
func (e entry) hasSIV(i int) bool   { return e.meta(i)[3]&flagSIV != 0 }
func (e entry) version(i int) int32 { return int32(binary.LittleEndian.Uint32(e.meta(i)[4:])) }
func (e entry) expires(i int) int64 { return int64(binary.LittleEndian.Uint64(e.meta(i)[8:])) }
func (e entry) key(i int) []byte {
	off := e.metaStart() + e.n()*metaSize
	for j := range i {
		off += e.keySize(j)
	}
	return e[off : off+e.keySize(i)]
}

// keySize is the bytes of slot i's key: with its AES-SIV key or without.
func (e entry) keySize(i int) int {
	if e.hasSIV(i) {
		return slotKeySize
	}
	return slotGCMSize
}

// subjectOf returns e's subject as a string: a subject's entry answers
// with the id it was asked for, with no copy.
func (e entry) subjectOf(kind entryKind, id string) string {
	if sub := e.subject(); kind != kindSubject || string(sub) != id {
		return string(sub)
	}
	return id
}

// valid reports whether e is as long as its header says (it always is:
// only appendEntry writes entries).
func (e entry) valid() bool {
	if len(e) < entryHeader || len(e) < e.metaStart()+e.n()*metaSize {
		return false
	}
	size := e.metaStart() + e.n()*metaSize
	for i := range e.n() {
		size += e.keySize(i)
	}
	return len(e) == size
}

// appendEntry encodes an entry of subject (and negative answer neg, or
// the slots of ss) onto dst.
func appendEntry(dst []byte, subject string, neg negKind, ss *slots) []byte {
	dst = append(dst, byte(neg), byte(len(ss.list())))
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(subject)))
	dst = append(dst, subject...)
	for _, s := range ss.list() {
		dst = binary.LittleEndian.AppendUint16(dst, s.cat)
		var r, flags byte
		if s.revoked {
			r = 1
		}
		if s.key.derived.HasSIV() {
			flags |= flagSIV
		}
		dst = append(dst, r, flags)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(s.version))
		dst = binary.LittleEndian.AppendUint64(dst, uint64(s.expires))
	}
	for i := range ss.list() {
		k := &ss.s[i].key
		dst = append(dst, k.secret[:]...)
		d := k.derived.Expose()
		if !k.derived.HasSIV() {
			d = d[:fieldcrypt.DerivedGCMSize]
		}
		dst = append(dst, d...)
	}
	return dst
}

// slotKey is the key bytes of one slot: the secret and what was derived
// from it (fieldcrypt.DeriveKey).
type slotKey struct {
	secret  [fieldcrypt.CategoryKeySize]byte
	derived fieldcrypt.Derived
}

// load copies the key bytes of an entry's slot into k (zero where a slot
// without an AES-SIV key has none, as fieldcrypt.DeriveGCMKey gives).
func (k *slotKey) load(b []byte) {
	copy(k.secret[:], b)
	d := k.derived.Expose()
	n := copy(d, b[fieldcrypt.CategoryKeySize:])
	clear(d[n:])
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

func (e entry) slot(i int) slot {
	s := slot{cat: e.cat(i), revoked: e.revoked(i), version: e.version(i), expires: e.expires(i)}
	s.key.load(e.key(i))
	return s
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

func (ss *slots) list() []slot {
	if ss == nil {
		return nil
	}
	return ss.s[:ss.n]
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

// keyCache is the client's cache of entries (a cache.Blobs: CLOCK
// eviction, a time to live per entry, no pointer per entry), with the
// category names interned.
type keyCache struct {
	c   *cache.Blobs
	now func() time.Time

	mu   sync.RWMutex
	cats []string
	idx  map[string]uint16
}

func newKeyCache(capacity int, now func() time.Time) *keyCache {
	kc := &keyCache{now: now, idx: map[string]uint16{}}
	if capacity > 0 {
		kc.c = cache.NewBlobs(capacity, cache.Options{Now: now, Shards: 32})
	}
	return kc
}

// appendKey encodes the cache key of one user id or subject onto dst.
func appendKey(dst []byte, kind entryKind, id string) []byte {
	return append(append(dst, byte(kind)), id...)
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
	now  time.Time
}

// newQuery interns categories; false when one cannot be (the category
// table is full: nothing of them can be cached either).
func (kc *keyCache) newQuery(categories []string) (*query, bool) {
	q := &query{cats: categories, ids: make([]uint16, len(categories)), now: kc.now()}
	for j, cat := range categories {
		ci, ok := kc.intern(cat)
		if !ok {
			return nil, false
		}
		q.ids[j] = ci
	}
	return q, true
}

// lookup answers q for each of ids from live entries, into a.out, and
// returns the indexes of the ids it could not answer: no entry, a
// negative one expired, or no live part for one of the categories.
func (kc *keyCache) lookup(kind entryKind, ids []string, q *query, a *Answers) (misses []int) {
	if kc.c == nil {
		misses = make([]int, len(ids))
		for i := range misses {
			misses[i] = i
		}
		return misses
	}
	a.reset()
	a.idBuf, a.ids, a.answered = a.idBuf[:0], a.ids[:0], grow(a.answered, len(ids))
	for _, id := range ids {
		a.idBuf = appendKey(a.idBuf, kind, id)
	}
	off := 0
	for _, id := range ids {
		a.ids = append(a.ids, a.idBuf[off:off+1+len(id):off+1+len(id)])
		off += 1 + len(id)
	}
	kc.c.PeekMany(a.ids, q.now, func(i int, e []byte) {
		a.answered[i] = kc.answer(entry(e), kind, ids[i], q, a, &a.out[i])
	})
	for i, ok := range a.answered {
		if !ok {
			misses = append(misses, i)
		}
	}
	return misses
}

// answer builds the answer for q from e (the cached entry of id, read in
// place) into dst, its keys copied into a's room.
func (kc *keyCache) answer(e entry, kind entryKind, id string, q *query, a *Answers, dst *UserKeys) bool {
	if !e.valid() {
		return false
	}
	if e.neg() != negNone {
		*dst = UserKeys{Subject: e.subjectOf(kind, id), Err: e.neg().err()}
		return true
	}
	now, n := q.now.UnixNano(), 0
	for _, ci := range q.ids {
		found := false
		for i := range e.n() {
			if e.cat(i) != ci {
				continue
			}
			if now >= e.expires(i) {
				return false
			}
			found = true
			if !e.revoked(i) {
				n++
			}
		}
		if !found {
			return false
		}
	}
	subject := e.subjectOf(kind, id)
	r := UserKeys{Subject: subject}
	if n > 0 {
		r.Keys = carve(&a.keys, n)[:0]
	}
	held := carve(&a.held, n)
	for j, ci := range q.ids {
		for i := range e.n() {
			switch {
			case e.cat(i) != ci:
			case e.revoked(i):
				r.Revoked = append(r.Revoked, q.cats[j])
			default:
				k := &held[len(r.Keys)]
				k.load(e.key(i))
				r.Keys = append(r.Keys, fieldcrypt.CategoryKey{Subject: subject, Category: q.cats[j], Version: int(e.version(i)),
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
	if kc.c == nil || len(r.Subject) > maxSubject {
		return
	}
	now := kc.now()
	// The key and entry are encoded on the stack when they fit (as they
	// do but for long ids): a store per key fetched allocates nothing.
	var kb [128]byte
	var eb [entryHeader + 64 + maxSlots*(metaSize+slotKeySize)]byte
	defer clear(eb[:])
	key := appendKey(kb[:0], kind, id)
	if r.Err != nil {
		if neg := negOf(r.Err); neg != negNone {
			kc.c.PutUntil(key, appendEntry(eb[:0], r.Subject, neg, nil), now.Add(negativeTTL))
		}
		return
	}
	exp := now.Add(ttl)
	var e slots
	defer clear(e.s[:])
	var wb [maxSlots]uint16
	want := wb[:0]
	for _, cat := range cats {
		ci, ok := kc.intern(cat)
		if !ok {
			return
		}
		want = append(want, ci)
	}
	latest := exp.UnixNano()
	full := false
	kc.c.PeekAt(key, now, func(b []byte) {
		if old := entry(b); old.valid() && old.neg() == negNone && string(old.subject()) == r.Subject {
			for i := range old.n() {
				if now.UnixNano() < old.expires(i) && !slices.Contains(want, old.cat(i)) {
					full = full || !e.add(old.slot(i))
				}
			}
		}
	})
	if full {
		return // more than an entry holds: not cached
	}
	for j, cat := range cats {
		s := slot{cat: want[j], expires: exp.UnixNano()}
		if slices.Contains(r.Revoked, cat) {
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
	for _, s := range e.list() {
		latest = max(latest, s.expires)
	}
	kc.c.PutUntil(key, appendEntry(eb[:0], r.Subject, negNone, &e), time.Unix(0, latest))
}

// forget drops every entry of one user id or subject (both spaces, matched by
// id and by the subject an entry holds).
func (kc *keyCache) forget(idOrSubject string) {
	if kc.c == nil {
		return
	}
	kc.c.DeleteFunc(func(k, e []byte) bool {
		return string(k[1:]) == idOrSubject || entry(e).valid() && string(entry(e).subject()) == idOrSubject
	})
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
