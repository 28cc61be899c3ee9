package schemas

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/linkedin/goavro/v2"
)

// Names of the metadata columns appended to every encrypted record.
const (
	MetaSubject     = "_subject"      // string: opaque id from the key service, replaces the subject field
	MetaKeyVersion  = "_key_version"  // int: the highest version of the category keys used
	MetaPublishTime = "_publish_time" // long timestamp-millis: Pub/Sub publish time
	MetaHour        = "_hour"         // long timestamp-millis: start of the UTC hour of the record
)

// EncryptedSchema is the schema of a record of one event type as written to
// every dataset: PII fields become nullable bytes (ciphertexts), the subject
// field is removed, metadata columns are appended.
type EncryptedSchema struct {
	JSON   []byte // the Avro schema (namespace lockstream.encrypted)
	Fields []EncryptedField
	// Fingerprint is the hex SHA-256 of the Parsing Canonical Form of JSON
	// as the Avro specification defines it (ParsingCanonicalForm: docs,
	// logical types and pii attributes are not part of it, so it identifies
	// the wire format): what _MANIFEST.json format 3 records.
	Fingerprint string
	// FingerprintV1 is what manifests of formats 1 and 2 recorded: the hex
	// SHA-256 of goavro's canonical form, which keeps logical types
	// ({"type":"long","logicalType":"timestamp-millis"} where the
	// specification has "long"). Readers accept it from those manifests.
	FingerprintV1 string
	Codec         *goavro.Codec
}

// EncryptedField is one column of an encrypted record.
type EncryptedField struct {
	Name     string
	Kind     Kind // KindBytes for PII fields
	Nullable bool
	Symbols  []string
	Source   int  // index into Schema.Fields, or -1 for metadata columns
	PII      *PII // the source field's annotation, nil if not personal
	Meta     string
}

// Encrypted returns the encrypted schema derived from s (computed at load).
func (s *Schema) Encrypted() *EncryptedSchema { return s.enc }

// Algorithm names the Tink primitive used for a PII field.
func (p *PII) Algorithm() string {
	if p.Deterministic {
		return "Tink DeterministicAEAD AES-SIV"
	}
	return "Tink AEAD AES-GCM"
}

type jsonRecord struct {
	Type      string      `json:"type"`
	Name      string      `json:"name"`
	Namespace string      `json:"namespace"`
	Doc       string      `json:"doc,omitempty"`
	Version   int         `json:"version"`
	Source    string      `json:"source"`
	DedupeKey string      `json:"dedupe_key"`
	Fields    []jsonField `json:"fields"`
}

type jsonField struct {
	Name    string          `json:"name"`
	Type    any             `json:"type"`
	Default json.RawMessage `json:"default,omitempty"`
	Doc     string          `json:"doc,omitempty"`
	PII     *jsonPII        `json:"pii,omitempty"`
}

type jsonPII struct {
	Category      string `json:"category"`
	Deterministic bool   `json:"deterministic"`
	Encryption    string `json:"encryption"`
	AAD           string `json:"aad"`
}

type jsonEnum struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Symbols []string `json:"symbols"`
}

type jsonTimestamp struct {
	Type        string `json:"type"`
	LogicalType string `json:"logicalType"`
}

// avroType renders the Avro type of a source field.
func avroType(f *Field) any {
	var t any
	switch f.Kind {
	case KindTimestampMillis:
		t = jsonTimestamp{Type: "long", LogicalType: "timestamp-millis"}
	case KindEnum:
		t = jsonEnum{Type: "enum", Name: f.EnumName, Symbols: f.Symbols}
	default:
		t = f.Kind.String()
	}
	if f.Nullable {
		return []any{"null", t}
	}
	return t
}

func deriveEncrypted(s *Schema) (*EncryptedSchema, error) {
	rec := jsonRecord{
		Type:      "record",
		Name:      s.Type,
		Namespace: EncryptedNamespace,
		Doc:       fmt.Sprintf("Encrypted form of %s.%s v%d: PII fields are Tink ciphertexts under the subject's category keys; the subject field is replaced by %s.", Namespace, s.Type, s.Version, MetaSubject),
		Version:   s.Version,
		Source:    Namespace + "." + s.Type,
		DedupeKey: s.Fields[s.DedupeIndex].Name,
	}
	es := &EncryptedSchema{}
	for i := range s.Fields {
		f := &s.Fields[i]
		if i == s.SubjectIndex {
			continue
		}
		jf := jsonField{Name: f.Name, Doc: f.Doc}
		ef := EncryptedField{Name: f.Name, Kind: f.Kind, Nullable: f.Nullable, Symbols: f.Symbols, Source: i}
		if f.PII != nil {
			p := *f.PII
			ef.Kind, ef.Nullable, ef.Symbols, ef.PII = KindBytes, true, nil, &p
			aad := fmt.Sprintf("%s.%s|<%s>", s.Type, f.Name, MetaSubject)
			jf.Type = []any{"null", "bytes"}
			jf.Default = json.RawMessage("null")
			jf.Doc = fmt.Sprintf("%s [encrypted, source type %s: pii category %q, %s ciphertext under the subject's %s key, AAD %q; null if the source was null]",
				f.Doc, typeName(f), p.Category, p.Algorithm(), p.Category, aad)
			jf.PII = &jsonPII{Category: p.Category, Deterministic: p.Deterministic, Encryption: p.Algorithm(), AAD: aad}
		} else {
			jf.Type = avroType(f)
			if f.HasDefault {
				d, err := json.Marshal(f.Default)
				if err != nil {
					return nil, err
				}
				jf.Default = d
			}
		}
		rec.Fields = append(rec.Fields, jf)
		es.Fields = append(es.Fields, ef)
	}
	ts := jsonTimestamp{Type: "long", LogicalType: "timestamp-millis"}
	for _, m := range []struct {
		name string
		kind Kind
		typ  any
		doc  string
	}{
		{MetaSubject, KindString, "string", "Opaque id of the data subject, assigned by the key service; replaces " + s.Fields[s.SubjectIndex].Name + " and stops resolving once the user is deleted."},
		{MetaKeyVersion, KindInt, "int", "Highest version among the category keys that encrypted this record's PII fields (each ciphertext names its own key version in its Tink prefix); 0 when none was encrypted."},
		{MetaPublishTime, KindTimestampMillis, ts, "Publish time of the source message, UTC."},
		{MetaHour, KindTimestampMillis, ts, "Start of the UTC hour this record is bucketed into."},
	} {
		rec.Fields = append(rec.Fields, jsonField{Name: m.name, Type: m.typ, Doc: m.doc})
		es.Fields = append(es.Fields, EncryptedField{Name: m.name, Kind: m.kind, Source: -1, Meta: m.name})
	}
	var jb bytes.Buffer
	enc := json.NewEncoder(&jb)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rec); err != nil {
		return nil, err
	}
	js := jb.Bytes()
	codec, err := goavro.NewCodec(string(js))
	if err != nil {
		return nil, err
	}
	pcf, err := ParsingCanonicalForm(js)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(pcf))
	v1 := sha256.Sum256([]byte(codec.CanonicalSchema()))
	es.JSON, es.Codec, es.Fingerprint, es.FingerprintV1 = js, codec, hex.EncodeToString(sum[:]), hex.EncodeToString(v1[:])
	return es, nil
}

// FingerprintMatches reports whether fp, read from a manifest of format
// manifestFormat, is this schema's fingerprint: Fingerprint, or for
// manifests older than format 3 also FingerprintV1.
func (es *EncryptedSchema) FingerprintMatches(fp string, manifestFormat int) bool {
	return fp == es.Fingerprint || (manifestFormat < 3 && fp == es.FingerprintV1)
}
