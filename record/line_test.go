package record

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// parseLineJSON is ParseLine by encoding/json alone: the oracle.
func parseLineJSON(line []byte) (wireMessage, []byte, bool) {
	var w wireMessage
	if err := json.Unmarshal(line, &w); err != nil {
		return w, nil, false
	}
	var data []byte
	if w.Data != nil {
		data = []byte(*w.Data)
	}
	w.Data = nil
	return w, data, true
}

var lineSeeds = []string{
	`{"id":"m1","publish_time":"2026-11-23T06:00:00.000Z","attributes":{"event_type":"PlaybackEvent","schema_version":"1"},"data":"{\"event_id\":\"e1\",\"n\":1}"}`,
	` { "id" : "m1" , "data" : "" , "attributes" : { } } `,
	`{"id":"m1","data":"tab\tescaped \\ \/ \b\f\n\r"}`,
	`{"id":"m1","data":"\u00e9 and \ud83d\ude00 and lone \ud800"}`,
	`{"id":"m1","data":"caf` + "\xc3\xa9" + `"}`,
	`{"id":"m1","data":"bad ` + "\xff" + `"}`,
	`{"ID":"m1","Data":"x"}`,
	`{"id":"m1","id":"m2","data":"x"}`,
	`{"id":"m1","attributes":{"a":"1","a":"2"},"data":"x"}`,
	`{"id":"m1","attributes":null,"data":null}`,
	`{"id":"m1","extra":[1,2,{"x":null}],"data":"x"}`,
	`{"id":1,"data":"x"}`,
	`{"id":"m1","data":"x"} trailing`,
	`{"id":"m1","data":"x",}`,
	`{}`, `[]`, ``, `{"id":"m1","data":"` + "\x01" + `"}`,
}

// FuzzParseLine: the fast path and encoding/json agree on every input.
func FuzzParseLine(f *testing.F) {
	for _, s := range lineSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		w, data, ok := scanLine(line)
		if !ok {
			return // ParseLine uses encoding/json itself
		}
		ow, odata, ook := parseLineJSON(line)
		if !ook {
			t.Fatalf("fast path accepted what encoding/json rejects: %q", line)
		}
		if w.ID != ow.ID || w.PublishTime != ow.PublishTime || !reflect.DeepEqual(w.Attributes, ow.Attributes) ||
			string(data) != string(odata) || (data == nil) != (odata == nil) {
			t.Fatalf("%q: fast %+v %q, encoding/json %+v %q", line, w, data, ow, odata)
		}
	})
}

func TestParseLineFastPathTakesOurLines(t *testing.T) {
	m := Message{ID: "m-1", PublishTime: time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC),
		Attributes: map[string]string{AttrEventType: "PlaybackEvent", AttrSchemaVersion: "1"},
		Data:       []byte(`{"event_id":"e","q":"a \"quoted\" \\ path/\n"}`)}
	line, err := m.MarshalLine()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, ok := scanLine(line); !ok {
		t.Fatalf("MarshalLine output is not on the fast path: %s", line)
	}
	got, err := ParseLine(line)
	if err != nil || !reflect.DeepEqual(got, m) {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
}

func BenchmarkParseLine(b *testing.B) {
	line := []byte(lineSeeds[0])
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			if _, err := ParseLine(line); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		for b.Loop() {
			if _, _, ok := parseLineJSON(line); !ok {
				b.Fatal("bad")
			}
		}
	})
}
