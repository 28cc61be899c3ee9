package schemas

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"
)

// TestParsingCanonicalForm checks each transformation of the Avro
// specification's "Parsing Canonical Form for Schemas".
func TestParsingCanonicalForm(t *testing.T) {
	for _, c := range []struct{ name, in, want string }{
		{"PRIMITIVES", `{"type":"int"}`, `"int"`},
		{"PRIMITIVES logical type stripped", `{"type":"long","logicalType":"timestamp-millis"}`, `"long"`},
		{"FULLNAMES from namespace", `{"type":"record","name":"R","namespace":"a.b","fields":[{"name":"f","type":{"type":"enum","name":"E","symbols":["X"]}},{"name":"g","type":"E"}]}`,
			`{"name":"a.b.R","type":"record","fields":[{"name":"f","type":{"name":"a.b.E","type":"enum","symbols":["X"]}},{"name":"g","type":"a.b.E"}]}`},
		{"FULLNAMES dotted name wins", `{"type":"fixed","name":"x.y.F","namespace":"ignored","size":16}`, `{"name":"x.y.F","type":"fixed","size":16}`},
		{"STRIP and ORDER", `{"fields":[{"type":["null","bytes"],"default":null,"doc":"d","name":"p","pii":{"category":"contact"}}],"doc":"x","aliases":["Q"],"name":"R","type":"record"}`,
			`{"name":"R","type":"record","fields":[{"name":"p","type":["null","bytes"]}]}`},
		{"INTEGERS", `{"type":"fixed","name":"F","size":"016"}`, `{"name":"F","type":"fixed","size":16}`},
		{"STRINGS", `{"type":"enum","name":"E","symbols":["\u00e9t\u00e9"]}`, `{"name":"E","type":"enum","symbols":["été"]}`},
		{"WHITESPACE, array and map", "{ \"type\" : \"array\" ,\n \"items\" : { \"type\" : \"map\", \"values\" : \"string\" } }", `{"type":"array","items":{"type":"map","values":"string"}}`},
	} {
		got, err := ParsingCanonicalForm([]byte(c.in))
		if err != nil || got != c.want {
			t.Errorf("%s: got %s (%v), want %s", c.name, got, err, c.want)
		}
	}
}

// TestFingerprintIsTheSpecifications: PlaybackEvent v1's encrypted schema
// has the fingerprint computed independently from the specification's
// rules (issue 24: "spec PCF b3dd7e0f…"), and FingerprintV1 is the one
// manifests of formats 1 and 2 recorded ("85421bbe…").
func TestFingerprintIsTheSpecifications(t *testing.T) {
	r, err := Embedded()
	if err != nil {
		t.Fatal(err)
	}
	s, err := r.Lookup("PlaybackEvent", 1)
	if err != nil {
		t.Fatal(err)
	}
	es := s.Encrypted()
	const want = "b3dd7e0f2b4829ee72b76169683eabecad9718b4962d7a004b9f5b3790780dd2"
	const wantV1 = "85421bbe81712b2abd527449044151e4f9cee9383544cd09ede318502a31821e"
	if es.Fingerprint != want || es.FingerprintV1 != wantV1 {
		t.Fatalf("fingerprints %s / %s, want %s / %s", es.Fingerprint, es.FingerprintV1, want, wantV1)
	}
	pcf, err := ParsingCanonicalForm(es.JSON)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(pcf))
	if hex.EncodeToString(sum[:]) != want {
		t.Fatal("Fingerprint is not the SHA-256 of ParsingCanonicalForm")
	}
	if !es.FingerprintMatches(wantV1, 2) || es.FingerprintMatches(wantV1, 3) || !es.FingerprintMatches(want, 1) {
		t.Fatal("FingerprintMatches does not follow the manifest format")
	}
}
