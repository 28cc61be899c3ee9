package schemas

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

func embeddedSchema(t testing.TB, typ string) *Schema {
	t.Helper()
	r, err := Embedded()
	if err != nil {
		t.Fatal(err)
	}
	return mustSchema(t, r, typ, 1)
}

const playback = `{"event_id":"e-1","user_id":"u-42","timestamp":"2026-11-23T06:12:00.000Z","track_id":"t-9",` +
	`"ms_played":183000,"country":"SE","ip_address":"192.0.2.7","device_id":"dev-1"}`

const account = `{"event_id":"e-2","user_id":"u-42","timestamp":1795414320000,"email":"a@example.com",` +
	`"display_name":"Ann","birth_year":1990}`

// members of a valid AllKinds payload, in schema order.
var allKindsMembers = [][2]string{
	{"event_id", `"e1"`}, {"user_id", `"u1"`}, {"s", `"hello"`}, {"b", `"AQID"`}, {"i", `-5`},
	{"l", `9007199254740993`}, {"f", `1.5`}, {"d", `-2.5e-3`}, {"ok", `true`},
	{"ts", `"2026-11-23T06:12:00.123Z"`}, {"color", `"GREEN"`},
}

// allKindsWith returns the AllKinds payload with members replaced ("-" deletes)
// or appended (names not in the base, in sorted order of the arguments).
func allKindsWith(kv ...string) string {
	over := map[string]string{}
	var extra []string
	for i := 0; i+1 < len(kv); i += 2 {
		over[kv[i]] = kv[i+1]
		extra = append(extra, kv[i])
	}
	var parts []string
	seen := map[string]bool{}
	for _, m := range allKindsMembers {
		seen[m[0]] = true
		v, ok := over[m[0]]
		if !ok {
			v = m[1]
		}
		if v == "-" {
			continue
		}
		parts = append(parts, fmt.Sprintf("%q:%s", m[0], v))
	}
	for _, k := range extra {
		if !seen[k] {
			parts = append(parts, fmt.Sprintf("%q:%s", k, over[k]))
		}
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func ms(s string) int64 {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t.UnixMilli()
}

func TestDecodePlaybackEvent(t *testing.T) {
	s := embeddedSchema(t, "PlaybackEvent")
	epoch := strings.Replace(playback, `"2026-11-23T06:12:00.000Z"`, `1795414320000`, 1)
	offset := strings.Replace(playback, `"2026-11-23T06:12:00.000Z"`, `"2026-11-23T07:12:00+01:00"`, 1)
	for name, p := range map[string]string{"rfc3339": playback, "epoch": epoch, "offset": offset} {
		t.Run(name, func(t *testing.T) {
			var ev Event
			if err := s.Decode([]byte(p), &ev); err != nil {
				t.Fatal(err)
			}
			want := map[string]Value{
				"event_id":   {Present: true, Str: "e-1"},
				"user_id":    {Present: true, Str: "u-42"},
				"timestamp":  {Present: true, Int: ms("2026-11-23T06:12:00Z")},
				"track_id":   {Present: true, Str: "t-9"},
				"ms_played":  {Present: true, Int: 183000},
				"country":    {Present: true, Str: "SE"},
				"ip_address": {Present: true, Str: "192.0.2.7"},
				"device_id":  {Present: true, Str: "dev-1"},
			}
			for i, f := range s.Fields {
				if ev.Values[i] != want[f.Name] {
					t.Errorf("%s = %+v, want %+v", f.Name, ev.Values[i], want[f.Name])
				}
			}
			if err := s.Validate(&ev); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestDecodeAccountUpdate(t *testing.T) {
	s := embeddedSchema(t, "AccountUpdate")
	by, _ := s.Field("birth_year")
	for _, tc := range []struct {
		name, payload string
		want          Value
	}{
		{"present", account, Value{Present: true, Int: 1990}},
		{"null", strings.Replace(account, "1990", "null", 1), Value{Present: true, Null: true}},
		{"missing", strings.Replace(account, `,"birth_year":1990`, "", 1), Value{Null: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ev Event
			if err := s.Decode([]byte(tc.payload), &ev); err != nil {
				t.Fatal(err)
			}
			if got := ev.Values[by.Index]; got != tc.want {
				t.Errorf("birth_year = %+v, want %+v", got, tc.want)
			}
			if ev.Values[3].Str != "a@example.com" || ev.Values[2].Int != 1795414320000 {
				t.Errorf("values = %+v", ev.Values)
			}
		})
	}
}

func TestDecodeAllKinds(t *testing.T) {
	s := mustSchema(t, testRegistry(t), "AllKinds", 1)
	val := func(ev *Event, name string) Value { f, _ := s.Field(name); return ev.Values[f.Index] }
	var ev Event
	p := allKindsWith("s", `"a\"b\\c\/d\b\f\n\r\t\u00e9\u20AC\ud83d\ude00\u0000 é😀"`, "ns", `"x"`, "ni", `2147483647`,
		"nts", `-62167219200000`)
	p = " \t\r\n" + p + " \n"
	if err := s.Decode([]byte(p), &ev); err != nil {
		t.Fatal(err)
	}
	checks := map[string]Value{
		"s":     {Present: true, Str: "a\"b\\c/d\b\f\n\r\té€😀\x00 é😀"},
		"b":     {Present: true, Str: "\x01\x02\x03"},
		"i":     {Present: true, Int: -5},
		"l":     {Present: true, Int: 9007199254740993},
		"f":     {Present: true, Float: 1.5},
		"d":     {Present: true, Float: -2.5e-3},
		"ok":    {Present: true, Bool: true},
		"ts":    {Present: true, Int: ms("2026-11-23T06:12:00.123Z")},
		"color": {Present: true, Str: "GREEN"},
		"ns":    {Present: true, Str: "x"},
		"ni":    {Present: true, Int: math.MaxInt32},
		"nts":   {Present: true, Int: MinTimestampMillis},
		"cnt":   {Int: 7}, // default
	}
	for name, want := range checks {
		if got := val(&ev, name); got != want {
			t.Errorf("%s = %+v, want %+v", name, got, want)
		}
	}
	if err := s.Validate(&ev); err != nil {
		t.Error(err)
	}
	// Keys may be escaped, members may come in any order, bytes may contain escapes.
	p2 := `{"color":"RED","\u0065vent_id":"e2","user_id":"u2","s":"","b":"AQ\/\/","i":0,"l":-9223372036854775808,` +
		`"f":0,"d":1E2,"ok":false,"ts":0,"cnt":-1,"ns":null}`
	first := val(&ev, "s").Str
	if err := s.Decode([]byte(p2), &ev); err != nil {
		t.Fatal(err)
	}
	if first != checks["s"].Str {
		t.Error("a string from the previous Decode changed")
	}
	for name, want := range map[string]Value{
		"event_id": {Present: true, Str: "e2"}, "b": {Present: true, Str: "\x01\x0f\xff"}, "l": {Present: true, Int: math.MinInt64},
		"d": {Present: true, Float: 100}, "ok": {Present: true}, "color": {Present: true, Str: "RED"},
		"cnt": {Present: true, Int: -1}, "ns": {Present: true, Null: true}, "ni": {Null: true},
	} {
		if got := val(&ev, name); got != want {
			t.Errorf("second decode: %s = %+v, want %+v", name, got, want)
		}
	}
}

func TestDecodeIgnoreUnknown(t *testing.T) {
	s := mustSchema(t, testRegistry(t), "Ignoring", 1)
	var ev Event
	p := `{"x":{"a":[1,2,{"b":null}],"c":"\ud83d\ude00"},"event_id":"e","y":[],"user_id":"u","n":3,"z":-1.5e7,"x":true}`
	if err := s.Decode([]byte(p), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Values[2].Int != 3 {
		t.Errorf("n = %+v", ev.Values[2])
	}
	deep := `{"event_id":"e","user_id":"u","n":3,"x":` + strings.Repeat("[", 31) + strings.Repeat("]", 31) + `}`
	if err := s.Decode([]byte(deep), &ev); err != nil {
		t.Errorf("depth 32: %v", err)
	}
	deeper := `{"event_id":"e","user_id":"u","n":3,"x":` + strings.Repeat("[", 32) + strings.Repeat("]", 32) + `}`
	if err := s.Decode([]byte(deeper), &ev); ReasonOf(err) != ReasonTooDeep {
		t.Errorf("depth 33: %v", err)
	}
}

func TestParseRFC3339(t *testing.T) {
	for _, in := range []string{
		"2026-11-23T06:12:00Z", "2026-11-23T06:12:00.000Z", "2026-11-23T06:12:00.1Z", "2026-11-23T06:12:00.123456789Z",
		"2026-11-23T06:12:00.9999Z", "2026-11-23t06:12:00z", "2026-11-23T07:12:00+01:00", "2026-11-23T01:42:00-04:30",
		"2024-02-29T23:59:59.999+23:59", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z", "1969-12-31T23:59:59.999Z",
		"1900-03-01T00:00:00Z", "2000-02-29T12:00:00Z", "0001-01-01T00:00:00-00:00",
	} {
		got, ok := parseRFC3339Millis([]byte(in))
		tt, err := time.Parse(time.RFC3339Nano, strings.ToUpper(in))
		if err != nil {
			t.Fatalf("time.Parse(%s): %v", in, err)
		}
		// time.Time.UnixMilli truncates toward zero; we floor (epoch ms of the millisecond containing t).
		want := tt.Unix()*1000 + int64(tt.Nanosecond()/1e6)
		if !ok || got != want {
			t.Errorf("%s: got %d %v, want %d", in, got, ok, want)
		}
	}
	for _, in := range []string{
		"", "2026-11-23", "2026-11-23T06:12:00", "2026-11-23 06:12:00Z", "2026-13-01T00:00:00Z", "2026-02-29T00:00:00Z",
		"2026-11-31T00:00:00Z", "2026-11-23T24:00:00Z", "2026-11-23T06:60:00Z", "2026-11-23T06:12:60Z",
		"2026-11-23T06:12:00.Z", "2026-11-23T06:12:00.1234567890Z", "2026-11-23T06:12:00+0100", "2026-11-23T06:12:00+24:00",
		"2026-11-23T06:12:00+01:60", "2026-11-23T06:12:00ZZ", "+2026-11-23T06:12:00Z", "2026-1a-23T06:12:00Z", "2026-11-23T06:12:00 Z",
		"20261-11-23T06:12:00Z",
	} {
		if got, ok := parseRFC3339Millis([]byte(in)); ok {
			t.Errorf("%q accepted as %d", in, got)
		}
	}
}

func TestDecodeReasons(t *testing.T) {
	r := testRegistry(t)
	all := mustSchema(t, r, "AllKinds", 1)
	pb := embeddedSchema(t, "PlaybackEvent")
	for _, tc := range []struct {
		name    string
		s       *Schema
		payload string
		reason  string
		path    string
	}{
		{"empty", all, ``, ReasonMalformedJSON, "$"},
		{"whitespace only", all, " \n", ReasonMalformedJSON, "$"},
		{"truncated", all, allKindsWith()[:40], ReasonMalformedJSON, "$"},
		{"trailing garbage", all, allKindsWith() + "x", ReasonMalformedJSON, "$"},
		{"two objects", all, allKindsWith() + allKindsWith(), ReasonMalformedJSON, "$"},
		{"trailing comma", all, strings.TrimSuffix(allKindsWith(), "}") + ",}", ReasonMalformedJSON, "$"},
		{"single quotes", all, `{'event_id':'e'}`, ReasonMalformedJSON, "$"},
		{"unquoted key", all, `{event_id:"e"}`, ReasonMalformedJSON, "$"},
		{"missing colon", all, `{"event_id" "e"}`, ReasonMalformedJSON, "$"},
		{"bad literal", all, allKindsWith("ok", "tru"), ReasonMalformedJSON, "$"},
		{"leading zero", all, allKindsWith("i", "01"), ReasonMalformedJSON, "$"},
		{"plus sign", all, allKindsWith("i", "+1"), ReasonMalformedJSON, "$"},
		{"bare dot", all, allKindsWith("d", "1."), ReasonMalformedJSON, "$"},
		{"bare exponent", all, allKindsWith("d", "1e"), ReasonMalformedJSON, "$"},
		{"NaN", all, allKindsWith("d", "NaN"), ReasonMalformedJSON, "$"},
		{"bad escape", all, allKindsWith("s", `"\x41"`), ReasonMalformedJSON, "$"},
		{"bad unicode escape", all, allKindsWith("s", `"\u12G4"`), ReasonMalformedJSON, "$"},
		{"raw control char", all, allKindsWith("s", "\"a\tb\""), ReasonMalformedJSON, "$"},
		{"unterminated string", all, `{"event_id":"e`, ReasonMalformedJSON, "$"},
		{"syntax error beats field error", all, allKindsWith("i", `"x"`) + "]", ReasonMalformedJSON, "$"},
		{"invalid utf8", all, allKindsWith("s", "\"a\xffb\""), ReasonInvalidUTF8, "$"},
		{"invalid utf8 in unknown key", all, strings.Replace(allKindsWith(), "{", "{\"\xc3\x28\":1,", 1), ReasonInvalidUTF8, "$"},
		{"overlong utf8", all, allKindsWith("s", "\"\xc0\xaf\""), ReasonInvalidUTF8, "$"},
		{"utf8 surrogate", all, allKindsWith("s", "\"\xed\xa0\x80\""), ReasonInvalidUTF8, "$"},
		{"lone high surrogate", all, allKindsWith("s", `"\ud83d"`), ReasonInvalidUTF8, "$"},
		{"high surrogate then char", all, allKindsWith("s", `"\ud83dx"`), ReasonInvalidUTF8, "$"},
		{"high surrogate twice", all, allKindsWith("s", `"\ud83d\ud83d"`), ReasonInvalidUTF8, "$"},
		{"lone low surrogate", all, allKindsWith("s", `"\ude00"`), ReasonInvalidUTF8, "$"},
		{"unknown field", all, allKindsWith("extra", "1"), ReasonUnknownField, "$"},
		{"underscore field", pb, strings.Replace(playback, `{`, `{"_subject":"x",`, 1), ReasonUnknownField, "$"},
		{"missing field", all, allKindsWith("l", "-"), ReasonMissingField, "$.l"},
		{"missing subject", pb, strings.Replace(playback, `"user_id":"u-42",`, "", 1), ReasonMissingField, "$.user_id"},
		{"string for long", all, allKindsWith("l", `"5"`), ReasonWrongType, "$.l"},
		{"float for long", all, allKindsWith("l", `5.0`), ReasonWrongType, "$.l"},
		{"exponent for int", all, allKindsWith("i", `1e3`), ReasonWrongType, "$.i"},
		{"number for string", all, allKindsWith("s", `5`), ReasonWrongType, "$.s"},
		{"object for string", all, allKindsWith("s", `{"a":1}`), ReasonWrongType, "$.s"},
		{"array for long", all, allKindsWith("l", `[1]`), ReasonWrongType, "$.l"},
		{"string for boolean", all, allKindsWith("ok", `"true"`), ReasonWrongType, "$.ok"},
		{"number for boolean", all, allKindsWith("ok", `1`), ReasonWrongType, "$.ok"},
		{"bool for timestamp", all, allKindsWith("ts", `true`), ReasonWrongType, "$.ts"},
		{"float for timestamp", all, allKindsWith("ts", `1.5`), ReasonWrongType, "$.ts"},
		{"number for bytes", all, allKindsWith("b", `1`), ReasonWrongType, "$.b"},
		{"number for enum", all, allKindsWith("color", `1`), ReasonWrongType, "$.color"},
		{"string for double", all, allKindsWith("d", `"1"`), ReasonWrongType, "$.d"},
		{"null in required", all, allKindsWith("s", `null`), ReasonWrongType, "$.s"},
		{"null subject", pb, strings.Replace(playback, `"u-42"`, `null`, 1), ReasonWrongType, "$.user_id"},
		{"payload is array", all, `[1,2]`, ReasonWrongType, "$"},
		{"payload is string", all, `"x"`, ReasonWrongType, "$"},
		{"payload is null", all, `null`, ReasonWrongType, "$"},
		{"int over int32", all, allKindsWith("i", `2147483648`), ReasonOutOfRange, "$.i"},
		{"int under int32", all, allKindsWith("i", `-2147483649`), ReasonOutOfRange, "$.i"},
		{"nullable int over int32", all, allKindsWith("ni", `4294967296`), ReasonOutOfRange, "$.ni"},
		{"long over int64", all, allKindsWith("l", `9223372036854775808`), ReasonOutOfRange, "$.l"},
		{"long under int64", all, allKindsWith("l", `-9223372036854775809`), ReasonOutOfRange, "$.l"},
		{"huge integer", all, allKindsWith("l", strings.Repeat("9", 400)), ReasonOutOfRange, "$.l"},
		{"double overflow", all, allKindsWith("d", `1e400`), ReasonOutOfRange, "$.d"},
		{"float overflow", all, allKindsWith("f", `1e39`), ReasonOutOfRange, "$.f"},
		{"timestamp ms too large", all, allKindsWith("ts", `253402300800000`), ReasonOutOfRange, "$.ts"},
		{"timestamp ms too small", all, allKindsWith("ts", `-62167219200001`), ReasonOutOfRange, "$.ts"},
		{"duplicate field", all, allKindsWith("extra", "1")[:0] + strings.Replace(allKindsWith(), `"s":"hello"`, `"s":"hello","s":"again"`, 1), ReasonDuplicateField, "$.s"},
		{"duplicate via escape", all, strings.Replace(allKindsWith(), `"s":"hello"`, `"s":"hello","\u0073":"again"`, 1), ReasonDuplicateField, "$.s"},
		{"deep nesting", all, allKindsWith("s", strings.Repeat("[", 100)+strings.Repeat("]", 100)), ReasonTooDeep, "$"},
		{"deep nesting unterminated", all, `{"s":` + strings.Repeat(`{"a":`, 100000), ReasonTooDeep, "$"},
		{"bad enum symbol", all, allKindsWith("color", `"BLUE"`), ReasonInvalidValue, "$.color"},
		{"enum case", all, allKindsWith("color", `"red"`), ReasonInvalidValue, "$.color"},
		{"bad base64", all, allKindsWith("b", `"AQI"`), ReasonInvalidValue, "$.b"},
		{"url base64", all, allKindsWith("b", `"_-8="`), ReasonInvalidValue, "$.b"},
		{"bad timestamp text", all, allKindsWith("ts", `"yesterday"`), ReasonInvalidValue, "$.ts"},
		{"timestamp without zone", all, allKindsWith("ts", `"2026-11-23T06:12:00"`), ReasonInvalidValue, "$.ts"},
		{"empty subject", pb, strings.Replace(playback, `"u-42"`, `""`, 1), ReasonInvalidValue, "$.user_id"},
		{"empty dedupe key", pb, strings.Replace(playback, `"e-1"`, `""`, 1), ReasonInvalidValue, "$.event_id"},
		{"first field error wins", all, allKindsWith("i", `"x"`, "l", `"y"`), ReasonWrongType, "$.i"},
		{"field error beats missing", all, allKindsWith("s", "-", "l", `"y"`), ReasonWrongType, "$.l"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ev Event
			err := tc.s.Decode([]byte(tc.payload), &ev)
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Decode = %v, want *ValidationError", err)
			}
			if ve.Reason != tc.reason || ve.Path != tc.path {
				t.Errorf("Decode = %q, want reason %s path %s", err, tc.reason, tc.path)
			}
			if !strings.HasPrefix(err.Error(), tc.reason+": "+tc.path+": ") {
				t.Errorf("Error() = %q", err)
			}
		})
	}
}

// TestErrorsNeverContainPayload plants a canary in every position a rejected
// value can take and checks that no error message carries any of it.
func TestErrorsNeverContainPayload(t *testing.T) {
	const canary = "CANARYc4n4ry"
	q := `"` + canary + `"`
	all := mustSchema(t, testRegistry(t), "AllKinds", 1)
	pb := embeddedSchema(t, "PlaybackEvent")
	payloads := []struct {
		s *Schema
		p string
	}{
		{all, allKindsWith(canary, "1")},                                  // unknown member name
		{all, allKindsWith("x", q)},                                       // unknown member value
		{all, allKindsWith("l", q)},                                       // wrong type
		{all, allKindsWith("color", q)},                                   // bad enum
		{all, allKindsWith("b", q[:len(q)-1]+`!"`)},                       // bad base64
		{all, allKindsWith("ts", q)},                                      // bad timestamp
		{all, allKindsWith("s", q+q)},                                     // malformed after value
		{all, allKindsWith("s", `"`+canary+"\xff\"")},                     // invalid utf8
		{all, allKindsWith("s", `"`+canary+`\ud800"`)},                    // lone surrogate
		{all, allKindsWith("i", "2147483648"+strings.Repeat("1", 3))},     // out of range
		{all, allKindsWith("s", `{"`+canary+`":[`+q+`]}`)},                // nested
		{all, allKindsWith("s", "-") + canary},                            // trailing garbage
		{all, strings.Replace(allKindsWith(), `"hello"`, q+`,"s":`+q, 1)}, // duplicate
		{all, `[` + q + `]`},                                              // not an object
		{pb, strings.Replace(playback, `"u-42"`, q, 1)[:60]},              // truncated
		{pb, strings.Replace(playback, `"192.0.2.7"`, `1`, 1) + ""},       // PII field wrong type
		{pb, strings.Replace(playback, `"ms_played":183000`, `"`+canary+`":183000`, 1)},
	}
	for i, tc := range payloads {
		var ev Event
		err := tc.s.Decode([]byte(tc.p), &ev)
		if err == nil {
			t.Errorf("payload %d accepted", i)
			continue
		}
		msg := err.Error()
		for _, frag := range []string{canary, "CANARY", "c4n4ry", "192.0.2", "183000", "2147483648"} {
			if strings.Contains(msg, frag) {
				t.Errorf("payload %d: error %q contains %q", i, msg, frag)
			}
		}
	}
}

func TestDecodeCallerEvent(t *testing.T) {
	s := embeddedSchema(t, "PlaybackEvent")
	ev := Event{Values: make([]Value, 2, 20)} // built by a caller, not by Decode
	if err := s.Decode([]byte(playback), &ev); err != nil || len(ev.Values) != len(s.Fields) || ev.Values[7].Str != "dev-1" {
		t.Fatalf("Decode = %v, %+v", err, ev.Values)
	}
	// A smaller schema after a larger one: no stale values.
	small := mustSchema(t, testRegistry(t), "Ignoring", 1)
	if err := small.Decode([]byte(`{"event_id":"e","user_id":"u","n":1}`), &ev); err != nil || len(ev.Values) != 3 {
		t.Fatalf("Decode = %v, %+v", err, ev.Values)
	}
}

func TestDecodeAllocs(t *testing.T) {
	s := embeddedSchema(t, "PlaybackEvent")
	var ev Event
	p := []byte(playback)
	if err := s.Decode(p, &ev); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _ = s.Decode(p, &ev) }); n > 1 {
		t.Errorf("Decode allocates %v times per event, want <= 1", n)
	}
}
