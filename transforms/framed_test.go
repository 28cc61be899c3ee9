package transforms

import (
	"errors"
	"reflect"
	"testing"
)

// TestFramedRoundTrip: a shard batch gives back every record with its
// event id, publish time and origin, in order; a truncated batch is an
// error, never a short read.
func TestFramedRoundTrip(t *testing.T) {
	in := []framed{
		{late: false, pub: 1_700_000_000_000, id: []byte("event-1"), rec: []byte("record one")},
		{late: true, pub: -5, id: []byte{}, rec: []byte{0, 1, 2}},
		{late: false, pub: 0, id: []byte("e"), rec: []byte{}},
	}
	var b []byte
	for _, r := range in {
		b = appendFramed(b, r)
	}
	var out []framed
	if err := forEachFramed(b, func(r framed) error { out = append(out, r); return nil }); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Errorf("round trip: got %+v, want %+v", out, in)
	}
	for cut := 1; cut < len(b); cut++ {
		n := 0
		err := forEachFramed(b[:cut], func(framed) error { n++; return nil })
		if complete := cut == len(appendFramed(nil, in[0])) || cut == len(appendFramed(appendFramed(nil, in[0]), in[1])); complete {
			continue
		}
		if !errors.Is(err, errMalformedBatch) {
			t.Errorf("batch cut at %d of %d bytes: err %v after %d records, want errMalformedBatch", cut, len(b), err, n)
		}
	}
}
