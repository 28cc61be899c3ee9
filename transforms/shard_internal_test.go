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
// ids that share their first 8 or 16 bytes, are shorter than 8 or 16 or
// longer, end in zero bytes or are empty included.
func TestShardArenaOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 23))
	alphabet := []byte{0, 1, 'a', 'b', 0xff}
	var in []framed
	for i := range 5000 {
		id := make([]byte, r.IntN(21))
		for j := range id {
			id[j] = alphabet[r.IntN(len(alphabet))]
		}
		if i%3 == 0 { // a prefix of 16 bytes and more, shared
			id = append([]byte("ev-0123456789abc"), id[:min(len(id), r.IntN(4))]...)
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
			if !bytes.Equal(a.id(x), in[i].id) || !bytes.Equal(a.rec(x), in[i].rec) || a.pub(x) != in[i].pub {
				t.Fatalf("round %d: record %d came back changed", round, i)
			}
		}
		slices.SortFunc(a.recs, a.compare)
		want := slices.Clone(in)
		slices.SortFunc(want, framedOrder)
		for i, x := range a.recs {
			if !bytes.Equal(a.id(x), want[i].id) || a.pub(x) != want[i].pub || !bytes.Equal(a.rec(x), want[i].rec) {
				t.Fatalf("round %d: sorted record %d: id %x pub %d, want id %x pub %d", round, i, a.id(x), a.pub(x), want[i].id, want[i].pub)
			}
		}
	}
}

// framedOrder is the order a shard's file is written in, from the framed
// records themselves: ids (bytes.Compare), then publish times, then bytes.
func framedOrder(x, y framed) int {
	if c := bytes.Compare(x.id, y.id); c != 0 {
		return c
	}
	if c := cmp.Compare(x.pub, y.pub); c != 0 {
		return c
	}
	return bytes.Compare(x.rec, y.rec)
}

// TestShardArenaCompare: compare agrees with bytes.Compare of the ids, then
// the publish times, then the bytes, and sameID with bytes.Equal of the
// ids, for every pair of ids built to tie on their first 8 or 16 bytes
// (zero bytes, lengths either side of 8 and 16).
func TestShardArenaCompare(t *testing.T) {
	var ids [][]byte
	for _, prefix := range []string{"", "ev-0455", "ev-04554", "ev-0123456789abc", "ev-0123456789abcd"} {
		for _, suffix := range []string{"", "\x00", "\x00\x00", "\x01", "a", "b", "a\x00", "ab", "\xff"} {
			ids = append(ids, []byte(prefix+suffix))
		}
	}
	var a shardArena
	var in []framed
	for i, id := range ids {
		for pub := range int64(2) {
			f := framed{pub: pub, id: id, rec: fmt.Appendf(nil, "r%d", i%3)}
			in = append(in, f)
			a.add(f)
		}
	}
	for i, x := range a.recs {
		for j, y := range a.recs {
			if got, want := a.compare(x, y), framedOrder(in[i], in[j]); got != want {
				t.Fatalf("compare(%q pub %d, %q pub %d) = %d, want %d", in[i].id, in[i].pub, in[j].id, in[j].pub, got, want)
			}
			if got, want := a.sameID(x, y), bytes.Equal(in[i].id, in[j].id); got != want {
				t.Fatalf("sameID(%q, %q) = %v, want %v", in[i].id, in[j].id, got, want)
			}
		}
	}
}
