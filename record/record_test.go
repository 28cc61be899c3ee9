package record

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"

	"github.com/lockstream/lockstream/fieldcrypt"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/schemas"
)

// testKeys is a deterministic in-memory key source: enough to exercise the
// record layer without a key service (the keyclient tests cover the real one).
type testKeys struct {
	deleted map[string]bool            // subject
	revoked map[string]map[string]bool // subject -> category
	calls   int
}

func subjectOf(user string) string {
	h := sha256.Sum256([]byte("subject:" + user))
	return "s_" + hex.EncodeToString(h[:8])
}

func (k *testKeys) key(subject, cat string, v int) fieldcrypt.CategoryKey {
	b, _ := hkdf.Key(sha256.New, []byte("test root"), nil, fmt.Sprintf("%s|%s|%d", subject, cat, v), 32)
	return fieldcrypt.CategoryKey{Subject: subject, Category: cat, Version: v, Secret: fieldcrypt.NewSecret(b)}
}

func (k *testKeys) answer(uid, sub string, cats []string) keyclient.UserKeys {
	uk := keyclient.UserKeys{UserID: uid, Subject: sub}
	if k.deleted[sub] {
		uk.Err = keyclient.ErrUserDeleted
		return uk
	}
	for _, c := range cats {
		if k.revoked[sub][c] {
			uk.Revoked = append(uk.Revoked, c)
			continue
		}
		uk.Keys = append(uk.Keys, k.key(sub, c, 1))
	}
	return uk
}

func (k *testKeys) ForEncrypt(_ context.Context, users, cats []string) ([]keyclient.UserKeys, error) {
	k.calls++
	out := make([]keyclient.UserKeys, len(users))
	for i, u := range users {
		out[i] = k.answer(u, subjectOf(u), cats)
	}
	return out, nil
}

func (k *testKeys) ForDecrypt(_ context.Context, subs, cats []string) ([]keyclient.UserKeys, error) {
	k.calls++
	out := make([]keyclient.UserKeys, len(subs))
	for i, s := range subs {
		out[i] = k.answer("", s, cats)
	}
	return out, nil
}

var _ keyclient.Keys = (*testKeys)(nil)

var t0 = time.Date(2026, 11, 23, 6, 12, 0, 123e6, time.UTC)

func playback(id, user, ip string) Message {
	return Message{
		ID: "m-" + id, PublishTime: t0,
		Attributes: map[string]string{AttrEventType: "PlaybackEvent", AttrSchemaVersion: "1"},
		Data: []byte(fmt.Sprintf(`{"event_id":%q,"user_id":%q,"timestamp":"2026-11-23T06:11:59.000Z","track_id":"t1","ms_played":1234,"country":"SE","ip_address":%q,"device_id":"dev-%s"}`,
			id, user, ip, id)),
	}
}

func account(id, user, email string, birth string) Message {
	return Message{
		ID: "m-" + id, PublishTime: t0,
		Attributes: map[string]string{AttrEventType: "AccountUpdate", AttrSchemaVersion: "1"},
		Data: []byte(fmt.Sprintf(`{"event_id":%q,"user_id":%q,"timestamp":1795414320000,"email":%q,"display_name":"Name %s","birth_year":%s}`,
			id, user, email, id, birth)),
	}
}

func newAnon(t testing.TB, k Keys) *Anonymizer {
	t.Helper()
	reg, err := schemas.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	a, err := NewAnonymizer(reg, k, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAnonymizeRoundTrip(t *testing.T) {
	keys := &testKeys{}
	a := newAnon(t, keys)
	msgs := []Message{
		playback("e1", "alice", "203.0.113.7"),
		account("e2", "alice", "alice@example.com", "1990"),
		account("e3", "bob", "bob@example.com", "null"),
	}
	out, err := a.Anonymize(context.Background(), msgs)
	if err != nil {
		t.Fatal(err)
	}
	if keys.calls != 1 {
		t.Fatalf("key calls = %d, want 1 per batch", keys.calls)
	}
	reg, _ := schemas.Embedded()
	for i, o := range out {
		if o.Reject != nil {
			t.Fatalf("message %d rejected: %+v", i, o.Reject)
		}
		for _, pii := range []string{"alice", "203.0.113.7", "alice@example.com", "bob@example.com", "1990", "Name e2"} {
			if bytes.Contains(o.Record, []byte(pii)) {
				t.Fatalf("record %d contains plaintext %q", i, pii)
			}
		}
		s, _ := reg.Lookup(o.EventType, o.Version)
		// Standard Avro: goavro decodes every record we encode.
		native, rest, err := s.Encrypted().Codec.NativeFromBinary(o.Record)
		if err != nil || len(rest) != 0 {
			t.Fatalf("goavro cannot decode record %d: %v (rest %d)", i, err, len(rest))
		}
		m := native.(map[string]any)
		if m["_subject"] != subjectOf(map[int]string{0: "alice", 1: "alice", 2: "bob"}[i]) {
			t.Fatalf("record %d: _subject = %v", i, m["_subject"])
		}
		if _, ok := m["user_id"]; ok {
			t.Fatalf("record %d keeps user_id", i)
		}
		if o.Hour != time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC) || o.EventID != strings.TrimPrefix(msgs[i].ID, "m-") {
			t.Fatalf("record %d: hour %v event id %q", i, o.Hour, o.EventID)
		}
	}
	// Decrypt back.
	d := NewDecryptor(keys, nil)
	pb, _ := reg.Lookup("PlaybackEvent", 1)
	plain, errs, err := d.Decrypt(context.Background(), pb, [][]byte{out[0].Record})
	if err != nil || errs[0] != nil {
		t.Fatal(err, errs)
	}
	got := map[string]any{}
	for i, n := range plain[0].Names {
		got[n] = plain[0].Values[i]
	}
	if got["ip_address"] != "203.0.113.7" || got["device_id"] != "dev-e1" || got["ms_played"] != int64(1234) || got["track_id"] != "t1" || plain[0].State() != StateOK {
		t.Fatalf("decrypted playback = %v (state %s)", got, plain[0].State())
	}
	au, _ := reg.Lookup("AccountUpdate", 1)
	plain, _, err = d.Decrypt(context.Background(), au, [][]byte{out[1].Record, out[2].Record})
	if err != nil {
		t.Fatal(err)
	}
	if v := plain[0].Values[indexOf(plain[0].Names, "birth_year")]; v != int64(1990) {
		t.Fatalf("birth_year = %v", v)
	}
	if v := plain[1].Values[indexOf(plain[1].Names, "birth_year")]; v != nil {
		t.Fatalf("null birth_year came back as %v", v)
	}
	if v := plain[1].Values[indexOf(plain[1].Names, "email")]; v != "bob@example.com" {
		t.Fatalf("email = %v", v)
	}
	js, err := json.Marshal(&plain[0])
	if err != nil || !strings.Contains(string(js), `"email":"alice@example.com"`) {
		t.Fatalf("json %s %v", js, err)
	}
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

func TestShredAndRevoke(t *testing.T) {
	keys := &testKeys{deleted: map[string]bool{}, revoked: map[string]map[string]bool{}}
	a := newAnon(t, keys)
	reg, _ := schemas.Embedded()
	au, _ := reg.Lookup("AccountUpdate", 1)
	out, err := a.Anonymize(context.Background(), []Message{account("e1", "alice", "alice@example.com", "1990"), account("e2", "bob", "bob@example.com", "1985")})
	if err != nil {
		t.Fatal(err)
	}
	keys.deleted[subjectOf("alice")] = true
	keys.revoked[subjectOf("bob")] = map[string]bool{"contact": true}
	plain, _, err := NewDecryptor(keys, nil).Decrypt(context.Background(), au, [][]byte{out[0].Record, out[1].Record})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"email", "display_name", "birth_year"} {
		if v := plain[0].Values[indexOf(plain[0].Names, f)]; v != nil {
			t.Fatalf("deleted user's %s decrypted: %v", f, v)
		}
	}
	if plain[0].State() != StateShredded {
		t.Fatalf("state %s", plain[0].State())
	}
	if v := plain[1].Values[indexOf(plain[1].Names, "email")]; v != nil {
		t.Fatalf("revoked category decrypted: %v", v)
	}
	if v := plain[1].Values[indexOf(plain[1].Names, "display_name")]; v != "Name e2" {
		t.Fatalf("other category lost: %v", v)
	}
	// New events: deleted user is rejected without payload; revoked field is null.
	out, err = a.Anonymize(context.Background(), []Message{account("e3", "alice", "alice@example.com", "1990"), account("e4", "bob", "bob@example.com", "1985")})
	if err != nil {
		t.Fatal(err)
	}
	if r := out[0].Reject; r == nil || r.Reason != ReasonUserDeleted || r.PayloadCiphertext != nil {
		t.Fatalf("late event of deleted user: %+v", out[0])
	}
	native, _, _ := au.Encrypted().Codec.NativeFromBinary(out[1].Record)
	if native.(map[string]any)["email"] != nil {
		t.Fatal("revoked category written")
	}
}

func TestRejections(t *testing.T) {
	keys := &testKeys{}
	a := newAnon(t, keys)
	a.max = 4096
	good := playback("ok", "carol", "198.51.100.9")
	mk := func(attrs map[string]string, data string) Message {
		return Message{ID: "m-" + data[:min(4, len(data))], PublishTime: t0, Attributes: attrs, Data: []byte(data)}
	}
	pb := map[string]string{AttrEventType: "PlaybackEvent", AttrSchemaVersion: "1"}
	cases := []struct {
		msg    Message
		reason string
		sealed bool
	}{
		{mk(pb, `{"event_id":"x","user_id":"carol","timestamp":1,"track_id":"t","ms_played":"SECRET-LONG","country":"SE","ip_address":"10.9.8.7","device_id":"d"}`), schemas.ReasonWrongType, true},
		{mk(pb, `{not json SECRET`), schemas.ReasonMalformedJSON, true},
		{mk(map[string]string{AttrEventType: "Nope", AttrSchemaVersion: "1"}, `{"user_id":"carol"}`), schemas.ReasonUnknownEventType, true},
		{mk(map[string]string{AttrEventType: "PlaybackEvent", AttrSchemaVersion: "9"}, `{"user_id":"carol"}`), schemas.ReasonUnknownVersion, true},
		{mk(pb, `{"pad":"`+strings.Repeat("S", 5000)+`"}`), schemas.ReasonOversized, false},
		{mk(nil, `{}`), schemas.ReasonUnknownEventType, true},
	}
	msgs := []Message{good}
	for _, c := range cases {
		msgs = append(msgs, c.msg)
	}
	out, err := a.Anonymize(context.Background(), msgs)
	if err != nil {
		t.Fatal(err)
	}
	if out[0].Reject != nil {
		t.Fatal("good message rejected")
	}
	for i, c := range cases {
		r := out[i+1].Reject
		if r == nil || r.Reason != c.reason {
			t.Fatalf("case %d: reason %+v, want %s", i, r, c.reason)
		}
		if (r.PayloadCiphertext != nil) != c.sealed {
			t.Fatalf("case %d: sealed=%v, want %v", i, r.PayloadCiphertext != nil, c.sealed)
		}
		js, _ := json.Marshal(r)
		for _, pii := range []string{"SECRET", "carol", "10.9.8.7"} {
			if bytes.Contains(js, []byte(pii)) {
				t.Fatalf("case %d: dead-letter record contains %q: %s", i, pii, js)
			}
		}
		if r.MessageID != c.msg.ID {
			t.Fatalf("case %d: message id %q", i, r.MessageID)
		}
	}
	// The sealed payload is replayable by whoever holds the payload key.
	r := out[1].Reject
	k := keys.key(r.Subject, PayloadCategory, 1)
	c, _ := fieldcrypt.NewCipher(k)
	pt, err := c.Decrypt(r.PayloadCiphertext, []byte(r.PayloadAAD), false)
	if err != nil || !bytes.Equal(pt, cases[0].msg.Data) {
		t.Fatalf("sealed payload does not open: %v", err)
	}
	if r.Subject != subjectOf("carol") {
		t.Fatal("payload not sealed under the user's key")
	}
}

func TestTamperedAndMovedCiphertexts(t *testing.T) {
	keys := &testKeys{}
	a := newAnon(t, keys)
	reg, _ := schemas.Embedded()
	au, _ := reg.Lookup("AccountUpdate", 1)
	out, _ := a.Anonymize(context.Background(), []Message{account("e1", "alice", "alice@example.com", "1990"), account("e2", "bob", "bob@example.com", "1991")})
	codec := au.Encrypted().Codec
	decode := func(b []byte) map[string]any { n, _, _ := codec.NativeFromBinary(b); return n.(map[string]any) }
	encode := func(m map[string]any) []byte {
		b, err := codec.BinaryFromNative(nil, m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	unwrap := func(v any) []byte { return v.(map[string]any)["bytes"].([]byte) }

	alice, bob := decode(out[0].Record), decode(out[1].Record)
	// 1. Flip a byte of alice's email ciphertext.
	tampered := decode(out[0].Record)
	ct := bytes.Clone(unwrap(tampered["email"]))
	ct[len(ct)-3] ^= 1
	tampered["email"] = goavro.Union("bytes", ct)
	// 2. Move bob's email into alice's record (other subject).
	moved := decode(out[0].Record)
	moved["email"] = bob["email"]
	// 3. Move alice's display_name ciphertext into her email field (other field).
	swapped := decode(out[0].Record)
	swapped["email"] = alice["display_name"]
	plain, errs, err := NewDecryptor(keys, nil).Decrypt(context.Background(), au, [][]byte{encode(tampered), encode(moved), encode(swapped), {0xff, 0xff}})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if plain[i].State() != StateCorrupt || len(plain[i].Corrupt) != 1 || plain[i].Corrupt[0] != "email" {
			t.Fatalf("case %d: state %s corrupt %v", i, plain[i].State(), plain[i].Corrupt)
		}
		if v := plain[i].Values[indexOf(plain[i].Names, "email")]; v != nil {
			t.Fatalf("case %d: corrupt field output %v", i, v)
		}
		if v := plain[i].Values[indexOf(plain[i].Names, "display_name")]; v != "Name e1" {
			t.Fatalf("case %d: intact field lost: %v", i, v)
		}
	}
	if errs[3] == nil {
		t.Fatal("garbage record decoded")
	}
}

func TestOCFInterop(t *testing.T) {
	keys := &testKeys{}
	a := newAnon(t, keys)
	reg, _ := schemas.Embedded()
	pb, _ := reg.Lookup("PlaybackEvent", 1)
	var msgs []Message
	for i := range 3000 {
		msgs = append(msgs, playback(fmt.Sprint(i), fmt.Sprint("user", i%50), "192.0.2.1"))
	}
	out, err := a.Anonymize(context.Background(), msgs)
	if err != nil {
		t.Fatal(err)
	}
	write := func(codec string) []byte {
		var buf bytes.Buffer
		w, err := NewOCFWriter(&buf, pb.Encrypted().JSON, SyncMarker("f1"), codec)
		if err != nil {
			t.Fatal(err)
		}
		w.limit = 8 << 10 // several blocks
		for _, o := range out {
			if err := w.Append(o.Record); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	reused := &OCFReader{} // Reset from file to file, codec to codec
	for _, codec := range []string{CodecNull, CodecDeflate, CodecSnappy} {
		file := write(codec)
		if again := write(codec); !bytes.Equal(file, again) {
			t.Fatalf("%s: same records gave different file bytes", codec)
		}
		// goavro reads our files.
		recs := goavroRead(t, file)
		for n, rec := range recs {
			if rec["event_id"] != fmt.Sprint(n) {
				t.Fatalf("%s: record %d out of order", codec, n)
			}
		}
		if len(recs) != len(out) {
			t.Fatalf("%s: goavro read %d of %d", codec, len(recs), len(out))
		}
		// Our reader gives back the exact record bytes; with SkipInto, the
		// columns it leaves are those of the record Next returned.
		lay, _ := NewLayout(pb)
		cols := make([]Column, len(lay.Enc.Fields))
		into, err := lay.SkipInto(cols)
		if err != nil {
			t.Fatal(err)
		}
		want := make([]Column, len(lay.Enc.Fields))
		for _, rd := range []struct {
			skip    func([]byte) (int, error)
			decodes bool
			reuse   bool
		}{{lay.Skip(), false, false}, {into, true, false}, {into, true, true}} {
			or, err := NewOCFReader(bytes.NewReader(file), rd.skip)
			if rd.reuse {
				or, err = reused, reused.Reset(bytes.NewReader(file), rd.skip)
			}
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; ; i++ {
				rec, err := or.Next()
				if err == io.EOF {
					if i != len(out) {
						t.Fatalf("read %d of %d", i, len(out))
					}
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(rec, out[i].Record) {
					t.Fatalf("%s: record %d differs", codec, i)
				}
				if !rd.decodes {
					continue
				}
				if n, err := DecodeColumns(lay.Enc, rec, want); err != nil || n != len(rec) {
					t.Fatalf("%s: record %d: decoded %d of %d bytes: %v", codec, i, n, len(rec), err)
				}
				if !reflect.DeepEqual(cols, want) {
					t.Fatalf("%s: record %d: SkipInto left the columns of event %q", codec, i, cols[lay.Dedupe].Bytes)
				}
			}
		}
		if _, err := lay.SkipInto(cols[:1]); err == nil {
			t.Fatal("SkipInto took fewer columns than fields")
		}
		// A truncated file is an error, not a panic.
		or, _ := NewOCFReader(bytes.NewReader(file[:len(file)-7]), lay.Skip())
		var rerr error
		for rerr == nil {
			_, rerr = or.Next()
		}
		if rerr == io.EOF {
			t.Fatalf("%s: truncated file read cleanly", codec)
		}
	}
	// Our reader reads goavro's files too, with either compression.
	for _, compression := range []string{"deflate", "snappy"} {
		var buf bytes.Buffer
		gw, err := goavro.NewOCFWriter(goavro.OCFConfig{W: &buf, Codec: pb.Encrypted().Codec, CompressionName: compression})
		if err != nil {
			t.Fatal(err)
		}
		native, _, _ := pb.Encrypted().Codec.NativeFromBinary(out[0].Record)
		if err := gw.Append([]any{native, native}); err != nil {
			t.Fatal(err)
		}
		lay, _ := NewLayout(pb)
		or, err := NewOCFReader(&buf, lay.Skip())
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 2; i++ {
			rec, err := or.Next()
			if err != nil || !bytes.Equal(rec, out[0].Record) {
				t.Fatalf("goavro %s file record %d: %v", compression, i, err)
			}
		}
	}
	// A snappy block whose checksum does not match is corrupt.
	file := write(CodecSnappy)
	file[len(file)-16-1] ^= 0x01 // the last byte of the last block's CRC
	lay, _ := NewLayout(pb)
	or, _ := NewOCFReader(bytes.NewReader(file), lay.Skip())
	var rerr error
	for rerr == nil {
		_, rerr = or.Next()
	}
	if !errors.Is(rerr, ErrCorrupt) {
		t.Fatalf("snappy block with a wrong checksum: %v", rerr)
	}
}

func TestParseLine(t *testing.T) {
	m := playback("e1", "alice", "203.0.113.7")
	line, err := m.MarshalLine()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseLine(line)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != m.ID || !got.PublishTime.Equal(m.PublishTime) || !bytes.Equal(got.Data, m.Data) || got.EventType() != "PlaybackEvent" || got.SchemaVersion() != 1 {
		t.Fatalf("round trip: %+v", got)
	}
	for _, bad := range []string{``, `{`, `[]`, `{"id":"x","publish_time":"yesterday","data":"{}"}`, `{"publish_time":"2026-11-23T06:12:00Z","data":"{}"}`, `{"id":"x","publish_time":"2026-11-23T06:12:00Z"}`, `{"id":"x","publish_time":"2026-11-23T06:12:00Z","data":"SECRET-PII"`} {
		_, err := ParseLine([]byte(bad))
		if err == nil {
			t.Fatalf("accepted %q", bad)
		}
		if strings.Contains(err.Error(), "SECRET") {
			t.Fatalf("error quotes the line: %v", err)
		}
	}
}

// BenchmarkCore is the per-event core: decode the JSON payload, validate,
// encrypt the PII fields, encode the encrypted Avro record, with cached keys
// (the key source answers from memory; one lookup per batch of 500).
func BenchmarkCore(b *testing.B) {
	for _, typ := range []string{"PlaybackEvent", "AccountUpdate"} {
		b.Run(typ, func(b *testing.B) {
			keys := &testKeys{}
			a := newAnon(b, keys)
			const batch = 500
			msgs := make([]Message, batch)
			for i := range msgs {
				if typ == "PlaybackEvent" {
					msgs[i] = playback(fmt.Sprint(i), fmt.Sprint("user", i%100), "203.0.113.7")
				} else {
					msgs[i] = account(fmt.Sprint(i), fmt.Sprint("user", i%100), "someone@example.com", "1990")
				}
			}
			ctx := context.Background()
			if _, err := a.Anonymize(ctx, msgs); err != nil { // warm the cipher cache
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			n := 0
			for b.Loop() {
				out, err := a.Anonymize(ctx, msgs)
				if err != nil || out[0].Reject != nil {
					b.Fatal(err, out[0].Reject)
				}
				n += batch
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/event")
		})
	}
}

// TestDeterministicDeviceRef: PlaybackEvent v3's device_ref is sealed with
// AES-SIV: equal references of one user give byte-equal ciphertexts (joins
// and distinct counts without decrypting), other users' or other
// references differ, and each decrypts back; device_id (AES-GCM) never
// repeats.
func TestDeterministicDeviceRef(t *testing.T) {
	keys := &testKeys{}
	a := newAnon(t, keys)
	v3 := func(id, user, ref string) Message {
		m := playback(id, user, "203.0.113.7")
		m.Attributes = map[string]string{AttrEventType: "PlaybackEvent", AttrSchemaVersion: "3"}
		m.Data = []byte(strings.TrimSuffix(string(m.Data), "}") + fmt.Sprintf(`,"device_id":"same","device_ref":%q}`, ref))
		m.Data = []byte(strings.Replace(string(m.Data), fmt.Sprintf(`"device_id":"dev-%s",`, id), "", 1))
		return m
	}
	msgs := []Message{v3("e1", "alice", "ref-1"), v3("e2", "alice", "ref-1"), v3("e3", "alice", "ref-2"), v3("e4", "bob", "ref-1")}
	out, err := a.Anonymize(context.Background(), msgs)
	if err != nil {
		t.Fatal(err)
	}
	reg, _ := schemas.Embedded()
	s, err := reg.Lookup("PlaybackEvent", 3)
	if err != nil {
		t.Fatal(err)
	}
	field := func(i int, name string) []byte {
		if out[i].Reject != nil {
			t.Fatalf("message %d rejected: %+v", i, out[i].Reject)
		}
		native, _, err := s.Encrypted().Codec.NativeFromBinary(out[i].Record)
		if err != nil {
			t.Fatal(err)
		}
		v := native.(map[string]any)[name]
		u, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("%s of record %d is %v", name, i, v)
		}
		return u["bytes"].([]byte)
	}
	if !bytes.Equal(field(0, "device_ref"), field(1, "device_ref")) {
		t.Fatal("one user's equal device references have different ciphertexts")
	}
	if bytes.Equal(field(0, "device_ref"), field(2, "device_ref")) || bytes.Equal(field(0, "device_ref"), field(3, "device_ref")) {
		t.Fatal("another reference, or another user's, has the same ciphertext")
	}
	if bytes.Equal(field(0, "device_id"), field(1, "device_id")) {
		t.Fatal("AES-GCM ciphertexts of equal values repeat")
	}
	plain, errs, err := NewDecryptor(keys, nil).Decrypt(context.Background(), s, [][]byte{out[0].Record, out[3].Record})
	if err != nil || errs[0] != nil || errs[1] != nil {
		t.Fatal(err, errs)
	}
	for i, want := range []string{"ref-1", "ref-1"} {
		if got := plain[i].Values[indexOf(plain[i].Names, "device_ref")]; got != want {
			t.Fatalf("record %d: device_ref decrypts to %v", i, got)
		}
	}
}

// TestAnonymizeAnswersEachUserItsCategories: with a key client, a batch is
// one lookup, sent at once (under a window that would hang the test): one
// fetch from the service for every category of the batch and the payload
// category (its sets of categories are asked for together), one for the
// payload key of its rejection whose user had no other message, and each
// user's answer holds the categories of its own events only. A later
// batch rejecting a message of a user fetched before fetches nothing: its
// payload key came with the user's keys.
func TestAnonymizeAnswersEachUserItsCategories(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f := keyclient.NewFake()
	kc, err := keyclient.New(f, keyclient.Options{Scope: "test", BatchWindow: time.Hour, BatchAlone: 4})
	if err != nil {
		t.Fatal(err)
	}
	a := newAnon(t, kc)
	msgs := []Message{
		playback("e1", "alice", "203.0.113.7"),
		account("e2", "alice", "alice@example.com", "1990"),
		account("e3", "bob", "bob@example.com", "null"),
		playback("e4", "carol", "198.51.100.1"),
		{ID: "m-bad", PublishTime: t0, Attributes: map[string]string{AttrEventType: "PlaybackEvent", AttrSchemaVersion: "1"}, Data: []byte(`{"user_id":"dora","oops":true}`)},
	}
	out, err := a.Anonymize(ctx, msgs)
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range out[:4] {
		if o.Reject != nil || o.Record == nil {
			t.Fatalf("message %d: %+v", i, o.Reject)
		}
	}
	if r := out[4].Reject; r == nil || r.PayloadCiphertext == nil || r.Subject != f.SubjectOf("dora") {
		t.Fatalf("rejection not sealed under dora's payload key: %+v", r)
	}
	if f.Calls() != 2 || f.IDs() != 4 {
		t.Fatalf("%d fetches of %d ids for one batch, want 2 of 4 (its 3 users, then the payload key's owner)", f.Calls(), f.IDs())
	}
	categories := func(uk *keyclient.UserKeys) []string {
		var cs []string
		for _, k := range uk.Keys {
			cs = append(cs, k.Category)
		}
		return cs
	}
	for i, want := range map[string][]string{
		"alice": {"contact", "demographics", "device", "location", "profile"},
		"bob":   {"contact", "demographics", "profile"},
		"carol": {"device", "location"},
	} {
		u := slices.Index([]string{"alice", "bob", "carol"}, i)
		if got := categories(a.answered[u]); !slices.Equal(got, want) {
			t.Errorf("%s answered %v, want %v", i, got, want)
		}
	}
	later := []Message{
		playback("e5", "carol", "198.51.100.2"),
		{ID: "m-bad-2", PublishTime: t0, Attributes: map[string]string{AttrEventType: "PlaybackEvent", AttrSchemaVersion: "1"}, Data: []byte(`{"user_id":"bob","oops":true}`)},
	}
	if out, err = a.Anonymize(ctx, later); err != nil {
		t.Fatal(err)
	}
	if r := out[1].Reject; r == nil || r.PayloadCiphertext == nil || r.Subject != f.SubjectOf("bob") {
		t.Fatalf("rejection not sealed under bob's payload key: %+v", r)
	}
	if f.Calls() != 2 {
		t.Fatalf("%d fetches after a batch of known users with a rejection, want still 2", f.Calls())
	}
}

// Snappy blocks as big as the pipelines write, of records like theirs
// (random bytes, as ciphertexts are, between repeated text), are read by
// goavro (github.com/golang/snappy): the encoder's output is Snappy's
// format.
func TestSnappyBlocksReadByGoavro(t *testing.T) {
	schema := []byte(`{"type":"record","name":"R","fields":[{"name":"s","type":"string"},{"name":"b","type":"bytes"}]}`)
	codec, err := goavro.NewCodec(string(schema))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var want [][]byte
	var buf bytes.Buffer
	w, err := NewOCFWriter(&buf, schema, SyncMarker("snappy"), CodecSnappy)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20000 {
		b := make([]byte, rng.IntN(120))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		rec, err := codec.BinaryFromNative(nil, map[string]any{"s": fmt.Sprintf("PlaybackEvent/v3 listener %d", i%37), "b": b})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, b)
		if err := w.Append(rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	recs := goavroRead(t, buf.Bytes())
	for n, rec := range recs {
		if !bytes.Equal(rec["b"].([]byte), want[n]) {
			t.Fatalf("record %d differs", n)
		}
	}
	if len(recs) != len(want) {
		t.Fatalf("goavro read %d of %d records", len(recs), len(want))
	}
}

// goavroRead reads every record of an OCF file with goavro.
func goavroRead(t *testing.T, file []byte) []map[string]any {
	t.Helper()
	r, err := goavro.NewOCFReader(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	var recs []map[string]any
	for r.Scan() {
		rec, err := r.Read()
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec.(map[string]any))
	}
	return recs
}

// TestCarriedCiphersAreCounted: ciphers answered from the keys a key
// client derived are counted in the shared cipher cache's hits, one per
// field sealed (Anonymizer) or opened (Decryptor), by the time the call
// returns; nothing is derived or cached by the cipher cache itself.
func TestCarriedCiphersAreCounted(t *testing.T) {
	ctx := context.Background()
	kc, err := keyclient.New(keyclient.NewFake(), keyclient.Options{Scope: "t", BatchWindow: -1})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := schemas.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	ciphers := fieldcrypt.NewCache(8, 0)
	a, err := NewAnonymizer(reg, kc, Options{Ciphers: ciphers})
	if err != nil {
		t.Fatal(err)
	}
	msgs := []Message{
		playback("e1", "alice", "203.0.113.7"),
		account("e2", "alice", "alice@example.com", "1990"),
		account("e3", "bob", "bob@example.com", "null"),
	}
	out, err := a.Anonymize(ctx, msgs)
	if err != nil {
		t.Fatal(err)
	}
	sealed := map[*schemas.Schema]int{}
	recs := map[*schemas.Schema][][]byte{}
	for i, o := range out {
		if o.Reject != nil {
			t.Fatalf("message %d rejected: %+v", i, o.Reject)
		}
		s, _ := reg.Lookup(o.EventType, o.Version)
		native, _, err := s.Encrypted().Codec.NativeFromBinary(o.Record)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range s.PIIFields() {
			if native.(map[string]any)[f.Name] != nil {
				sealed[s]++
			}
		}
		recs[s] = append(recs[s], o.Record)
	}
	total := 0
	for _, n := range sealed {
		total += n
	}
	if hits, misses := ciphers.Stats(); total == 0 || hits != uint64(total) || misses != 0 || ciphers.Len() != 0 {
		t.Fatalf("after sealing %d fields: %d hits, %d misses, %d cached; want %d hits, nothing derived or cached", total, hits, misses, ciphers.Len(), total)
	}
	d := NewDecryptor(kc, ciphers)
	for s, rs := range recs {
		before, _ := ciphers.Stats()
		var tally Tally
		if _, err := d.AppendJSONLines(ctx, s, nil, rs, &tally); err != nil {
			t.Fatal(err)
		}
		if hits, _ := ciphers.Stats(); hits-before != uint64(sealed[s]) || tally.ShreddedFields+tally.CorruptFields != 0 {
			t.Fatalf("%s: %d ciphers counted for %d fields opened (tally %+v)", s, hits-before, sealed[s], tally)
		}
		// Decrypt (view's Avro output) counts as AppendJSONLines does.
		before, _ = ciphers.Stats()
		if _, errs, err := d.Decrypt(ctx, s, rs); err != nil || errors.Join(errs...) != nil {
			t.Fatal(err, errs)
		}
		if hits, _ := ciphers.Stats(); hits-before != uint64(sealed[s]) {
			t.Fatalf("%s: Decrypt counted %d ciphers for %d fields opened", s, hits-before, sealed[s])
		}
	}
}
