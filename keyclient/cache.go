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
func (e entry) metaStart() int  { return entryHeader + int(binary.LittleEndian.Uint16(e[2:])) }
func (e entry) subject() []byte { return e[entryHeader:e.metaStart()] }

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
		a.answered[i] = kc.answer(entry(e), kind, ids[i], q, a, i)
	})
	a.nameSubjects()
	for i, ok := range a.answered {
		if !ok {
			misses = append(misses, i)
		}
	}
	return misses
}

// parsed is an entry's slots as read once (parse): their metadata and
// where each one's key bytes are.
type parsed struct {
	n    int
	meta [maxSlots]slotMeta
}

// slotMeta is one slot of a parsed entry; key is its bytes in the entry.
type slotMeta struct {
	cat     uint16
	revoked bool
	version int32
	expires int64
	key     []byte
}

// slot is m as a slot of an entry being built (store), its key copied.
func (m *slotMeta) slot() slot {
	s := slot{cat: m.cat, revoked: m.revoked, version: m.version, expires: m.expires}
	s.key.load(m.key)
	return s
}

// parse reads e's slots into p; false when e is not as long as its
// header says (it always is: only appendEntry writes entries).
func (p *parsed) parse(e entry) bool {
	if len(e) < entryHeader {
		return false
	}
	p.n = e.n()
	start := e.metaStart()
	off := start + p.n*metaSize
	if p.n > maxSlots || len(e) < off {
		return false
	}
	for i := range p.n {
		m := e[start+i*metaSize : start+(i+1)*metaSize]
		size := slotGCMSize
		if m[3]&flagSIV != 0 {
			size = slotKeySize
		}
		if len(e) < off+size {
			return false
		}
		s := &p.meta[i]
		s.cat, s.revoked = binary.LittleEndian.Uint16(m), m[2] != 0
		s.version, s.expires = int32(binary.LittleEndian.Uint32(m[4:])), int64(binary.LittleEndian.Uint64(m[8:]))
		s.key = e[off : off+size]
		off += size
	}
	return off == len(e)
}

// slots returns the parsed slots.
func (p *parsed) slots() []slotMeta { return p.meta[:p.n] }

// answer builds the answer for q from e (the cached entry of the call's
// i-th id, read in place) into a.out[i], its keys copied into a's room.
func (kc *keyCache) answer(e entry, kind entryKind, id string, q *query, a *Answers, i int) bool {
	var p parsed
	if !p.parse(e) {
		return false
	}
	if e.neg() != negNone {
		a.out[i] = UserKeys{Subject: a.subjectOf(e, kind, id, i), Err: e.neg().err()}
		return true
	}
	now, n := q.now.UnixNano(), 0
	for _, ci := range q.ids {
		found := false
		for j := range p.slots() {
			s := &p.meta[j]
			if s.cat != ci {
				continue
			}
			if now >= s.expires {
				return false
			}
			found = true
			if !s.revoked {
				n++
			}
		}
		if !found {
			return false
		}
	}
	dst := &a.out[i]
	*dst = UserKeys{Subject: a.subjectOf(e, kind, id, i)}
	var keys []fieldcrypt.CategoryKey
	var held []slotKey
	if n > 0 {
		keys, held = carve(&a.keys, n), carve(&a.held, n)
		dst.Keys = keys
	}
	m := 0
	for j, ci := range q.ids {
		for k := range p.slots() {
			s := &p.meta[k]
			switch {
			case s.cat != ci:
			case s.revoked:
				dst.Revoked = append(dst.Revoked, q.cats[j])
			default:
				h := &held[m]
				h.load(s.key)
				keys[m] = fieldcrypt.CategoryKey{Subject: dst.Subject, Category: q.cats[j], Version: int(s.version),
					Secret: fieldcrypt.SecretOf(h.secret[:])}
				keys[m].SetDerived(&h.derived)
				m++
			}
		}
	}
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
		var p parsed
		if old := entry(b); p.parse(old) && old.neg() == negNone && string(old.subject()) == r.Subject {
			for i := range p.slots() {
				if m := &p.meta[i]; now.UnixNano() < m.expires && !slices.Contains(want, m.cat) {
					full = full || !e.add(m.slot())
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
		var p parsed
		return string(k[1:]) == idOrSubject || p.parse(e) && string(entry(e).subject()) == idOrSubject
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
