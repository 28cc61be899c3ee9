package schemas

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckAllEmbedded(t *testing.T) {
	r, err := Embedded()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.CheckAll(); err != nil {
		t.Fatal(err)
	}
}

func TestCheckCompatible(t *testing.T) {
	const (
		country   = `{"name":"country","type":"string","doc":"d"}`
		ip        = `{"name":"ip","type":"string","doc":"d","pii":{"category":"location"}}`
		optional  = `{"name":"app","type":["null","string"],"default":null,"doc":"d"}`
		newPII    = `{"name":"gps","type":["null","string"],"default":null,"doc":"d","pii":{"category":"location"}}`
		required  = `{"name":"app","type":"string","doc":"d"}`
		withDef   = `{"name":"app","type":"string","default":"web","doc":"d"}`
		nInt      = `{"name":"n","type":"int","doc":"d"}`
		nLong     = `{"name":"n","type":"long","doc":"d"}`
		nDouble   = `{"name":"n","type":"double","doc":"d"}`
		nString   = `{"name":"n","type":"string","doc":"d"}`
		nBytes    = `{"name":"n","type":"bytes","doc":"d"}`
		nNullStr  = `{"name":"n","type":["null","string"],"default":null,"doc":"d"}`
		nTS       = `{"name":"n","type":{"type":"long","logicalType":"timestamp-millis"},"doc":"d"}`
		enumAB    = `{"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"]},"doc":"d"}`
		enumABC   = `{"name":"e","type":{"type":"enum","name":"E","symbols":["A","B","C"]},"doc":"d"}`
		enumOther = `{"name":"e","type":{"type":"enum","name":"F","symbols":["A","B","C"]},"doc":"d"}`
		ipContact = `{"name":"ip","type":"string","doc":"d","pii":{"category":"contact"}}`
		ipPlain   = `{"name":"ip","type":"string","doc":"d"}`
		ipDet     = `{"name":"ip","type":"string","doc":"d","pii":{"category":"location","deterministic":true}}`
		uid2      = `{"name":"account","type":"string","doc":"d","pii":{"category":"identity","subject":true}}`
	)
	// ok: [reader<-writer, writer<-reader]
	for _, tc := range []struct {
		name       string
		v1, v2     string
		fwd, bwd   bool   // v2 reads v1 / v1 reads v2
		wantSubstr string // in the error, when one fails
	}{
		{"new optional and new PII field", std("T", 1, country, ip), std("T", 2, country, ip, optional, newPII), true, true, ""},
		{"field removed", std("T", 1, country, ip), std("T", 2, ip), true, false, "added without a default"},
		{"required field added", std("T", 1, country), std("T", 2, country, required), false, true, "added without a default"},
		{"field added with default", std("T", 1, country), std("T", 2, country, withDef), true, true, ""},
		{"int to long", std("T", 1, nInt), std("T", 2, nLong), true, false, "not an Avro promotion"},
		{"int to double", std("T", 1, nInt), std("T", 2, nDouble), true, false, "not an Avro promotion"},
		{"string to bytes", std("T", 1, nString), std("T", 2, nBytes), true, true, ""},
		{"type change string to long", std("T", 1, nString), std("T", 2, nLong), false, false, "type changed"},
		{"long to timestamp", std("T", 1, nLong), std("T", 2, nTS), false, false, "type changed"},
		{"became nullable", std("T", 1, nString), std("T", 2, nNullStr), true, false, "may hold null"},
		{"enum symbol added", std("T", 1, enumAB), std("T", 2, enumABC), true, false, `symbol "C"`},
		{"enum renamed", std("T", 1, enumABC), std("T", 2, enumOther), false, false, "enum name changed"},
		{"pii category changed", std("T", 1, ip), std("T", 2, ipContact), false, false, "category changed"},
		{"pii dropped", std("T", 1, ip), std("T", 2, ipPlain), false, false, "pii annotation"},
		{"pii deterministic changed", std("T", 1, ip), std("T", 2, ipDet), false, false, "deterministic"},
		{"subject renamed", std("T", 1), rec("T", 2, dedupe, fEventID, uid2), false, false, "subject field changed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := mustLoad(t, map[string]string{"T.v1.avsc": tc.v1, "T.v2.avsc": tc.v2})
			v1, v2 := mustSchema(t, r, "T", 1), mustSchema(t, r, "T", 2)
			check := func(dir string, reader, writer *Schema, ok bool) {
				err := CheckCompatible(reader, writer)
				if ok && err != nil {
					t.Errorf("%s: unexpected error: %v", dir, err)
				}
				if !ok {
					if err == nil || !errors.Is(err, ErrIncompatible) {
						t.Errorf("%s: err = %v, want ErrIncompatible", dir, err)
					} else if !strings.Contains(err.Error(), tc.wantSubstr) {
						t.Errorf("%s: err = %v, want %q", dir, err, tc.wantSubstr)
					}
				}
			}
			check("v2 reads v1", v2, v1, tc.fwd)
			check("v1 reads v2", v1, v2, tc.bwd)
			if all := r.CheckAll(); (all == nil) != (tc.fwd && tc.bwd) {
				t.Errorf("CheckAll = %v", all)
			}
		})
	}
	t.Run("different types", func(t *testing.T) {
		r := mustLoad(t, map[string]string{"T.v1.avsc": std("T", 1), "U.v1.avsc": std("U", 1)})
		if err := CheckCompatible(mustSchema(t, r, "T", 1), mustSchema(t, r, "U", 1)); !errors.Is(err, ErrIncompatible) {
			t.Errorf("err = %v", err)
		}
	})
}

// TestIncompatibleVersionFailsCheckAll: a new version of a real schema that
// changes a field's type (PlaybackEvent.ms_played long -> string) is what
// CI's CheckAll over the repository's schemas rejects, naming the field,
// before any producer sends it.
func TestIncompatibleVersionFailsCheckAll(t *testing.T) {
	v1, err := embedded.ReadFile("avro/PlaybackEvent.v1.avsc")
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(strings.Replace(string(v1), `"version": 1,`, `"version": 3,`, 1),
		`{"name": "ms_played", "type": "long",`, `{"name": "ms_played", "type": "string",`, 1)
	if bad == string(v1) || !strings.Contains(bad, `"ms_played", "type": "string"`) {
		t.Fatal("test setup: the field type was not changed")
	}
	r, err := Load(mapFS(map[string]string{"PlaybackEvent.v1.avsc": string(v1), "PlaybackEvent.v3.avsc": bad}))
	if err != nil {
		t.Fatal(err)
	}
	err = r.CheckAll()
	if !errors.Is(err, ErrIncompatible) || !strings.Contains(err.Error(), "ms_played") {
		t.Fatalf("CheckAll = %v, want an incompatibility naming ms_played", err)
	}
}
