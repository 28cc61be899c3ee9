package schemas

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/linkedin/goavro/v2"
)

// Namespace is the Avro namespace of every source (plaintext) event schema.
const Namespace = "lockstream.events"

// EncryptedNamespace is the Avro namespace of every derived encrypted schema.
const EncryptedNamespace = "lockstream.encrypted"

// Kind is the type of a field, as far as lockstream cares.
type Kind int

// Field kinds. A nullable field (["null", T]) has the Kind of T and Field.Nullable set.
const (
	KindString Kind = iota
	KindBytes
	KindInt
	KindLong
	KindFloat
	KindDouble
	KindBoolean
	KindTimestampMillis
	KindEnum
)

var kindNames = [...]string{
	KindString:          "string",
	KindBytes:           "bytes",
	KindInt:             "int",
	KindLong:            "long",
	KindFloat:           "float",
	KindDouble:          "double",
	KindBoolean:         "boolean",
	KindTimestampMillis: "timestamp-millis",
	KindEnum:            "enum",
}

// String returns the Avro name of the kind ("timestamp-millis" for the logical type).
func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Categories of personal data. A PII field's category selects which of the
// subject's keys encrypts it; revoking a category shreds exactly those fields.
var categories = []string{
	"contact", "content", "demographics", "device", "financial", "health", "identity", "location", "profile",
}

// Categories returns the known PII categories, sorted.
func Categories() []string { return slices.Clone(categories) }

// KnownCategory reports whether c is a known PII category.
func KnownCategory(c string) bool {
	_, ok := slices.BinarySearch(categories, c)
	return ok
}

// Retention is how long a type's data is kept, from the end of its hour:
// the record attribute "retention": {"raw_days": N, "published_days": M}.
// Raw covers the raw and late areas (encrypted records before
// publication), Published the datasets. Zero (no attribute) keeps data
// forever: `lockstream retention` deletes nothing of such a type. Every
// version of a type declares the same values (Load checks it).
type Retention struct {
	Raw, Published time.Duration
}

// Declared reports whether the type declares a retention.
func (r Retention) Declared() bool { return r.Raw > 0 && r.Published > 0 }

// PII is the "pii" annotation of a field.
type PII struct {
	Category      string // one of Categories()
	Deterministic bool   // encrypt with deterministic AEAD (AES-SIV) so equal values give equal ciphertexts
	Subject       bool   // this field identifies the data subject (the user whose keys encrypt the record)
}

// Field is one field of a source schema.
type Field struct {
	Name     string
	Index    int // position in Schema.Fields
	Kind     Kind
	Nullable bool     // the Avro type is ["null", T]
	Symbols  []string // enum symbols (KindEnum only)
	EnumName string   // full name of the enum type (KindEnum only)
	PII      *PII     // nil if the field is not personal data
	Doc      string
	// HasDefault reports whether the field declares an Avro default. Default is
	// that value in Go form: nil (null), string (string, bytes, enum), int64
	// (int, long, timestamp-millis), float64 (float, double) or bool.
	HasDefault bool
	Default    any

	def  Value  // Default as a decoded Value (Present=false)
	path string // "$.<name>", for errors
}

// Schema is one version of one event type, loaded from an .avsc file.
type Schema struct {
	Type          string // record name, e.g. "PlaybackEvent"
	Version       int
	Doc           string
	Fields        []Field
	SubjectIndex  int    // index of the subject field (pii.subject), always a required string
	DedupeIndex   int    // index of the dedupe_key field, always a required non-PII string
	UnknownFields string // "reject" (default) or "ignore": what Decode does with members not in the schema
	Retention     Retention

	source    []byte
	file      string
	byName    map[string]int
	piiFields []*Field
	cats      []string
	codec     *goavro.Codec
	enc       *EncryptedSchema
}

// Source returns the .avsc bytes the schema was loaded from. Do not modify them.
func (s *Schema) Source() []byte { return s.source }

// File returns the path of the .avsc file inside the loaded file system.
func (s *Schema) File() string { return s.file }

// Codec returns the goavro codec of the source schema.
func (s *Schema) Codec() *goavro.Codec { return s.codec }

// Field returns the field called name.
func (s *Schema) Field(name string) (*Field, bool) {
	i, ok := s.byName[name]
	if !ok {
		return nil, false
	}
	return &s.Fields[i], true
}

// PIIFields returns the personal fields other than the subject field, in schema order.
func (s *Schema) PIIFields() []*Field { return s.piiFields }

// Categories returns the distinct categories of PIIFields, in the order
// they first appear: the keys an encrypted record of s needs. Do not
// modify it.
func (s *Schema) Categories() []string { return s.cats }

// Subject returns the subject field.
func (s *Schema) Subject() *Field { return &s.Fields[s.SubjectIndex] }

// String returns "Type vN".
func (s *Schema) String() string { return fmt.Sprintf("%s v%d", s.Type, s.Version) }

// Unknown-field policies.
const (
	UnknownFieldsReject = "reject"
	UnknownFieldsIgnore = "ignore"
)

// LoadError is a schema that failed to load: which file, which field (may be
// empty) and which rule it broke.
type LoadError struct {
	File  string
	Field string
	Rule  string
}

func (e *LoadError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("schemas: %s: %s", e.File, e.Rule)
	}
	return fmt.Sprintf("schemas: %s: field %q: %s", e.File, e.Field, e.Rule)
}

// rawRecord is the part of an .avsc we read; unknown record attributes are ignored.
type rawRecord struct {
	Type          json.RawMessage `json:"type"`
	Name          string          `json:"name"`
	Namespace     *string         `json:"namespace"`
	Doc           string          `json:"doc"`
	Version       json.RawMessage `json:"version"`
	DedupeKey     *string         `json:"dedupe_key"`
	UnknownFields *string         `json:"unknown_fields"`
	Retention     *rawRetention   `json:"retention"`
	Fields        []rawField      `json:"fields"`
}

type rawRetention struct {
	RawDays       *int `json:"raw_days"`
	PublishedDays *int `json:"published_days"`
}

type rawField struct {
	Name    string          `json:"name"`
	Type    json.RawMessage `json:"type"`
	Doc     string          `json:"doc"`
	Default json.RawMessage `json:"default"` // nil if absent, "null" if null
	PII     json.RawMessage `json:"pii"`
}

type rawPII struct {
	Category      *string `json:"category"`
	Deterministic bool    `json:"deterministic"`
	Subject       bool    `json:"subject"`
}

// parseSchema parses and checks one .avsc file. file is its path, used in errors
// and matched against <Type>.v<version>.avsc.
func parseSchema(file string, src []byte) (*Schema, error) {
	fail := func(field, format string, args ...any) error {
		return &LoadError{File: file, Field: field, Rule: fmt.Sprintf(format, args...)}
	}
	var rr rawRecord
	if err := json.Unmarshal(src, &rr); err != nil {
		return nil, fail("", "not a JSON object with the record attributes: %v", err)
	}
	var typ string
	if err := json.Unmarshal(rr.Type, &typ); err != nil || typ != "record" {
		return nil, fail("", `"type" must be "record"`)
	}
	if !validName(rr.Name) {
		return nil, fail("", `"name" must be a simple Avro name (no namespace), got %q`, rr.Name)
	}
	if rr.Namespace == nil || *rr.Namespace != Namespace {
		return nil, fail("", `"namespace" must be %q`, Namespace)
	}
	var version int
	if err := json.Unmarshal(rr.Version, &version); err != nil || version < 1 {
		return nil, fail("", `"version" must be an integer >= 1`)
	}
	if want := fmt.Sprintf("%s.v%d.avsc", rr.Name, version); baseName(file) != want {
		return nil, fail("", "file name must be %q (<Type>.v<version>.avsc, matching the record's name and version)", want)
	}
	s := &Schema{
		Type:          rr.Name,
		Version:       version,
		Doc:           rr.Doc,
		UnknownFields: UnknownFieldsReject,
		SubjectIndex:  -1,
		DedupeIndex:   -1,
		source:        src,
		file:          file,
		byName:        make(map[string]int, len(rr.Fields)),
	}
	if rr.UnknownFields != nil {
		switch *rr.UnknownFields {
		case UnknownFieldsReject, UnknownFieldsIgnore:
			s.UnknownFields = *rr.UnknownFields
		default:
			return nil, fail("", `"unknown_fields" must be "reject" or "ignore", got %q`, *rr.UnknownFields)
		}
	}
	if r := rr.Retention; r != nil {
		if r.RawDays == nil || r.PublishedDays == nil || *r.RawDays < 1 || *r.PublishedDays < 1 {
			return nil, fail("", `"retention" must be {"raw_days": N, "published_days": M} with N, M >= 1`)
		}
		s.Retention = Retention{Raw: time.Duration(*r.RawDays) * 24 * time.Hour, Published: time.Duration(*r.PublishedDays) * 24 * time.Hour}
	}
	if len(rr.Fields) == 0 {
		return nil, fail("", "record has no fields")
	}
	for i, rf := range rr.Fields {
		f, err := parseField(rf, i)
		if err != nil {
			return nil, fail(rf.Name, "%s", err)
		}
		if _, dup := s.byName[f.Name]; dup {
			return nil, fail(f.Name, "duplicate field name")
		}
		s.byName[f.Name] = i
		s.Fields = append(s.Fields, f)
	}
	for i := range s.Fields {
		f := &s.Fields[i]
		if f.PII == nil {
			continue
		}
		if f.PII.Subject {
			if s.SubjectIndex >= 0 {
				return nil, fail(f.Name, "second subject field (%q is already the subject); exactly one field may have pii.subject", s.Fields[s.SubjectIndex].Name)
			}
			if f.Kind != KindString || f.Nullable {
				return nil, fail(f.Name, "the subject field must be a required (non-nullable) string, it is %s", typeName(f))
			}
			if f.PII.Category != "identity" {
				return nil, fail(f.Name, `the subject field must have category "identity", it has %q`, f.PII.Category)
			}
			if f.PII.Deterministic {
				return nil, fail(f.Name, "the subject field cannot be deterministic: it is removed from encrypted records, not encrypted")
			}
			s.SubjectIndex = i
			continue
		}
		s.piiFields = append(s.piiFields, f)
		if !slices.Contains(s.cats, f.PII.Category) {
			s.cats = append(s.cats, f.PII.Category)
		}
	}
	if s.SubjectIndex < 0 {
		return nil, fail("", `no subject field: exactly one required string field must have "pii": {"category": "identity", "subject": true}`)
	}
	if rr.DedupeKey == nil {
		return nil, fail("", `missing record attribute "dedupe_key" (the name of a required, non-PII string field)`)
	}
	di, ok := s.byName[*rr.DedupeKey]
	if !ok {
		return nil, fail("", `"dedupe_key" names %q, which is not a field`, *rr.DedupeKey)
	}
	if df := &s.Fields[di]; df.Kind != KindString || df.Nullable {
		return nil, fail(df.Name, "the dedupe_key field must be a required (non-nullable) string, it is %s", typeName(df))
	} else if df.PII != nil {
		return nil, fail(df.Name, "the dedupe_key field must not be PII: it is kept in the clear to deduplicate")
	}
	s.DedupeIndex = di

	codec, err := goavro.NewCodec(string(src))
	if err != nil {
		return nil, fail("", "not a valid Avro schema: %v", err)
	}
	s.codec = codec
	enc, err := deriveEncrypted(s)
	if err != nil {
		return nil, fail("", "cannot derive the encrypted schema: %v", err)
	}
	s.enc = enc
	return s, nil
}

func parseField(rf rawField, index int) (Field, error) {
	f := Field{Name: rf.Name, Index: index, Doc: rf.Doc, path: "$." + rf.Name}
	if !validName(rf.Name) {
		return f, fmt.Errorf("invalid Avro field name")
	}
	if strings.HasPrefix(rf.Name, "_") {
		return f, fmt.Errorf(`field names must not start with "_" (reserved for the encrypted metadata columns)`)
	}
	if strings.TrimSpace(rf.Doc) == "" {
		return f, fmt.Errorf(`every field needs a "doc"`)
	}
	if err := parseType(&f, rf.Type); err != nil {
		return f, err
	}
	if rf.Default != nil {
		f.HasDefault = true
		v, def, err := parseDefault(&f, rf.Default)
		if err != nil {
			return f, err
		}
		f.Default, f.def = v, def
	}
	if rf.PII != nil && !bytes.Equal(bytes.TrimSpace(rf.PII), []byte("null")) {
		dec := json.NewDecoder(bytes.NewReader(rf.PII))
		dec.DisallowUnknownFields()
		var rp rawPII
		if err := dec.Decode(&rp); err != nil {
			return f, fmt.Errorf(`"pii" must be an object with "category" and optional "deterministic", "subject" booleans: %v`, err)
		}
		if rp.Category == nil {
			return f, fmt.Errorf(`"pii" needs a "category" (one of %s)`, strings.Join(categories, ", "))
		}
		if !KnownCategory(*rp.Category) {
			return f, fmt.Errorf("unknown pii category %q (known: %s)", *rp.Category, strings.Join(categories, ", "))
		}
		switch f.Kind {
		case KindString, KindBytes, KindInt, KindLong:
		case KindBoolean, KindEnum:
			return f, fmt.Errorf("pii is not supported on %s: its domain is so small that encrypting it hides little (a ciphertext per value is as good as the value); model it as a string or drop it", typeName(&f))
		case KindTimestampMillis:
			return f, fmt.Errorf("pii is not supported on timestamp-millis: the small domain of plausible times makes encryption weak and event time is needed in the clear to bucket hours; use a long if it is really personal")
		default:
			return f, fmt.Errorf("pii is not supported on %s: floating-point values are encrypted poorly (small effective domain, no exact round trip promise); use a string, bytes, int or long", typeName(&f))
		}
		if rp.Deterministic && f.Kind != KindString && f.Kind != KindBytes {
			return f, fmt.Errorf("deterministic encryption is only allowed on string or bytes, not %s: equal ciphertexts over a small domain reveal the value", typeName(&f))
		}
		f.PII = &PII{Category: *rp.Category, Deterministic: rp.Deterministic, Subject: rp.Subject}
	}
	return f, nil
}

func parseType(f *Field, raw json.RawMessage) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return fmt.Errorf(`missing "type"`)
	}
	if raw[0] == '[' {
		var branches []json.RawMessage
		if err := json.Unmarshal(raw, &branches); err != nil {
			return fmt.Errorf("invalid union: %v", err)
		}
		var first string
		if len(branches) != 2 || json.Unmarshal(branches[0], &first) != nil || first != "null" {
			return fmt.Errorf(`unsupported union: only ["null", T] (null first, default null) is supported`)
		}
		f.Nullable = true
		if b := bytes.TrimSpace(branches[1]); len(b) > 0 && b[0] == '[' {
			return fmt.Errorf("unsupported type: nested union")
		}
		if err := parseType(f, branches[1]); err != nil {
			return err
		}
		if f.Nullable && string(bytes.TrimSpace(branches[1])) == `"null"` {
			return fmt.Errorf(`unsupported union ["null","null"]`)
		}
		return nil
	}
	if raw[0] == '"' {
		var name string
		if err := json.Unmarshal(raw, &name); err != nil {
			return fmt.Errorf("invalid type: %v", err)
		}
		return setPrimitive(f, name)
	}
	if raw[0] != '{' {
		return fmt.Errorf("unsupported type %s", raw)
	}
	var obj struct {
		Type        string   `json:"type"`
		LogicalType *string  `json:"logicalType"`
		Name        string   `json:"name"`
		Namespace   string   `json:"namespace"`
		Symbols     []string `json:"symbols"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return fmt.Errorf("invalid type object: %v", err)
	}
	if obj.LogicalType != nil {
		if *obj.LogicalType == "timestamp-millis" && obj.Type == "long" {
			f.Kind = KindTimestampMillis
			return nil
		}
		return fmt.Errorf("unsupported logical type %q on %q (supported: timestamp-millis on long)", *obj.LogicalType, obj.Type)
	}
	if obj.Type == "enum" {
		if len(obj.Symbols) == 0 {
			return fmt.Errorf("enum needs symbols")
		}
		f.Kind = KindEnum
		f.Symbols = obj.Symbols
		ns := obj.Namespace
		switch {
		case strings.Contains(obj.Name, "."):
			f.EnumName = obj.Name
		case ns != "":
			f.EnumName = ns + "." + obj.Name
		default:
			f.EnumName = Namespace + "." + obj.Name
		}
		return nil
	}
	return setPrimitive(f, obj.Type)
}

func setPrimitive(f *Field, name string) error {
	switch name {
	case "string":
		f.Kind = KindString
	case "bytes":
		f.Kind = KindBytes
	case "int":
		f.Kind = KindInt
	case "long":
		f.Kind = KindLong
	case "float":
		f.Kind = KindFloat
	case "double":
		f.Kind = KindDouble
	case "boolean":
		f.Kind = KindBoolean
	default:
		return fmt.Errorf("unsupported type %q (supported: string, bytes, int, long, float, double, boolean, long/timestamp-millis, enum, and [\"null\", T] of those)", name)
	}
	return nil
}

// parseDefault checks an Avro default against the field type.
func parseDefault(f *Field, raw json.RawMessage) (any, Value, error) {
	raw = bytes.TrimSpace(raw)
	bad := func() (any, Value, error) {
		if f.Nullable {
			return nil, Value{}, fmt.Errorf(`the default of a ["null", T] field must be null`)
		}
		return nil, Value{}, fmt.Errorf("default does not match type %s", typeName(f))
	}
	if string(raw) == "null" {
		if !f.Nullable {
			return bad()
		}
		return nil, Value{Null: true}, nil
	}
	if f.Nullable {
		return bad()
	}
	switch f.Kind {
	case KindString, KindBytes, KindEnum:
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return bad()
		}
		if f.Kind == KindBytes { // Avro: code points 0-255 are the bytes
			b := make([]byte, 0, len(s))
			for _, r := range s {
				if r > 255 {
					return bad()
				}
				b = append(b, byte(r))
			}
			s = string(b)
		}
		if f.Kind == KindEnum && !slices.Contains(f.Symbols, s) {
			return nil, Value{}, fmt.Errorf("default is not one of the enum symbols")
		}
		return s, Value{Str: s}, nil
	case KindInt, KindLong, KindTimestampMillis:
		var n int64
		if json.Unmarshal(raw, &n) != nil || (f.Kind == KindInt && (n < math.MinInt32 || n > math.MaxInt32)) {
			return bad()
		}
		return n, Value{Int: n}, nil
	case KindFloat, KindDouble:
		var x float64
		if json.Unmarshal(raw, &x) != nil {
			return bad()
		}
		return x, Value{Float: x}, nil
	case KindBoolean:
		var b bool
		if json.Unmarshal(raw, &b) != nil {
			return bad()
		}
		return b, Value{Bool: b}, nil
	}
	return bad()
}

func typeName(f *Field) string {
	if f.Nullable {
		return `["null", ` + f.Kind.String() + `]`
	}
	return f.Kind.String()
}

// validName reports whether s is a simple Avro name: [A-Za-z_][A-Za-z0-9_]*.
func validName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9') {
			continue
		}
		return false
	}
	return utf8.ValidString(s)
}

func baseName(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}
