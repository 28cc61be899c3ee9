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
	`{"id":"m1","attributes":{"a":"1","b":"2","c":"3","d":"4","e":"5","f":"6","g":"7","h":"8","i":"9","j":"10"},"data":"x"}`,
	`{"id":"m1","attributes":{"a":"1","b":"2","c":"3","d":"4","e":"5","f":"6","g":"7","h":"8","i":"9","a":"10"},"data":"x"}`,
	`{"id":"m1","attributes":{"k\n":"v\"q","event_type":"PlaybackEvent"},"data":"x"}`,
}

// shared is the LineParser of FuzzParseLine: it lives across inputs, so
// attribute maps it remembers from one meet the next.
var shared LineParser

// FuzzParseLine: the fast path and encoding/json agree on every input.
func FuzzParseLine(f *testing.F) {
	for _, s := range lineSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		pm, perr := shared.Parse(line)
		m, err := ParseLine(line)
		if (perr == nil) != (err == nil) || !reflect.DeepEqual(pm, m) {
			t.Fatalf("%q: LineParser %+v, %v; ParseLine %+v, %v", line, pm, perr, m, err)
		}
		w, data, ok := scanLine(line, nil)
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
	if _, _, ok := scanLine(line, nil); !ok {
		t.Fatalf("MarshalLine output is not on the fast path: %s", line)
	}
	got, err := ParseLine(line)
	if err != nil || !reflect.DeepEqual(got, m) {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
}

// A LineParser's messages with equal attributes share one map, and equal
// what ParseLine gives.
func TestLineParserSharesAttributes(t *testing.T) {
	var p LineParser
	var maps []map[string]string
	for i, typ := range []string{"A", "B", "A", "C", "A", "B"} {
		line := []byte(`{"id":"m` + string(rune('0'+i)) + `","publish_time":"2026-11-23T06:00:00Z","attributes":{"event_type":"` + typ + `","schema_version":"1"},"data":"{}"}`)
		m, err := p.Parse(line)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := ParseLine(line)
		if !reflect.DeepEqual(m, want) {
			t.Fatalf("line %d: %+v, want %+v", i, m, want)
		}
		maps = append(maps, m.Attributes)
	}
	same := func(a, b map[string]string) bool {
		return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
	}
	if !same(maps[0], maps[2]) || !same(maps[0], maps[4]) || !same(maps[1], maps[5]) {
		t.Fatal("equal attributes were not shared")
	}
	if same(maps[0], maps[1]) || same(maps[0], maps[3]) {
		t.Fatal("different attributes share a map")
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
