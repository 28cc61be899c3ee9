package schemas

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"
)

func TestEncryptedFields(t *testing.T) {
	r, err := Embedded()
	if err != nil {
		t.Fatal(err)
	}
	type ef struct {
		name     string
		kind     Kind
		nullable bool
		source   string // source field name, "" for metadata
		category string
	}
	meta := []ef{{"_subject", KindString, false, "", ""}, {"_key_version", KindInt, false, "", ""},
		{"_publish_time", KindTimestampMillis, false, "", ""}, {"_hour", KindTimestampMillis, false, "", ""}}
	for _, tc := range []struct {
		typ  string
		want []ef
	}{
		{"PlaybackEvent", append([]ef{
			{"event_id", KindString, false, "event_id", ""},
			{"timestamp", KindTimestampMillis, false, "timestamp", ""},
			{"track_id", KindString, false, "track_id", ""},
			{"ms_played", KindLong, false, "ms_played", ""},
			{"country", KindString, false, "country", ""},
			{"ip_address", KindBytes, true, "ip_address", "location"},
			{"device_id", KindBytes, true, "device_id", "device"},
		}, meta...)},
		{"AccountUpdate", append([]ef{
			{"event_id", KindString, false, "event_id", ""},
			{"timestamp", KindTimestampMillis, false, "timestamp", ""},
			{"email", KindBytes, true, "email", "contact"},
			{"display_name", KindBytes, true, "display_name", "profile"},
			{"birth_year", KindBytes, true, "birth_year", "demographics"},
		}, meta...)},
	} {
		t.Run(tc.typ, func(t *testing.T) {
			s, _ := r.Lookup(tc.typ, 1)
			es := s.Encrypted()
			var got []ef
			for _, f := range es.Fields {
				g := ef{name: f.Name, kind: f.Kind, nullable: f.Nullable}
				if f.Source >= 0 {
					g.source = s.Fields[f.Source].Name
				} else if f.Meta != f.Name {
					t.Errorf("metadata field %s has Meta %q", f.Name, f.Meta)
				}
				if f.PII != nil {
					g.category = f.PII.Category
				}
				got = append(got, g)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("encrypted fields\n got %v\nwant %v", got, tc.want)
			}

			// The JSON is the same list, in namespace lockstream.encrypted, with pii copies.
			var doc struct {
				Name, Namespace string
				Version         int
				Fields          []struct {
					Name    string
					Type    any
					Default json.RawMessage
					PII     *struct{ Category string }
				}
			}
			if err := json.Unmarshal(es.JSON, &doc); err != nil {
				t.Fatal(err)
			}
			if doc.Name != tc.typ || doc.Namespace != EncryptedNamespace || doc.Version != 1 || len(doc.Fields) != len(tc.want) {
				t.Fatalf("JSON header %s %s v%d, %d fields", doc.Name, doc.Namespace, doc.Version, len(doc.Fields))
			}
			for i, f := range doc.Fields {
				w := tc.want[i]
				if f.Name != w.name {
					t.Errorf("JSON field %d = %s, want %s", i, f.Name, w.name)
				}
				if w.category != "" {
					if f.PII == nil || f.PII.Category != w.category || !reflect.DeepEqual(f.Type, []any{"null", "bytes"}) ||
						string(f.Default) != "null" {
						t.Errorf("JSON PII field %s: type %v default %s pii %v", f.Name, f.Type, f.Default, f.PII)
					}
				} else if f.PII != nil {
					t.Errorf("JSON field %s has a pii attribute", f.Name)
				}
			}

			// It parses with goavro on its own, and the fingerprints are the
			// documented ones: the specification's canonical form, and
			// goavro's for manifests before format 3.
			c, err := goavro.NewCodec(string(es.JSON))
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256([]byte(c.CanonicalSchema()))
			pcf, err := ParsingCanonicalForm(es.JSON)
			if err != nil {
				t.Fatal(err)
			}
			spec := sha256.Sum256([]byte(pcf))
			if es.FingerprintV1 != hex.EncodeToString(sum[:]) || es.Fingerprint != hex.EncodeToString(spec[:]) || es.Codec == nil {
				t.Errorf("fingerprint %s, v1 %s", es.Fingerprint, es.FingerprintV1)
			}
		})
	}
}

func TestEncryptedRoundTrip(t *testing.T) {
	r, _ := Embedded()
	s, _ := r.Lookup("AccountUpdate", 1)
	es := s.Encrypted()
	hour := time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC)
	rec := map[string]any{
		"event_id":      "e1",
		"timestamp":     hour.Add(12 * time.Minute),
		"email":         goavro.Union("bytes", []byte{1, 2, 3}),
		"display_name":  goavro.Union("bytes", []byte{4}),
		"birth_year":    nil,
		"_subject":      "s-123",
		"_key_version":  int32(2),
		"_publish_time": hour.Add(13 * time.Minute),
		"_hour":         hour,
	}
	bin, err := es.Codec.BinaryFromNative(nil, rec)
	if err != nil {
		t.Fatal(err)
	}
	back, rest, err := es.Codec.NativeFromBinary(bin)
	if err != nil || len(rest) != 0 {
		t.Fatalf("decode: %v, %d bytes left", err, len(rest))
	}
	m := back.(map[string]any)
	if m["event_id"] != "e1" || m["_subject"] != "s-123" || m["_key_version"] != int32(2) || !m["_hour"].(time.Time).Equal(hour) ||
		!reflect.DeepEqual(m["email"], map[string]any{"bytes": []byte{1, 2, 3}}) || m["birth_year"] != nil {
		t.Errorf("round trip = %v", m)
	}
	// Every kind of non-PII field is carried unchanged, deterministic PII becomes bytes too.
	all := mustSchema(t, testRegistry(t), "AllKinds", 1).Encrypted()
	for _, f := range all.Fields {
		if f.Source < 0 {
			continue
		}
		src := mustSchema(t, testRegistry(t), "AllKinds", 1).Fields[f.Source]
		if src.PII == nil && (f.Kind != src.Kind || f.Nullable != src.Nullable) {
			t.Errorf("%s changed: %v -> %v", f.Name, src.Kind, f.Kind)
		}
		if src.PII != nil && (f.Kind != KindBytes || !f.Nullable || f.PII.Deterministic != src.PII.Deterministic) {
			t.Errorf("%s not encrypted bytes", f.Name)
		}
	}
}
