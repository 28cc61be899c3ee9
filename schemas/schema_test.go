package schemas

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
)

func TestEmbeddedMatchesDesign(t *testing.T) {
	r, err := Embedded()
	if err != nil {
		t.Fatal(err)
	}
	if r2, _ := Embedded(); r2 != r {
		t.Error("Embedded is not cached")
	}
	// The two types the project ships Go code for; more may be declared (by .avsc files alone).
	for _, typ := range []string{"AccountUpdate", "PlaybackEvent"} {
		if !slices.Contains(r.Types(), typ) {
			t.Fatalf("Types = %v, lacks %s", r.Types(), typ)
		}
	}
	type want struct {
		name     string
		kind     Kind
		nullable bool
		category string
	}
	common := []want{{"event_id", KindString, false, ""}, {"user_id", KindString, false, "identity"}, {"timestamp", KindTimestampMillis, false, ""}}
	for _, tc := range []struct {
		typ    string
		fields []want
	}{
		{"PlaybackEvent", append(slices.Clone(common), want{"track_id", KindString, false, ""}, want{"ms_played", KindLong, false, ""},
			want{"country", KindString, false, ""}, want{"ip_address", KindString, false, "location"}, want{"device_id", KindString, false, "device"})},
		{"AccountUpdate", append(slices.Clone(common), want{"email", KindString, false, "contact"}, want{"display_name", KindString, false, "profile"},
			want{"birth_year", KindInt, true, "demographics"})},
	} {
		t.Run(tc.typ, func(t *testing.T) {
			if vs := r.Versions(tc.typ); vs[0] != 1 {
				t.Fatalf("Versions = %v", vs)
			}
			s, err := r.Lookup(tc.typ, 1)
			if err != nil {
				t.Fatal(err)
			}
			if s.Type != tc.typ || s.Version != 1 || s.UnknownFields != UnknownFieldsReject {
				t.Errorf("schema %s v%d unknown_fields=%s", s.Type, s.Version, s.UnknownFields)
			}
			if len(s.Fields) != len(tc.fields) {
				t.Fatalf("%d fields, want %d", len(s.Fields), len(tc.fields))
			}
			for i, w := range tc.fields {
				f := s.Fields[i]
				cat := ""
				if f.PII != nil {
					cat = f.PII.Category
				}
				if f.Name != w.name || f.Kind != w.kind || f.Nullable != w.nullable || cat != w.category || f.Index != i || f.Doc == "" {
					t.Errorf("field %d = %+v, want %+v", i, f, w)
				}
			}
			if s.Subject().Name != "user_id" || s.Fields[s.DedupeIndex].Name != "event_id" {
				t.Errorf("subject %s dedupe %s", s.Subject().Name, s.Fields[s.DedupeIndex].Name)
			}
			for _, f := range s.PIIFields() {
				if f.PII.Subject || f.Name == "user_id" {
					t.Errorf("PIIFields includes the subject")
				}
			}
			if f, ok := s.Field("birth_year"); ok != (tc.typ == "AccountUpdate") || (ok && (!f.HasDefault || f.Default != nil)) {
				t.Errorf("Field(birth_year) = %v, %v", f, ok)
			}
			if !strings.Contains(string(s.Source()), `"pii"`) {
				t.Error("Source does not hold the .avsc")
			}
		})
	}
	if _, err := r.Lookup("Nope", 1); !errors.Is(err, ErrUnknownEventType) {
		t.Errorf("Lookup(Nope) = %v", err)
	}
	if _, err := r.Lookup("PlaybackEvent", 9); !errors.Is(err, ErrUnknownVersion) {
		t.Errorf("Lookup(v9) = %v", err)
	}
	if _, err := r.Latest("Nope"); !errors.Is(err, ErrUnknownEventType) {
		t.Errorf("Latest(Nope) = %v", err)
	}
	if got := Categories(); !slices.IsSorted(got) || len(got) != 9 {
		t.Errorf("Categories = %v", got)
	}
}

func TestResolve(t *testing.T) {
	r, err := Embedded()
	if err != nil {
		t.Fatal(err)
	}
	if s, err := r.Resolve("PlaybackEvent", "1"); err != nil || s.Type != "PlaybackEvent" {
		t.Fatalf("Resolve = %v, %v", s, err)
	}
	for _, tc := range []struct {
		typ, ver, reason string
		sentinel         error
	}{
		{"Nope", "1", ReasonUnknownEventType, ErrUnknownEventType},
		{"secret@example.com", "1", ReasonUnknownEventType, ErrUnknownEventType},
		{"PlaybackEvent", "99", ReasonUnknownVersion, ErrUnknownVersion},
		{"PlaybackEvent", "01", ReasonUnknownVersion, ErrUnknownVersion},
		{"PlaybackEvent", "x", ReasonUnknownVersion, ErrUnknownVersion},
		{"PlaybackEvent", "", ReasonUnknownVersion, ErrUnknownVersion},
	} {
		_, err := r.Resolve(tc.typ, tc.ver)
		if ReasonOf(err) != tc.reason || !errors.Is(err, tc.sentinel) {
			t.Errorf("Resolve(%q,%q) = %v", tc.typ, tc.ver, err)
		}
		if err != nil && strings.Contains(err.Error(), "secret@") {
			t.Errorf("error echoes an invalid type name: %v", err)
		}
	}
}

func TestLoadGood(t *testing.T) {
	r := testRegistry(t)
	s := mustSchema(t, r, "AllKinds", 1)
	kinds := map[string]Kind{"s": KindString, "b": KindBytes, "i": KindInt, "l": KindLong, "f": KindFloat, "d": KindDouble,
		"ok": KindBoolean, "ts": KindTimestampMillis, "color": KindEnum, "ns": KindString, "ni": KindInt, "nts": KindTimestampMillis}
	for name, k := range kinds {
		f, ok := s.Field(name)
		if !ok || f.Kind != k {
			t.Errorf("field %s: %v %v, want %v", name, f, ok, k)
		}
	}
	if f, _ := s.Field("color"); !slices.Equal(f.Symbols, []string{"RED", "GREEN"}) || f.EnumName != "lockstream.events.Color" {
		t.Errorf("enum = %+v", f)
	}
	if f, _ := s.Field("cnt"); !f.HasDefault || f.Default != int64(7) {
		t.Errorf("cnt default = %v %v", f.HasDefault, f.Default)
	}
	if f, _ := s.Field("b"); f.PII == nil || !f.PII.Deterministic {
		t.Errorf("b pii = %+v", f.PII)
	}
	if mustSchema(t, r, "Ignoring", 1).UnknownFields != UnknownFieldsIgnore {
		t.Error("unknown_fields=ignore not read")
	}
	// Unknown record attributes are ignored; files may sit in subdirectories.
	mustLoad(t, map[string]string{"x/y/T.v3.avsc": rec("T", 3, dedupe+`,"retention_days":30,"owner":{"team":"a"}`, fEventID, fUserID)})
}

func TestLoadBad(t *testing.T) {
	f := func(s string) string { return s }
	for _, tc := range []struct {
		name, file, src string
		field, want     string // field named in the error (may be empty), substring of the rule
	}{
		{"not json", "T.v1.avsc", `{`, "", "not a JSON object"},
		{"not a record", "T.v1.avsc", `{"type":"enum","name":"T","symbols":["A"]}`, "", `"record"`},
		{"wrong namespace", "T.v1.avsc", strings.Replace(std("T", 1), "lockstream.events", "other", 1), "", "namespace"},
		{"no version", "T.v1.avsc", strings.Replace(std("T", 1), `"version":1`, `"v":1`, 1), "", "version"},
		{"file name type", "U.v1.avsc", std("T", 1), "", `"T.v1.avsc"`},
		{"file name version", "T.v2.avsc", std("T", 1), "", `"T.v1.avsc"`},
		{"unknown category", "T.v1.avsc", std("T", 1, `{"name":"x","type":"string","doc":"d","pii":{"category":"secrets"}}`), "x", "unknown pii category"},
		{"pii without category", "T.v1.avsc", std("T", 1, `{"name":"x","type":"string","doc":"d","pii":{}}`), "x", "category"},
		{"pii typo key", "T.v1.avsc", std("T", 1, `{"name":"x","type":"string","doc":"d","pii":{"category":"contact","determinstic":true}}`), "x", "unknown field"},
		{"pii on boolean", "T.v1.avsc", std("T", 1, `{"name":"x","type":"boolean","doc":"d","pii":{"category":"health"}}`), "x", "domain is so small"},
		{"pii on nullable boolean", "T.v1.avsc", std("T", 1, `{"name":"x","type":["null","boolean"],"default":null,"doc":"d","pii":{"category":"health"}}`), "x", "small"},
		{"pii on enum", "T.v1.avsc", std("T", 1, `{"name":"x","type":{"type":"enum","name":"E","symbols":["A"]},"doc":"d","pii":{"category":"health"}}`), "x", "small"},
		{"pii on float", "T.v1.avsc", std("T", 1, `{"name":"x","type":"double","doc":"d","pii":{"category":"financial"}}`), "x", "small effective domain"},
		{"pii on timestamp", "T.v1.avsc", std("T", 1, `{"name":"x","type":{"type":"long","logicalType":"timestamp-millis"},"doc":"d","pii":{"category":"health"}}`), "x", "small domain"},
		{"deterministic int", "T.v1.avsc", std("T", 1, `{"name":"x","type":"int","doc":"d","pii":{"category":"health","deterministic":true}}`), "x", "only allowed on string or bytes"},
		{"no subject", "T.v1.avsc", rec("T", 1, dedupe, fEventID), "", "no subject field"},
		{"two subjects", "T.v1.avsc", std("T", 1, f(`{"name":"x","type":"string","doc":"d","pii":{"category":"identity","subject":true}}`)), "x", "second subject"},
		{"nullable subject", "T.v1.avsc", rec("T", 1, dedupe, fEventID, `{"name":"u","type":["null","string"],"default":null,"doc":"d","pii":{"category":"identity","subject":true}}`), "u", "required (non-nullable) string"},
		{"long subject", "T.v1.avsc", rec("T", 1, dedupe, fEventID, `{"name":"u","type":"long","doc":"d","pii":{"category":"identity","subject":true}}`), "u", "required (non-nullable) string"},
		{"subject not identity", "T.v1.avsc", rec("T", 1, dedupe, fEventID, `{"name":"u","type":"string","doc":"d","pii":{"category":"contact","subject":true}}`), "u", `category "identity"`},
		{"deterministic subject", "T.v1.avsc", rec("T", 1, dedupe, fEventID, `{"name":"u","type":"string","doc":"d","pii":{"category":"identity","subject":true,"deterministic":true}}`), "u", "cannot be deterministic"},
		{"no dedupe_key", "T.v1.avsc", rec("T", 1, "", fEventID, fUserID), "", `"dedupe_key"`},
		{"dedupe_key unknown", "T.v1.avsc", rec("T", 1, `"dedupe_key":"nope"`, fEventID, fUserID), "", "not a field"},
		{"dedupe_key nullable", "T.v1.avsc", rec("T", 1, `"dedupe_key":"x"`, fEventID, fUserID, `{"name":"x","type":["null","string"],"default":null,"doc":"d"}`), "x", "required (non-nullable) string"},
		{"dedupe_key long", "T.v1.avsc", rec("T", 1, `"dedupe_key":"x"`, fEventID, fUserID, `{"name":"x","type":"long","doc":"d"}`), "x", "required (non-nullable) string"},
		{"dedupe_key pii", "T.v1.avsc", rec("T", 1, `"dedupe_key":"x"`, fEventID, fUserID, `{"name":"x","type":"string","doc":"d","pii":{"category":"contact"}}`), "x", "must not be PII"},
		{"dedupe_key subject", "T.v1.avsc", rec("T", 1, `"dedupe_key":"user_id"`, fEventID, fUserID), "user_id", "must not be PII"},
		{"underscore name", "T.v1.avsc", std("T", 1, `{"name":"_hour","type":"long","doc":"d"}`), "_hour", "reserved"},
		{"missing doc", "T.v1.avsc", std("T", 1, `{"name":"x","type":"long"}`), "x", `"doc"`},
		{"duplicate field", "T.v1.avsc", std("T", 1, `{"name":"event_id","type":"long","doc":"d"}`), "event_id", "duplicate"},
		{"array type", "T.v1.avsc", std("T", 1, `{"name":"x","type":{"type":"array","items":"string"},"doc":"d"}`), "x", "unsupported type"},
		{"map type", "T.v1.avsc", std("T", 1, `{"name":"x","type":{"type":"map","values":"string"},"doc":"d"}`), "x", "unsupported type"},
		{"null type", "T.v1.avsc", std("T", 1, `{"name":"x","type":"null","doc":"d"}`), "x", "unsupported type"},
		{"nested record", "T.v1.avsc", std("T", 1, `{"name":"x","type":{"type":"record","name":"R","fields":[]},"doc":"d"}`), "x", "unsupported type"},
		{"named type reference", "T.v1.avsc", std("T", 1, `{"name":"x","type":"Color","doc":"d"}`), "x", "unsupported type"},
		{"union null last", "T.v1.avsc", std("T", 1, `{"name":"x","type":["string","null"],"doc":"d"}`), "x", "null first"},
		{"union of three", "T.v1.avsc", std("T", 1, `{"name":"x","type":["null","string","long"],"default":null,"doc":"d"}`), "x", "unsupported union"},
		{"nullable default not null", "T.v1.avsc", std("T", 1, `{"name":"x","type":["null","string"],"default":"a","doc":"d"}`), "x", "must be null"},
		{"default wrong type", "T.v1.avsc", std("T", 1, `{"name":"x","type":"long","default":"a","doc":"d"}`), "x", "default does not match"},
		{"int default out of range", "T.v1.avsc", std("T", 1, `{"name":"x","type":"int","default":3000000000,"doc":"d"}`), "x", "default does not match"},
		{"unsupported logical type", "T.v1.avsc", std("T", 1, `{"name":"x","type":{"type":"string","logicalType":"uuid"},"doc":"d"}`), "x", "logical type"},
		{"bad unknown_fields", "T.v1.avsc", rec("T", 1, dedupe+`,"unknown_fields":"drop"`, fEventID, fUserID), "", `"unknown_fields"`},
		{"invalid avro enum symbol", "T.v1.avsc", std("T", 1, `{"name":"x","type":{"type":"enum","name":"E","symbols":["a-b"]},"doc":"d"}`), "", "not a valid Avro schema"},
		{"invalid field name", "T.v1.avsc", std("T", 1, `{"name":"a-b","type":"long","doc":"d"}`), "a-b", "invalid Avro field name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(mapFS(map[string]string{tc.file: tc.src}))
			var le *LoadError
			if !errors.As(err, &le) {
				t.Fatalf("Load = %v, want a *LoadError", err)
			}
			if le.File != tc.file || le.Field != tc.field || !strings.Contains(le.Rule, tc.want) {
				t.Errorf("error = %q (file %q field %q), want file %q field %q rule containing %q", err, le.File, le.Field, tc.file, tc.field, tc.want)
			}
			if !strings.Contains(err.Error(), tc.file) {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
	t.Run("duplicate version", func(t *testing.T) {
		_, err := Load(mapFS(map[string]string{"a/T.v1.avsc": std("T", 1), "b/T.v1.avsc": std("T", 1)}))
		if err == nil || !strings.Contains(err.Error(), "also defined") {
			t.Errorf("Load = %v", err)
		}
	})
}

// TestEveryRepoSchemaEmbedded guards against .avsc files that the go:embed
// pattern would miss (and so CheckAll would never see).
func TestEveryRepoSchemaEmbedded(t *testing.T) {
	onDisk, err := Load(os.DirFS("avro"))
	if err != nil {
		t.Fatal(err)
	}
	emb, err := Embedded()
	if err != nil {
		t.Fatal(err)
	}
	if a, b := len(onDisk.All()), len(emb.All()); a != b {
		t.Errorf("%d schemas under schemas/avro, %d embedded", a, b)
	}
	if err := onDisk.CheckAll(); err != nil {
		t.Error(err)
	}
}

// TestRetentionDeclared: every shipped type declares how long its raw and
// published data are kept; a bad declaration, or versions that disagree,
// fail the load.
func TestRetentionDeclared(t *testing.T) {
	r, err := Embedded()
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range r.Types() {
		if ret := r.Retention(typ); !ret.Declared() || ret.Raw > ret.Published {
			t.Errorf("%s: retention %+v", typ, ret)
		}
	}
	v1, _ := embedded.ReadFile("avro/PlaybackEvent.v1.avsc")
	for name, src := range map[string]string{
		"zero days":    strings.Replace(string(v1), `"raw_days": 14`, `"raw_days": 0`, 1),
		"no published": strings.Replace(string(v1), `, "published_days": 400`, ``, 1),
	} {
		if _, err := Load(mapFS(map[string]string{"PlaybackEvent.v1.avsc": src})); err == nil || !strings.Contains(err.Error(), "retention") {
			t.Errorf("%s: %v", name, err)
		}
	}
	v2 := strings.Replace(strings.Replace(string(v1), `"version": 1,`, `"version": 2,`, 1), `"raw_days": 14`, `"raw_days": 15`, 1)
	if _, err := Load(mapFS(map[string]string{"PlaybackEvent.v1.avsc": string(v1), "PlaybackEvent.v2.avsc": v2})); err == nil || !strings.Contains(err.Error(), "every version") {
		t.Errorf("disagreeing versions: %v", err)
	}
}

// TestCategories: a schema's categories are its PII fields' (the subject's
// excluded), each once, in the order they first appear.
func TestCategories(t *testing.T) {
	r, err := Embedded()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		typ     string
		version int
		want    []string
	}{
		{"PlaybackEvent", 3, []string{"location", "device"}}, // device three times
		{"AccountUpdate", 1, []string{"contact", "profile", "demographics"}},
	} {
		if got := mustSchema(t, r, c.typ, c.version).Categories(); !slices.Equal(got, c.want) {
			t.Errorf("%s v%d: categories %q, want %q", c.typ, c.version, got, c.want)
		}
	}
}

// DeterministicCategories names the categories of deterministic fields
// (the shipped schemas: PlaybackEvent v3's device_ref), once each, and is
// empty, not nil, for a registry without any: a key client told so derives
// no AES-SIV key at all.
func TestDeterministicCategories(t *testing.T) {
	r, err := Embedded()
	if err != nil {
		t.Fatal(err)
	}
	if got := r.DeterministicCategories(); !slices.Equal(got, []string{"device"}) {
		t.Errorf("embedded: %v, want [device]", got)
	}
	two := mustLoad(t, map[string]string{
		"A.v1.avsc": std("A", 1, `{"name":"x","type":"string","doc":"d","pii":{"category":"location","deterministic":true}}`,
			`{"name":"y","type":"string","doc":"d","pii":{"category":"contact","deterministic":true}}`,
			`{"name":"z","type":"string","doc":"d","pii":{"category":"location","deterministic":true}}`),
		"B.v1.avsc": std("B", 1, `{"name":"w","type":"string","doc":"d","pii":{"category":"profile","deterministic":false}}`),
	})
	if got := two.DeterministicCategories(); !slices.Equal(got, []string{"contact", "location"}) {
		t.Errorf("%v, want [contact location]", got)
	}
	none := mustLoad(t, map[string]string{"B.v1.avsc": std("B", 1, `{"name":"w","type":"string","doc":"d","pii":{"category":"profile"}}`)})
	if got := none.DeterministicCategories(); got == nil || len(got) != 0 {
		t.Errorf("no deterministic field: %#v, want empty, not nil", got)
	}
}
