package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

var decodeReasons = []string{ReasonMalformedJSON, ReasonInvalidUTF8, ReasonUnknownField, ReasonMissingField, ReasonWrongType,
	ReasonOutOfRange, ReasonDuplicateField, ReasonTooDeep, ReasonInvalidValue}

// FuzzDecode feeds arbitrary payloads to every test schema. Decode must never
// panic; errors must be *ValidationError with a decode reason; on success the
// payload must be valid JSON and UTF-8, the Event must pass Validate, and its
// strings and longs must equal what encoding/json reads.
func FuzzDecode(f *testing.F) {
	for _, p := range []string{
		playback, account, allKindsWith(), allKindsWith("ns", `"x"`, "ni", "7", "nts", `"2026-01-01T00:00:00+05:30"`),
		`{}`, `[]`, `null`, ``, `{"event_id":"e"`, `{"a":1}x`, `{"event_id":1}`, allKindsWith("l", "1e999"),
		allKindsWith("i", "99999999999"), allKindsWith("s", "\"\xff\""), allKindsWith("s", `"\ud800"`),
		`{"x":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}`, `{"event_id":"e","user_id":"u","n":1,"z":{"q":[true,false,null,1.5e-3,"\u00e9"]}}`,
		strings.Replace(playback, `"ms_played":183000`, `"ms_played":"183000"`, 1),
		strings.Replace(account, `"email":"a@example.com",`, ``, 1),
	} {
		f.Add([]byte(p))
	}
	r := testRegistry(f)
	emb, err := Embedded()
	if err != nil {
		f.Fatal(err)
	}
	schemas := append(emb.All(), r.All()...)
	f.Fuzz(func(t *testing.T, payload []byte) {
		for _, s := range schemas {
			var ev Event
			err := s.Decode(payload, &ev)
			if err != nil {
				var ve *ValidationError
				if !errors.As(err, &ve) || !slices.Contains(decodeReasons, ve.Reason) {
					t.Fatalf("%s: error %v is not a decode ValidationError", s, err)
				}
				if ve.Reason == ReasonMalformedJSON && json.Valid(payload) {
					t.Fatalf("%s: malformed_json for valid JSON: %v", s, err)
				}
				if !json.Valid(payload) && ve.Reason != ReasonMalformedJSON && ve.Reason != ReasonTooDeep && ve.Reason != ReasonInvalidUTF8 {
					t.Fatalf("%s: invalid JSON reported as %v", s, err)
				}
				continue
			}
			if !json.Valid(payload) || !utf8.Valid(payload) {
				t.Fatalf("%s: accepted invalid JSON or UTF-8", s)
			}
			if err := s.Validate(&ev); err != nil {
				t.Fatalf("%s: decoded event does not validate: %v", s, err)
			}
			dec := json.NewDecoder(bytes.NewReader(payload))
			dec.UseNumber()
			var m map[string]any
			if err := dec.Decode(&m); err != nil {
				t.Fatalf("%s: encoding/json rejects an accepted payload: %v", s, err)
			}
			for i, fd := range s.Fields {
				v := ev.Values[i]
				jv, ok := m[fd.Name]
				if ok != v.Present {
					t.Fatalf("%s: %s present=%v, encoding/json says %v", s, fd.Name, v.Present, ok)
				}
				if !ok || v.Null {
					continue
				}
				switch fd.Kind {
				case KindString, KindEnum:
					if jv != v.Str {
						t.Fatalf("%s: %s = %q, encoding/json says %q", s, fd.Name, v.Str, jv)
					}
				case KindLong, KindInt:
					if n, ok := jv.(json.Number); !ok || n.String() != strconv.FormatInt(v.Int, 10) && strings.TrimPrefix(n.String(), "-") != "0" {
						t.Fatalf("%s: %s = %d, encoding/json says %v", s, fd.Name, v.Int, jv)
					}
				}
			}
		}
	})
}

// FuzzRFC3339 checks the hand-written timestamp parser against time.Parse:
// whatever it accepts, time.Parse accepts with the same instant.
func FuzzRFC3339(f *testing.F) {
	for _, s := range []string{"2026-11-23T06:12:00.000Z", "2026-11-23T07:12:00+01:00", "0000-01-01T00:00:00Z", "2024-02-29T23:59:59.123456789-23:59"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := parseRFC3339Millis([]byte(s))
		if !ok {
			return
		}
		tt, err := time.Parse(time.RFC3339Nano, strings.ToUpper(s))
		if err != nil {
			t.Fatalf("%q accepted as %d, time.Parse: %v", s, got, err)
		}
		if want := tt.Unix()*1000 + int64(tt.Nanosecond()/1e6); got != want {
			t.Fatalf("%q = %d, time.Parse says %d", s, got, want)
		}
	})
}
