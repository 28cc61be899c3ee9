package transforms

import (
	"bytes"
	"encoding/binary"
	"hash/maphash"
)

// Sets and lists of event ids held by hourly publication (the lookback ids
// of earlier hours, the ids of the files a process wrote) keep no pointer
// per id: every id's bytes are in one arena, and the set's index is a map
// of integers, which the garbage collector does not scan. As Go strings in
// maps and slices, the ~1M ids of an hour were ~1M small objects that every
// GC cycle of a publication marked again: with the shard buffers, 40% of
// hourly's CPU was the collector.

// idList is a list of ids, each a uvarint length and the bytes in one
// arena.
type idList struct {
	arena []byte
	n     int
}

func (l *idList) add(id []byte) {
	l.arena = binary.AppendUvarint(l.arena, uint64(len(id)))
	l.arena = append(l.arena, id...)
	l.n++
}

// each calls fn with every id, in order; the id aliases the arena.
func (l *idList) each(fn func(id []byte)) {
	for b := l.arena; len(b) > 0; {
		n, k := binary.Uvarint(b)
		fn(b[k : k+int(n)])
		b = b[k+int(n):]
	}
}

// idSet is a set of ids.
type idSet struct {
	hash  func([]byte) uint64
	arena []byte
	// at maps an id's hash to its offset in arena (the uvarint length
	// first). Ids whose hash another id already has are in more.
	at   map[uint64]uint32
	more map[string]struct{}
	n    int
}

func newIDSet() *idSet {
	seed := maphash.MakeSeed()
	return &idSet{hash: func(b []byte) uint64 { return maphash.Bytes(seed, b) }, at: map[uint64]uint32{}}
}

func (s *idSet) idAt(off uint32) []byte {
	b := s.arena[off:]
	n, k := binary.Uvarint(b)
	return b[k : k+int(n)]
}

// add puts id in the set (it is copied).
func (s *idSet) add(id []byte) {
	h := s.hash(id)
	if off, ok := s.at[h]; ok {
		if bytes.Equal(s.idAt(off), id) {
			return
		}
		if s.more == nil {
			s.more = map[string]struct{}{}
		}
		if _, ok := s.more[string(id)]; !ok {
			s.more[string(id)] = struct{}{}
			s.n++
		}
		return
	}
	if len(s.arena) > 1<<32-1-binary.MaxVarintLen64-len(id) {
		// Past 4 GiB of ids the offsets would not fit: the rest go by name.
		if s.more == nil {
			s.more = map[string]struct{}{}
		}
		if _, ok := s.more[string(id)]; !ok {
			s.more[string(id)] = struct{}{}
			s.n++
		}
		return
	}
	s.at[h] = uint32(len(s.arena))
	s.arena = binary.AppendUvarint(s.arena, uint64(len(id)))
	s.arena = append(s.arena, id...)
	s.n++
}

// has reports whether id is in the set.
func (s *idSet) has(id []byte) bool {
	if s == nil {
		return false
	}
	if off, ok := s.at[s.hash(id)]; ok && bytes.Equal(s.idAt(off), id) {
		return true
	}
	_, ok := s.more[string(id)]
	return ok
}

// len is the number of ids in the set.
func (s *idSet) len() int {
	if s == nil {
		return 0
	}
	return s.n
}
