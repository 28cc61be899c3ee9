package server

import (
	"fmt"
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	keysv1 "github.com/lockstream/lockstream/keyservice/api/keysv1"
)

// codecAgrees checks that batchCodec decodes data exactly as proto.Unmarshal
// does: the same message, or an error from both.
func codecAgrees(t *testing.T, data []byte) {
	t.Helper()
	for _, pair := range [][2]proto.Message{
		{&keysv1.GetOrCreateKeysRequest{}, &keysv1.GetOrCreateKeysRequest{}},
		{&keysv1.GetKeysByUserRequest{}, &keysv1.GetKeysByUserRequest{}},
		{&keysv1.GetKeysBySubjectRequest{}, &keysv1.GetKeysBySubjectRequest{}},
	} {
		errFast := batchCodec{}.Unmarshal(data, pair[0])
		errProto := proto.Unmarshal(data, pair[1])
		if (errFast == nil) != (errProto == nil) {
			t.Fatalf("%T from %x: codec error %v, proto error %v", pair[0], data, errFast, errProto)
		}
		if errFast == nil && !proto.Equal(pair[0], pair[1]) {
			t.Fatalf("%T from %x: codec %v, proto %v", pair[0], data, pair[0], pair[1])
		}
	}
}

func TestBatchCodecAgreesWithProto(t *testing.T) {
	var cases [][]byte
	for n := range 50 {
		m := &keysv1.GetOrCreateKeysRequest{Scope: fmt.Sprint("scope-", n)}
		for i := range n {
			m.UserIds = append(m.UserIds, fmt.Sprintf("user-%d-é-%d", n, i))
		}
		for i := range n % 4 {
			m.Categories = append(m.Categories, fmt.Sprint("cat", i))
		}
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		cases = append(cases, b)
	}
	str := func(b []byte, num protowire.Number, v string) []byte {
		return protowire.AppendString(protowire.AppendTag(b, num, protowire.BytesType), v)
	}
	cases = append(cases,
		nil,
		str(str(nil, 1, "a"), 1, "b"), // repeated scope: the last wins
		str(str(nil, 2, ""), 2, ""),   // empty ids
		str(nil, 4, "unknown field"),  // kept as unknown by proto
		str(nil, 2, "\xff\xfe"),       // invalid UTF-8: proto's error
		protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 7), // wrong wire type
		str(nil, 2, "truncated")[:5],
		[]byte{0x12, 0xff, 0xff, 0xff, 0xff, 0x0f}, // length beyond the end
	)
	for _, c := range cases {
		codecAgrees(t, c)
	}
}

// TestBatchCodecCopiesRequest: the strings of a decoded batch request
// share no memory with the request bytes, which the transport reuses once
// Unmarshal returns; the service may keep any of them (caches keyed by
// scope, category or subject).
func TestBatchCodecCopiesRequest(t *testing.T) {
	ids, cats := []string{"copy-user-1", "", "copy-user-3"}, []string{"contact"}
	for _, m := range []proto.Message{&keysv1.GetOrCreateKeysRequest{}, &keysv1.GetKeysByUserRequest{}, &keysv1.GetKeysBySubjectRequest{}} {
		body, err := proto.Marshal(&keysv1.GetOrCreateKeysRequest{Scope: "copy-scope", UserIds: ids, Categories: cats})
		if err != nil {
			t.Fatal(err)
		}
		if err := (batchCodec{}).Unmarshal(body, m); err != nil {
			t.Fatal(err)
		}
		for i := range body {
			body[i] = '#'
		}
		var scope string
		var gotIDs, gotCats []string
		switch r := m.(type) {
		case *keysv1.GetOrCreateKeysRequest:
			scope, gotIDs, gotCats = r.Scope, r.UserIds, r.Categories
		case *keysv1.GetKeysByUserRequest:
			scope, gotIDs, gotCats = r.Scope, r.UserIds, r.Categories
		case *keysv1.GetKeysBySubjectRequest:
			scope, gotIDs, gotCats = r.Scope, r.Subjects, r.Categories
		}
		if scope != "copy-scope" || !slices.Equal(gotIDs, ids) || !slices.Equal(gotCats, cats) {
			t.Fatalf("%T after the request bytes were overwritten: %q %q %q", m, scope, gotIDs, gotCats)
		}
	}
}

func FuzzBatchCodec(f *testing.F) {
	f.Add([]byte(nil))
	m, _ := proto.Marshal(&keysv1.GetOrCreateKeysRequest{Scope: "s", UserIds: []string{"u1", "u2"}, Categories: []string{"c"}})
	f.Add(m)
	f.Add([]byte{0x12, 0x02, 0xff, 0xfe})
	f.Add([]byte{0x22, 0x01, 'x'})
	f.Fuzz(func(t *testing.T, data []byte) { codecAgrees(t, data) })
}
