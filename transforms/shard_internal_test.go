package transforms

import (
	"bytes"
	"cmp"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestShardOfIsFNV32a: the shard of an event id is fnv32a mod n, for
// strings and bytes alike (published datasets are laid out by it).
func TestShardOfIsFNV32a(t *testing.T) {
	for i := range 2000 {
		id := fmt.Sprintf("ev-%d-%x", i, i*7919)
		h := fnv.New32a()
		h.Write([]byte(id))
		for _, n := range []int{1, 3, 4, 64} {
			want := int(h.Sum32() % uint32(n))
			if got := shardOf(id, n); got != want {
				t.Fatalf("shardOf(%q, %d) = %d, want %d", id, n, got, want)
			}
			if got := shardOf([]byte(id), n); got != want {
				t.Fatalf("shardOf([]byte %q, %d) = %d, want %d", id, n, got, want)
			}
		}
	}
}

// TestShardArenaOrder: a shard's arena gives back every record's id and
// bytes as added, across chunks and after absorbing another arena's, and
// sorts them as the ids, publish times and bytes compare (bytes.Compare):
// ids that share their first 8 bytes, are shorter than 8, end in zero
// bytes or are empty included.
func TestShardArenaOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 23))
	alphabet := []byte{0, 1, 'a', 'b', 0xff}
	var in []framed
	for i := range 5000 {
		id := make([]byte, r.IntN(12))
		for j := range id {
			id[j] = alphabet[r.IntN(len(alphabet))]
		}
		rec := fmt.Appendf(nil, "record %d", r.IntN(50))
		if i%1000 == 0 {
			rec = make([]byte, arenaChunk/2+i) // forces new chunks
		}
		in = append(in, framed{pub: int64(r.IntN(3)), id: id, rec: rec})
	}
	var a, b shardArena
	for round := range 3 { // later rounds reuse the arena after reset
		a.reset()
		split := len(in) // round 1: all in a; rounds 2 and 3: part in b, absorbed
		if round > 0 {
			split = len(in) / (round + 1)
		}
		for _, f := range in[:split] {
			a.add(f)
		}
		for _, f := range in[split:] {
			b.add(f)
		}
		a.absorb(&b)
		if len(b.recs) != 0 || len(b.chunks) != 0 || b.size != 0 {
			t.Fatalf("round %d: absorbed arena not left empty", round)
		}
		for i, x := range a.recs {
			if !bytes.Equal(a.id(x), in[i].id) || !bytes.Equal(a.rec(x), in[i].rec) || x.pub != in[i].pub {
				t.Fatalf("round %d: record %d came back changed", round, i)
			}
		}
		slices.SortFunc(a.recs, a.compare)
		want := slices.Clone(in)
		slices.SortFunc(want, func(x, y framed) int {
			if c := bytes.Compare(x.id, y.id); c != 0 {
				return c
			}
			if c := cmp.Compare(x.pub, y.pub); c != 0 {
				return c
			}
			return bytes.Compare(x.rec, y.rec)
		})
		for i, x := range a.recs {
			if !bytes.Equal(a.id(x), want[i].id) || x.pub != want[i].pub || !bytes.Equal(a.rec(x), want[i].rec) {
				t.Fatalf("round %d: sorted record %d: id %x pub %d, want id %x pub %d", round, i, a.id(x), x.pub, want[i].id, want[i].pub)
			}
		}
	}
}
