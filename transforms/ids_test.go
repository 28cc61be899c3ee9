package transforms

import (
	"fmt"
	"testing"
)

// TestIDSet: every id added is found, no other is, duplicates count once,
// and ids whose hashes collide are told apart (a colliding hash must never
// make a new event pass for a lookback duplicate: it would be dropped).
func TestIDSet(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  *idSet
	}{
		{"maphash", newIDSet()},
		{"every hash collides", &idSet{hash: func([]byte) uint64 { return 7 }, at: map[uint64]uint32{}}},
		{"two hashes", &idSet{hash: func(b []byte) uint64 { return uint64(len(b) % 2) }, at: map[uint64]uint32{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.set
			for i := range 500 {
				s.add([]byte(fmt.Sprintf("ev-%d", i)))
				s.add([]byte(fmt.Sprintf("ev-%d", i/2))) // already there
			}
			if s.len() != 500 {
				t.Fatalf("len %d, want 500", s.len())
			}
			for i := range 500 {
				if !s.has([]byte(fmt.Sprintf("ev-%d", i))) {
					t.Fatalf("ev-%d not found", i)
				}
			}
			for _, id := range []string{"ev-500", "ev-", "", "ev-1 ", "EV-1"} {
				if s.has([]byte(id)) {
					t.Fatalf("%q found, never added", id)
				}
			}
		})
	}
	var none *idSet
	if none.has([]byte("x")) || none.len() != 0 {
		t.Fatal("a nil set is not empty")
	}
}

func TestIDList(t *testing.T) {
	var l idList
	want := []string{"a", "", "ev-123", string(make([]byte, 300))}
	for _, id := range want {
		l.add([]byte(id))
	}
	var got []string
	l.each(func(id []byte) { got = append(got, string(id)) })
	if fmt.Sprint(got) != fmt.Sprint(want) || l.n != len(want) {
		t.Fatalf("got %q", got)
	}
}
