package server

import (
	"fmt"
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
//
// The strings of all three requests are pieces of that one copy, freed by
// the garbage collector once nothing refers to any of them. The user ids
// of GetOrCreateKeys and GetKeysByUser were for a while strings viewing a
// pooled arena, reused once the response was written, to save that copy
// (~3.6 KB per batch of 100). The arena was removed: an alternating A/B
// with the load benchmark (Batch100/load=100%, 30000 batches, three runs
// each) gave 4079/4387/4242 RPC/s and 11.8/13.2/12.2 GC cycles/s with it
// against 3947/4831/5278 and 11.3/14.0/15.7 without; at a fixed 2000
// RPC/s (load=50%, LOCKSTREAM_BENCH_RPS) p99 5.2/2.8/2.7 ms and 6.1-6.3
// GC cycles/s with it against 3.2/3.2/2.4 ms and 6.2-6.3 without. It no
// longer paid for itself in any measured number, and it needed strings built over
// pooled memory behind the compiler's back, a map of pending arenas keyed
// by request message, and a test scribbling over recycled memory to show
// that no id was kept.
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
		if scope, ids, cats, ok := decodeBatch(data); ok {
			r.Scope, r.UserIds, r.Categories = scope, ids, cats
			return nil
		}
	case *keysv1.GetKeysByUserRequest:
		if scope, ids, cats, ok := decodeBatch(data); ok {
			r.Scope, r.UserIds, r.Categories = scope, ids, cats
			return nil
		}
	case *keysv1.GetKeysBySubjectRequest:
		if scope, ids, cats, ok := decodeBatch(data); ok {
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

// decodeBatch parses a batch request whose every field is scope (1), an id
// (2) or a category (3), each length-delimited valid UTF-8; ok is false
// for anything else. A repeated scope keeps the last, as protobuf does.
// Every string it returns is a piece of one copy of data, so the caller
// may keep any of them (the service keeps scopes, categories and subjects
// in its caches).
func decodeBatch(data []byte) (scope string, ids, cats []string, ok bool) {
	// First pass: check the shape and count, so that the slices are
	// allocated once.
	nIDs, nCats := 0, 0
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
		case 3:
			nCats++
		}
	}
	whole := string(data) // every string below is a piece of this one copy
	if nIDs > 0 {
		ids = make([]string, 0, nIDs)
	}
	if nCats > 0 {
		cats = make([]string, 0, nCats)
	}
	for off := 0; off < len(whole); {
		num, _, n := protowire.ConsumeTag(data[off:])
		off += n
		l, m := protowire.ConsumeVarint(data[off:])
		off += m
		v := whole[off : off+int(l)]
		off += int(l)
		switch num {
		case 1:
			scope = v
		case 2:
			ids = append(ids, v)
		case 3:
			cats = append(cats, v)
		}
	}
	return scope, ids, cats, true
}
