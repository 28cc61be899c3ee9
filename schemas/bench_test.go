package schemas

import (
	"encoding/json"
	"strings"
	"testing"
)

func BenchmarkDecode(b *testing.B) {
	for _, tc := range []struct{ typ, payload string }{
		{"PlaybackEvent", playback},
		{"AccountUpdate", account},
	} {
		b.Run(tc.typ, func(b *testing.B) {
			s := embeddedSchema(b, tc.typ)
			p := []byte(tc.payload)
			var ev Event
			b.ReportAllocs()
			b.SetBytes(int64(len(p)))
			for b.Loop() {
				if err := s.Decode(p, &ev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	// For comparison: what encoding/json into a map costs (the approach Decode replaces).
	b.Run("PlaybackEvent/encoding-json-map", func(b *testing.B) {
		p := []byte(playback)
		b.ReportAllocs()
		b.SetBytes(int64(len(p)))
		for b.Loop() {
			var m map[string]any
			if err := json.Unmarshal(p, &m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("PlaybackEvent/rejected-wrong-type", func(b *testing.B) {
		s := embeddedSchema(b, "PlaybackEvent")
		p := []byte(strings.Replace(playback, "183000", `"183000"`, 1))
		var ev Event
		b.ReportAllocs()
		for b.Loop() {
			if s.Decode(p, &ev) == nil {
				b.Fatal("accepted")
			}
		}
	})
}
