package transforms

import (
	"reflect"
	"testing"
)

func TestBatchCoder(t *testing.T) {
	cases := []Batch{
		{},
		{ID: "run-f0-1"},
		{ID: "run-f0-2", Messages: []BatchMessage{
			{ID: "m1", PublishMillis: 1795414320123, Attributes: map[string]string{"event_type": "PlaybackEvent", "schema_version": "1"}, Data: []byte(`{"a":1}`)},
			{ID: "m2", PublishMillis: -5, Data: []byte{}},
		}, Subscription: "projects/p/subscriptions/s", AckIDs: []string{"a1", "a2"},
			Bad: []BadLine{{File: "in.ndjson", Line: 3, Offset: 812, Cause: "record: not a message line"}}},
	}
	for i, b := range cases {
		p, err := encodeBatch(b)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeBatch(p)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if len(b.Messages) == 2 {
			b.Messages[1].Data = nil // empty and nil data are the same on the wire
			got.Messages[1].Data = nil
		}
		if !reflect.DeepEqual(got, b) {
			t.Fatalf("case %d: round trip\n got %+v\nwant %+v", i, got, b)
		}
		// Every truncation is an error, never a panic.
		for n := 0; n < len(p); n++ {
			if _, err := decodeBatch(p[:n]); err == nil && n < len(p) {
				t.Fatalf("case %d: truncated to %d bytes decoded", i, n)
			}
		}
	}
}
