package server

import (
	"fmt"
	"slices"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	keysv1 "github.com/lockstream/lockstream/keyservice/api/keysv1"
)

// batchCodec is the binary protobuf codec of the server, with a fast path
// for the three batch key requests (scope = 1, ids = 2, categories = 3, all
// strings): their strings are cut from one copy of the request bytes
// instead of being allocated one by one. A batch of 100 user ids was ~100
// small allocations, a third of the server's garbage and so of its GC
// cycles, which were its tail latency. Anything else, or any request the
// fast path does not accept exactly as proto.Unmarshal would (another
// field, another wire type, invalid UTF-8), goes through proto.Unmarshal,
// errors included.
type batchCodec struct{}

func (batchCodec) Name() string   { return "proto" }
func (batchCodec) IsBinary() bool { return true }

func (batchCodec) Marshal(m any) ([]byte, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a protobuf message", m)
	}
	return proto.Marshal(pm)
}

func (batchCodec) MarshalAppend(dst []byte, m any) ([]byte, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a protobuf message", m)
	}
	return proto.MarshalOptions{}.MarshalAppend(dst, pm)
}

func (batchCodec) Unmarshal(data []byte, m any) error {
	switch r := m.(type) {
	case *keysv1.GetOrCreateKeysRequest:
		if scope, ids, cats, ok := decodeUserBatch(data, r); ok {
			r.Scope, r.UserIds, r.Categories = scope, ids, cats
			return nil
		}
	case *keysv1.GetKeysByUserRequest:
		if scope, ids, cats, ok := decodeUserBatch(data, r); ok {
			r.Scope, r.UserIds, r.Categories = scope, ids, cats
			return nil
		}
	case *keysv1.GetKeysBySubjectRequest:
		// Subjects are kept by the service (keychain cache, in-flight
		// reads): always a copy of their own.
		if scope, ids, cats, ok := decodeBatch(data, nil); ok {
			r.Scope, r.Subjects, r.Categories = scope, ids, cats
			return nil
		}
	}
	pm, ok := m.(proto.Message)
	if !ok {
		return fmt.Errorf("%T is not a protobuf message", m)
	}
	if err := proto.Unmarshal(data, pm); err != nil {
		return fmt.Errorf("unmarshal into %T: %w", m, err)
	}
	return nil
}

// decodeUserBatch is decodeBatch with the user ids in a pooled arena,
// parked under msg for the interceptor (see idArena).
func decodeUserBatch(data []byte, msg any) (scope string, ids, cats []string, ok bool) {
	a := idArenas.Get().(*idArena)
	if scope, ids, cats, ok = decodeBatch(data, a); !ok {
		idArenas.Put(a)
		return "", nil, nil, false
	}
	pendingIDs.put(msg, a)
	return scope, ids, cats, true
}

// decodeBatch parses a batch request whose every field is scope (1), an id
// (2) or a category (3), each length-delimited valid UTF-8; ok is false
// for anything else. A repeated scope keeps the last, as protobuf does.
// With an arena, the ids are views of arena memory (see idArena) and scope
// and categories copies of their own; without one, every string is a
// piece of one copy of data.
func decodeBatch(data []byte, arena *idArena) (scope string, ids, cats []string, ok bool) {
	// First pass: check the shape and count, so that the slices are
	// allocated once.
	nIDs, nCats, idBytes := 0, 0, 0
	for b := data; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType || num < 1 || num > 3 {
			return "", nil, nil, false
		}
		b = b[n:]
		v, m := protowire.ConsumeBytes(b)
		if m < 0 || !utf8.Valid(v) {
			return "", nil, nil, false
		}
		b = b[m:]
		switch num {
		case 2:
			nIDs++
			idBytes += len(v)
		case 3:
			nCats++
		}
	}
	var whole string // without an arena: every string is a piece of this one copy
	if arena == nil {
		whole = string(data)
		if nIDs > 0 {
			ids = make([]string, 0, nIDs)
		}
	} else {
		// Sized before the first id is cut: the views must never move.
		arena.buf = slices.Grow(arena.buf[:0], idBytes)
		ids = slices.Grow(arena.ids[:0], nIDs)
	}
	if nCats > 0 {
		cats = make([]string, 0, nCats)
	}
	for off := 0; off < len(data); {
		num, _, n := protowire.ConsumeTag(data[off:])
		off += n
		l, m := protowire.ConsumeVarint(data[off:])
		off += m
		v := data[off : off+int(l)]
		var str string
		switch {
		case arena == nil:
			str = whole[off : off+int(l)]
		case num == 2:
			str = arena.view(v)
		default:
			str = string(v)
		}
		off += int(l)
		switch num {
		case 1:
			scope = str
		case 2:
			ids = append(ids, str)
		case 3:
			cats = append(cats, str)
		}
	}
	if arena != nil {
		arena.ids = ids
	}
	return scope, ids, cats, true
}
