package bq

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/daead"

	"github.com/lockstream/lockstream/insecurekeyset"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/schemas"
	"github.com/lockstream/lockstream/synth"
)

// lookupAvsc is a test-only event type with deterministic (AES-SIV) fields,
// so the proof covers DETERMINISTIC_DECRYPT_BYTES too (the shipped schemas
// have none yet), and a bytes and a long PII field.
const lookupAvsc = `{"type":"record","name":"LookupEvent","namespace":"lockstream.events","version":1,
 "doc":"test","dedupe_key":"event_id",
 "fields":[
  {"name":"event_id","type":"string","doc":"id"},
  {"name":"user_id","type":"string","doc":"user","pii":{"category":"identity","subject":true}},
  {"name":"email","type":"string","doc":"e","pii":{"category":"contact","deterministic":true}},
  {"name":"token","type":["null","bytes"],"default":null,"doc":"t","pii":{"category":"device","deterministic":true}},
  {"name":"score","type":"long","doc":"s","pii":{"category":"demographics"}}]}`

// testRegistry is the embedded schemas plus LookupEvent.
func testRegistry(t *testing.T) *schemas.Registry {
	t.Helper()
	emb, err := schemas.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	fsys := fstest.MapFS{"LookupEvent.v1.avsc": {Data: []byte(lookupAvsc)}}
	for _, s := range emb.All() {
		fsys[fmt.Sprintf("%s.v%d.avsc", s.Type, s.Version)] = &fstest.MapFile{Data: s.Source()}
	}
	reg, err := schemas.Load(fsys)
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

func lookupMsg(id, user, email string, token []byte, score int64) record.Message {
	tok := "null"
	if token != nil {
		tok = strconv.Quote(base64.StdEncoding.EncodeToString(token))
	}
	return record.Message{
		ID: "m-" + id, PublishTime: hour06,
		Attributes: map[string]string{record.AttrEventType: "LookupEvent", record.AttrSchemaVersion: "1"},
		Data:       []byte(fmt.Sprintf(`{"event_id":%q,"user_id":%q,"email":%q,"token":%s,"score":%d}`, id, user, email, tok, score)),
	}
}

// ---- a reader of the generated SQL: the test evaluates what the SQL says ----

var (
	reJoin = regexp.MustCompile("^LEFT JOIN (`[^`]+`) AS (\\w+) ON (\\w+)\\.`_subject` = t\\.`_subject` AND (\\w+)\\.category = '(\\w+)' AND (\\w+)\\.deterministic = (TRUE|FALSE)$")
	reItem = regexp.MustCompile("^  (.*) AS `(\\w+)`,?$")
	reInt  = regexp.MustCompile(`^SAFE_CAST\(SAFE_CONVERT_BYTES_TO_STRING\((.*)\) AS INT64\)$`)
	reStr  = regexp.MustCompile(`^SAFE_CONVERT_BYTES_TO_STRING\((.*)\)$`)
	reDec  = regexp.MustCompile("^(SAFE\\.AEAD\\.DECRYPT_BYTES|SAFE\\.DETERMINISTIC_DECRYPT_BYTES)\\((\\w+)\\.keyset, t\\.`(\\w+)`, CONCAT\\('((?:[^'\\\\]|\\\\.)*)', t\\.`_subject`\\)\\)$")
)

type sqlJoin struct {
	table, category string
	det             bool
}

type sqlColumn struct {
	conv     string // "string", "int64", "bytes"
	fn       string // SQL function name
	join     sqlJoin
	ctColumn string
	aadLit   string // the CONCAT literal, unescaped
}

var (
	reNull    = regexp.MustCompile("^  CAST\\(NULL AS (\\w+)\\) AS `(\\w+)`,$")
	reVersion = regexp.MustCompile("^  (\\d+) AS `" + ViewColumnVersion + "`$")
	rePass    = regexp.MustCompile("^  t\\.`(\\w+)`,$")
)

// parseView reads a generated type view back, one SELECT per version (split
// at "UNION ALL"): joins by alias and the decrypting select items by output
// column, by version. It fails unless every SELECT has the same columns in
// the same order (UNION ALL pairs them by position).
func parseView(t *testing.T, sql string) map[int]map[string]sqlColumn {
	t.Helper()
	out := map[int]map[string]sqlColumn{}
	var firstOrder []string
	for _, block := range strings.Split(sql, "\nUNION ALL\n") {
		cols, version, order := parseSelect(t, block)
		if _, dup := out[version]; dup || version == 0 {
			t.Fatalf("version %d twice or missing in:\n%s", version, sql)
		}
		out[version] = cols
		if firstOrder == nil {
			firstOrder = order
		} else if !slices.Equal(order, firstOrder) {
			t.Fatalf("version %d has columns %v, another %v", version, order, firstOrder)
		}
	}
	return out
}

func parseSelect(t *testing.T, sql string) (cols map[string]sqlColumn, version int, order []string) {
	t.Helper()
	joins := map[string]sqlJoin{}
	var items [][]string
	sc := bufio.NewScanner(strings.NewReader(sql))
	for sc.Scan() {
		line := sc.Text()
		if m := reJoin.FindStringSubmatch(line); m != nil {
			if m[2] != m[3] || m[2] != m[4] || m[2] != m[6] {
				t.Fatalf("join mixes aliases: %s", line)
			}
			joins[m[2]] = sqlJoin{table: m[1], category: m[5], det: m[7] == "TRUE"}
		} else if strings.HasPrefix(line, "LEFT JOIN") {
			t.Fatalf("unreadable join: %s", line)
		}
		switch m := reVersion.FindStringSubmatch(line); {
		case m != nil:
			version, _ = strconv.Atoi(m[1])
			order = append(order, ViewColumnVersion)
			continue
		}
		if m := reNull.FindStringSubmatch(line); m != nil {
			order = append(order, m[2])
			continue
		}
		if m := rePass.FindStringSubmatch(line); m != nil {
			order = append(order, m[1])
			continue
		}
		if m := reItem.FindStringSubmatch(line); m != nil {
			items = append(items, m[1:])
			order = append(order, m[2])
		}
	}
	cols = map[string]sqlColumn{}
	for _, it := range items {
		expr, name := it[0], it[1]
		c := sqlColumn{conv: "bytes"}
		if m := reInt.FindStringSubmatch(expr); m != nil {
			c.conv, expr = "int64", m[1]
		} else if m := reStr.FindStringSubmatch(expr); m != nil {
			c.conv, expr = "string", m[1]
		}
		m := reDec.FindStringSubmatch(expr)
		if m == nil {
			t.Fatalf("column %s: unreadable decrypt expression %s", name, expr)
		}
		j, ok := joins[m[2]]
		if !ok {
			t.Fatalf("column %s uses alias %s that no join defines", name, m[2])
		}
		lit := strings.NewReplacer(`\\`, `\`, `\'`, `'`, `\n`, "\n").Replace(m[4])
		c.fn, c.join, c.ctColumn, c.aadLit = m[1], j, m[3], lit
		cols[name] = c
	}
	return cols, version, order
}

// keysTable is the keys table as BigQuery would hold it after loading our
// NDJSON: rows by (_subject, category, deterministic).
type keysTable map[string][]byte

func loadKeysTable(t *testing.T, ndjson []byte) keysTable {
	t.Helper()
	kt := keysTable{}
	sc := bufio.NewScanner(bytes.NewReader(ndjson))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r struct {
			Subject       string `json:"_subject"`
			Category      string `json:"category"`
			Version       int64  `json:"version"`
			Keyset        []byte `json:"keyset"` // base64, as BigQuery reads BYTES from JSON
			Deterministic bool   `json:"deterministic"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("keys NDJSON line: %v", err)
		}
		k := fmt.Sprintf("%s|%s|%v", r.Subject, r.Category, r.Deterministic)
		if _, dup := kt[k]; dup {
			t.Fatalf("two keys rows for %s: the view join would duplicate rows", k)
		}
		kt[k] = r.Keyset
	}
	return kt
}

// eval computes what the view's column expression gives for one row: nil
// for SQL NULL.
func eval(t *testing.T, c sqlColumn, kt keysTable, subject string, ct []byte) any {
	t.Helper()
	ks, ok := kt[fmt.Sprintf("%s|%s|%v", subject, c.join.category, c.join.det)]
	if !ok || ct == nil {
		return nil // LEFT JOIN found no keys row, or NULL ciphertext
	}
	h, err := insecurekeyset.Read(ks)
	if err != nil {
		t.Fatalf("keys row does not parse as a Tink keyset: %v", err)
	}
	aad := []byte(c.aadLit + subject)
	var pt []byte
	switch c.fn {
	case "SAFE.AEAD.DECRYPT_BYTES":
		p, err := aead.New(h)
		if err != nil {
			return nil // AEAD.DECRYPT_BYTES on a non-AEAD keyset: an error, SAFE. makes it NULL
		}
		if pt, err = p.Decrypt(ct, aad); err != nil {
			return nil
		}
	case "SAFE.DETERMINISTIC_DECRYPT_BYTES":
		p, err := daead.New(h)
		if err != nil {
			return nil
		}
		if pt, err = p.DecryptDeterministically(ct, aad); err != nil {
			return nil
		}
	default:
		t.Fatalf("unknown function %s", c.fn)
	}
	switch c.conv {
	case "string":
		return string(pt)
	case "int64":
		n, err := strconv.ParseInt(string(pt), 10, 64)
		if err != nil {
			return nil // SAFE_CAST
		}
		return n
	}
	return pt
}

// expected reads a field's plaintext from the message payload (what the
// view must show).
func expected(t *testing.T, s *schemas.Schema, field string, payload []byte) any {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(payload, &m); err != nil {
		t.Fatal(err)
	}
	raw, ok := m[field]
	if !ok || string(raw) == "null" {
		return nil
	}
	f, _ := s.Field(field)
	switch f.Kind {
	case schemas.KindString:
		var v string
		json.Unmarshal(raw, &v)
		return v
	case schemas.KindInt, schemas.KindLong:
		v, _ := strconv.ParseInt(string(raw), 10, 64)
		return v
	case schemas.KindBytes:
		var v []byte
		json.Unmarshal(raw, &v)
		return v
	}
	t.Fatalf("field %s: unexpected kind", field)
	return nil
}

type viewRow struct {
	schema  *schemas.Schema
	subject string
	cts     map[string][]byte
	payload []byte
	user    string
}

// TestViewSQLDecryptsWhatTheAnonymizerWrote is the proof of the views
// without BigQuery: for every PII field of every event type, a ciphertext
// written by record.Anonymizer is opened exactly as the generated SQL says —
// the keyset from the keys-table rows we export (as loaded from our NDJSON),
// chosen by the join condition the SQL states, the AAD built from the CONCAT
// literal in the SQL, the decrypt function the SQL names, the conversion it
// applies — and must give the original value; after the user is deleted and
// the keys table re-exported, every PII column of theirs is NULL.
func TestViewSQLDecryptsWhatTheAnonymizerWrote(t *testing.T) {
	ctx := context.Background()
	reg := testRegistry(t)
	keys := keyclient.NewFake()
	an, err := record.NewAnonymizer(reg, keys, record.Options{})
	if err != nil {
		t.Fatal(err)
	}
	batches := [][]record.Message{
		{
			playbackMsg("p1", "alice", "203.0.113.7", hour06),
			playbackMsg("p2", "bob", "2001:db8::1", hour06),
			accountMsg("a1", "alice", "alice@example.com", "Alice O'Hara", "1990", hour06),
			accountMsg("a2", "bob", "bob@example.com", "Bob", "null", hour06),
			lookupMsg("l1", "alice", "alice@example.com", []byte{0, 1, 2, 0xff}, -42),
			lookupMsg("l2", "bob", "bob@example.com", nil, 7),
		},
	}
	// Every other (type, version) of the registry — later versions, types
	// declared only by an .avsc file — gets messages made from its schema.
	handMade := map[string]bool{"PlaybackEvent/1": true, "AccountUpdate/1": true, "LookupEvent/1": true}
	var generic []*schemas.Schema
	for _, s := range reg.All() {
		if !handMade[fmt.Sprintf("%s/%d", s.Type, s.Version)] {
			generic = append(generic, s)
			batches[0] = append(batches[0], synth.FromSchema(s, 1, "alice", hour06), synth.FromSchema(s, 2, "bob", hour06))
		}
	}
	// Rotate every category once: the second batch is under version 2, so
	// the exported keysets must hold both versions.
	var rotated []string
	for _, c := range KeyUses(reg).Categories() {
		keys.Rotate(c)
		rotated = append(rotated, c)
	}
	batches = append(batches, []record.Message{
		playbackMsg("p3", "alice", "198.51.100.9", hour06.Add(time.Minute)),
		accountMsg("a3", "alice", "alice+new@example.com", "Ålice ünïcode", "2001", hour06),
		lookupMsg("l3", "bob", "bob@example.com", []byte("tok"), 1<<40),
	})
	for _, s := range generic {
		batches[1] = append(batches[1], synth.FromSchema(s, 3, "alice", hour06.Add(time.Minute)))
	}
	var rows []viewRow
	subjects := map[string]string{}
	for _, batch := range batches {
		outs, err := an.Anonymize(ctx, batch)
		if err != nil {
			t.Fatal(err)
		}
		for i, o := range outs {
			if o.Reject != nil {
				t.Fatalf("rejected %s: %+v", batch[i].ID, o.Reject)
			}
			s, _ := reg.Lookup(o.EventType, o.Version)
			native, _, err := s.Encrypted().Codec.NativeFromBinary(o.Record)
			if err != nil {
				t.Fatal(err)
			}
			m := native.(map[string]any)
			r := viewRow{schema: s, subject: m["_subject"].(string), cts: map[string][]byte{}, payload: batch[i].Data}
			for _, f := range s.Encrypted().Fields {
				if f.PII == nil {
					continue
				}
				if u, ok := m[f.Name].(map[string]any); ok {
					r.cts[f.Name] = u["bytes"].([]byte)
				}
			}
			var p struct {
				User string `json:"user_id"`
			}
			json.Unmarshal(batch[i].Data, &p)
			r.user = p.User
			subjects[p.User] = r.subject
			rows = append(rows, r)
		}
	}

	uses := KeyUses(reg)
	if !uses["contact"].AEAD || !uses["contact"].Deterministic {
		t.Fatalf("uses %+v: contact is used by AES-GCM and AES-SIV fields", uses)
	}
	views := map[*schemas.Schema]map[string]sqlColumn{}
	src := func(s *schemas.Schema) TableRef {
		return TableRef{Project: testProject, Dataset: testDataset, Table: TableName(s.Type, s.Version)}
	}
	keysRef := TableRef{Project: testProject, Dataset: "restricted", Table: "lockstream_keys"}
	for _, typ := range reg.Types() {
		sql, err := ViewSQL(reg, typ, func(v int) TableRef { s, _ := reg.Lookup(typ, v); return src(s) }, keysRef)
		if err != nil {
			t.Fatal(err)
		}
		byVersion := parseView(t, sql)
		for _, v := range reg.Versions(typ) {
			s, _ := reg.Lookup(typ, v)
			cols := byVersion[v]
			n := 0
			for _, f := range s.Encrypted().Fields {
				if f.PII == nil {
					if _, ok := cols[f.Name]; ok {
						t.Fatalf("%s: non-PII column %s is decrypted", s, f.Name)
					}
					if !strings.Contains(sql, "  t.`"+f.Name+"`") {
						t.Fatalf("%s: column %s does not pass through", s, f.Name)
					}
					continue
				}
				n++
				c, ok := cols[f.Name]
				if !ok {
					t.Fatalf("%s: PII column %s is not decrypted by the view:\n%s", s, f.Name, sql)
				}
				if c.ctColumn != f.Name || c.join.table != "`lockstream-test.restricted.lockstream_keys`" {
					t.Fatalf("%s.%s decrypts column %s with keys from %s", s, f.Name, c.ctColumn, c.join.table)
				}
			}
			if n != len(cols) || n == 0 {
				t.Fatalf("%s: %d decrypted columns in SQL, %d PII fields", s, len(cols), n)
			}
			if !strings.Contains(sql, "FROM `lockstream-test.events."+TableName(s.Type, s.Version)+"` AS t\n") {
				t.Fatalf("%s: wrong source table:\n%s", s, sql)
			}
			views[s] = cols
		}
	}

	var subs []string
	for _, s := range subjects {
		subs = append(subs, s)
	}
	exported, gone, err := KeyRows(ctx, keys, uses, subs)
	if err != nil || len(gone) != 0 {
		t.Fatal(err, gone)
	}
	for _, r := range exported {
		if r.Version != 2 {
			t.Fatalf("row %s/%s: version %d, want 2 (primary after rotation)", r.Subject, r.Category, r.Version)
		}
		if s := fmt.Sprintf("%v %+v %s", r, r, r.Keyset); strings.Count(s, "[redacted]") != 3 {
			t.Fatalf("keyset printed: %s", s)
		}
	}
	kt := loadKeysTable(t, NDJSON(exported))

	checked := map[string]bool{}
	for _, r := range rows {
		for field, c := range views[r.schema] {
			got := eval(t, c, kt, r.subject, r.cts[field])
			want := expected(t, r.schema, field, r.payload)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("%s.%s (user %s): view gives %v, want %v", r.schema.Type, field, r.user, got, want)
			}
			if want != nil {
				checked[r.schema.Type+"."+field+"/"+c.fn] = true
			}
		}
	}
	for _, s := range reg.All() {
		for _, f := range s.Encrypted().Fields {
			fn := fnAEAD
			if f.PII != nil && f.PII.Deterministic {
				fn = fnDeterministic
			}
			if f.PII != nil && !checked[s.Type+"."+f.Name+"/"+fn] {
				t.Fatalf("no non-null value of %s.%s was checked", s.Type, f.Name)
			}
		}
	}

	// The evaluation is sensitive to the SQL: a literal naming another
	// field, or the other decrypt function, gives NULL instead of the value.
	pb, _ := reg.Lookup("PlaybackEvent", 1)
	ip := views[pb]["ip_address"]
	var alice viewRow
	for _, r := range rows {
		if r.schema == pb && r.user == "alice" {
			alice = r
			break
		}
	}
	wrong := ip
	wrong.aadLit = "PlaybackEvent.device_id|"
	if v := eval(t, wrong, kt, alice.subject, alice.cts["ip_address"]); v != nil {
		t.Fatalf("wrong AAD literal decrypted: %v", v)
	}
	wrong = ip
	wrong.fn, wrong.join.det = fnDeterministic, true
	if v := eval(t, wrong, kt, alice.subject, alice.cts["ip_address"]); v != nil {
		t.Fatalf("wrong function decrypted: %v", v)
	}

	// Shred alice; re-export: her rows are gone, her columns NULL; bob's
	// still decrypt.
	keys.DeleteUser("alice")
	exported, gone, err = KeyRows(ctx, keys, uses, subs)
	if err != nil || len(gone) != 1 || gone[0] != subjects["alice"] {
		t.Fatalf("after delete: gone %v, err %v", gone, err)
	}
	for _, r := range exported {
		if r.Subject == subjects["alice"] {
			t.Fatal("a shredded subject still has a keys row")
		}
	}
	kt = loadKeysTable(t, NDJSON(exported))
	for _, r := range rows {
		for field, c := range views[r.schema] {
			got := eval(t, c, kt, r.subject, r.cts[field])
			if r.user == "alice" && got != nil {
				t.Fatalf("%s.%s of shredded alice still decrypts", r.schema.Type, field)
			}
			if want := expected(t, r.schema, field, r.payload); r.user == "bob" && fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("%s.%s of bob: %v, want %v", r.schema.Type, field, got, want)
			}
		}
	}
	_ = rotated
}
