package record

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/linkedin/goavro/v2"

	"github.com/lockstream/lockstream/schemas"
)

// TestAppendJSONLinesMatchesDecrypt: AppendJSONLines writes, for every
// readable record, exactly the line Decrypt + Plain.AppendJSON make of it,
// and counts what Decrypt's results show (shredded and corrupt records and
// fields, unreadable records), over three schemas (AES-SIV included),
// deleted users, revoked categories, tampered and moved ciphertexts, null
// PII, strings that need escaping, and records that are not Avro; one
// Decryptor is reused across batches and schemas, as a view's worker does.
func TestAppendJSONLinesMatchesDecrypt(t *testing.T) {
	keys := &testKeys{revoked: map[string]map[string]bool{subjectOf("u6"): {"location": true}}} // null at ingest
	a := newAnon(t, keys)
	reg, err := schemas.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 9))
	odd := []string{"plain", `quote " back \ slash`, "<b>&amp;</b>", "tab\tnew\nline\x01", "héllo wörld ✓", "line\u2028sep\u2029", "bad \xff utf8", ""}
	pick := func() string { return odd[rng.IntN(len(odd))] }
	q := func(s string) string { j, _ := json.Marshal(s); return string(j) } // JSON, where %q is Go
	var msgs []Message
	for i := range 300 {
		id, user := fmt.Sprintf("e%d", i), fmt.Sprintf("u%d", rng.IntN(8))
		switch i % 3 {
		case 0:
			m := account(id, user, "x@example.com", fmt.Sprint(1950+rng.IntN(60)))
			m.Data = bytes.Replace(m.Data, []byte(`"x@example.com"`), []byte(q(pick()+"@example.com")), 1)
			m.Data = bytes.Replace(m.Data, []byte(`"display_name":"Name `+id+`"`), []byte(`"display_name":`+q(pick())), 1)
			msgs = append(msgs, m)
		case 1:
			m := playback(id, user, "ip")
			m.Data = bytes.Replace(m.Data, []byte(`"ip"`), []byte(q(pick())), 1)
			msgs = append(msgs, m)
		default:
			m := playback(id, user, "203.0.113.7")
			m.Attributes = map[string]string{AttrEventType: "PlaybackEvent", AttrSchemaVersion: "3"}
			extra := `,"device_name":` + q(pick()) + `,"device_ref":` + q(pick()) + `}`
			if rng.IntN(4) == 0 {
				extra = `,"device_name":null}` // null PII
			}
			m.Data = []byte(strings.TrimSuffix(string(m.Data), "}") + extra)
			msgs = append(msgs, m)
		}
	}
	out, err := a.Anonymize(context.Background(), msgs)
	if err != nil {
		t.Fatal(err)
	}
	// Shredded since: a user, and categories of two others.
	keys.deleted = map[string]bool{subjectOf("u3"): true}
	keys.revoked[subjectOf("u4")] = map[string]bool{"location": true}
	keys.revoked[subjectOf("u5")] = map[string]bool{"device": true, "contact": true}
	batches := map[string][][]byte{}
	var order []string
	for _, o := range out {
		if o.Reject != nil {
			t.Fatalf("%s rejected: %s %s", o.MessageID, o.Reject.Reason, o.Reject.Rule)
		}
		k := fmt.Sprintf("%s/%d", o.EventType, o.Version)
		if _, ok := batches[k]; !ok {
			order = append(order, k)
		}
		batches[k] = append(batches[k], o.Record)
	}
	// Corrupt a few records of each batch: a flipped ciphertext byte, a
	// ciphertext moved from another record, stray bytes, no Avro at all.
	for _, k := range order {
		name, version, _ := strings.Cut(k, "/")
		s, err := reg.Lookup(name, int(version[0]-'0'))
		if err != nil {
			t.Fatal(err)
		}
		recs := batches[k]
		codec := s.Encrypted().Codec
		decode := func(b []byte) map[string]any {
			n, _, err := codec.NativeFromBinary(b)
			if err != nil {
				t.Fatal(err)
			}
			return n.(map[string]any)
		}
		pii := s.PIIFields()[len(s.PIIFields())-1].Name
		for i := 0; i+1 < len(recs); i += 9 {
			m := decode(recs[i])
			u, ok := m[pii].(map[string]any)
			if !ok {
				continue // null
			}
			ct := bytes.Clone(u["bytes"].([]byte))
			if i%2 == 0 {
				ct[len(ct)-1] ^= 0x20
			} else if other, ok := decode(recs[i+1])[pii].(map[string]any); ok {
				ct = other["bytes"].([]byte)
			}
			m[pii] = goavro.Union("bytes", ct)
			if recs[i], err = codec.BinaryFromNative(nil, m); err != nil {
				t.Fatal(err)
			}
		}
		recs[3] = append(bytes.Clone(recs[3]), 0)
		recs[5] = []byte{0xff, 0xff}
	}

	want := Tally{}
	d := NewDecryptor(keys, nil)
	for round := range 2 {
		for _, k := range order {
			name, version, _ := strings.Cut(k, "/")
			s, _ := reg.Lookup(name, int(version[0]-'0'))
			recs := batches[k]
			var exp []byte
			plain, errs, err := NewDecryptor(keys, nil).Decrypt(context.Background(), s, recs)
			if err != nil {
				t.Fatal(err)
			}
			var tw Tally
			for i := range plain {
				if errs[i] != nil {
					tw.Unreadable++
					continue
				}
				tw.Add(&plain[i])
				line, err := plain[i].AppendJSON(exp)
				if err != nil {
					t.Fatal(err)
				}
				exp = append(line, '\n')
			}
			var got Tally
			// In slices of 7, appended to what is there, each counted
			// apart and added up (as view's lanes count).
			lines := []byte("keep\n")
			for rest := recs; len(rest) > 0; rest = rest[min(7, len(rest)):] {
				var part Tally
				if lines, err = d.AppendJSONLines(context.Background(), s, lines, rest[:min(7, len(rest))], &part); err != nil {
					t.Fatal(err)
				}
				got.AddTally(part)
			}
			if !bytes.Equal(lines, append([]byte("keep\n"), exp...)) {
				gl, wl := strings.Split(string(lines[5:]), "\n"), strings.Split(string(exp), "\n")
				for i := range min(len(gl), len(wl)) {
					if gl[i] != wl[i] {
						t.Fatalf("round %d, %s, line %d:\n got %s\nwant %s", round, k, i, gl[i], wl[i])
					}
				}
				t.Fatalf("round %d, %s: %d lines, want %d", round, k, len(gl), len(wl))
			}
			if got != tw {
				t.Fatalf("round %d, %s: tally %+v, want %+v", round, k, got, tw)
			}
			if round == 0 {
				want.AddTally(tw)
			}
		}
	}
	// The cases the test is about did occur.
	if want.Shredded == 0 || want.Corrupt < 6 || want.Unreadable != 6 || want.Records < 250 {
		t.Fatalf("premise: %+v", want)
	}
}
