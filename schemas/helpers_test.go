package schemas

import (
	"fmt"
	"strings"
	"testing"
	"testing/fstest"
)

const (
	fEventID = `{"name":"event_id","type":"string","doc":"id"}`
	fUserID  = `{"name":"user_id","type":"string","doc":"user","pii":{"category":"identity","subject":true}}`
	dedupe   = `"dedupe_key":"event_id"`
)

// rec renders a record; attrs are extra record attributes (comma-separated JSON members).
func rec(name string, version int, attrs string, fields ...string) string {
	if attrs != "" {
		attrs = "," + attrs
	}
	return fmt.Sprintf(`{"type":"record","name":%q,"namespace":"lockstream.events","version":%d%s,"fields":[%s]}`,
		name, version, attrs, strings.Join(fields, ","))
}

// std is a valid record with event_id, user_id and the given extra fields.
func std(name string, version int, fields ...string) string {
	return rec(name, version, dedupe, append([]string{fEventID, fUserID}, fields...)...)
}

func mapFS(files map[string]string) fstest.MapFS {
	m := fstest.MapFS{}
	for k, v := range files {
		m[k] = &fstest.MapFile{Data: []byte(v)}
	}
	return m
}

func mustLoad(t testing.TB, files map[string]string) *Registry {
	t.Helper()
	r, err := Load(mapFS(files))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return r
}

func mustSchema(t testing.TB, r *Registry, typ string, v int) *Schema {
	t.Helper()
	s, err := r.Lookup(typ, v)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// allKinds is a test schema with every supported field type.
var allKinds = rec("AllKinds", 1, dedupe,
	fEventID, fUserID,
	`{"name":"s","type":"string","doc":"d"}`,
	`{"name":"b","type":"bytes","doc":"d","pii":{"category":"content","deterministic":true}}`,
	`{"name":"i","type":"int","doc":"d"}`,
	`{"name":"l","type":"long","doc":"d"}`,
	`{"name":"f","type":"float","doc":"d"}`,
	`{"name":"d","type":"double","doc":"d"}`,
	`{"name":"ok","type":"boolean","doc":"d"}`,
	`{"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"},"doc":"d"}`,
	`{"name":"color","type":{"type":"enum","name":"Color","symbols":["RED","GREEN"]},"doc":"d"}`,
	`{"name":"ns","type":["null","string"],"default":null,"doc":"d","pii":{"category":"contact"}}`,
	`{"name":"ni","type":["null","int"],"default":null,"doc":"d"}`,
	`{"name":"nts","type":["null",{"type":"long","logicalType":"timestamp-millis"}],"default":null,"doc":"d"}`,
	`{"name":"cnt","type":"long","default":7,"doc":"d"}`,
)

// ignoring accepts unknown members.
var ignoring = rec("Ignoring", 1, dedupe+`,"unknown_fields":"ignore"`, fEventID, fUserID,
	`{"name":"n","type":"long","doc":"d"}`)

func testRegistry(t testing.TB) *Registry {
	return mustLoad(t, map[string]string{"AllKinds.v1.avsc": allKinds, "Ignoring.v1.avsc": ignoring})
}
