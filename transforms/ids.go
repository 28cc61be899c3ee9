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

// add appends id and returns its offset in the arena.
func (l *idList) add(id []byte) int {
	off := len(l.arena)
	l.arena = binary.AppendUvarint(l.arena, uint64(len(id)))
	l.arena = append(l.arena, id...)
	l.n++
	return off
}

// at returns the id at offset off (it aliases the arena).
func (l *idList) at(off int) []byte {
	b := l.arena[off:]
	n, k := binary.Uvarint(b)
	return b[k : k+int(n)]
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
	hash func([]byte) uint64
	ids  idList
	// at maps an id's hash to its offset in ids. Ids whose hash another id
	// already has (or that would not fit a 32-bit offset) are in more.
	at   map[uint64]uint32
	more map[string]struct{}
}

func newIDSet() *idSet {
	seed := maphash.MakeSeed()
	return &idSet{hash: func(b []byte) uint64 { return maphash.Bytes(seed, b) }, at: map[uint64]uint32{}}
}

// add puts id in the set (it is copied).
func (s *idSet) add(id []byte) {
	h := s.hash(id)
	off, taken := s.at[h]
	switch {
	case taken && bytes.Equal(s.ids.at(int(off)), id):
		return
	case taken || len(s.ids.arena) > 1<<32-1-binary.MaxVarintLen64-len(id):
		if s.more == nil {
			s.more = map[string]struct{}{}
		}
		s.more[string(id)] = struct{}{}
	default:
		s.at[h] = uint32(s.ids.add(id))
	}
}

// has reports whether id is in the set.
func (s *idSet) has(id []byte) bool {
	if s == nil {
		return false
	}
	if off, ok := s.at[s.hash(id)]; ok && bytes.Equal(s.ids.at(int(off)), id) {
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
	return s.ids.n + len(s.more)
}
