package record

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/lockstream/lockstream/fieldcrypt"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/schemas"
)

// Canaries: a personal value in an attribute, and an attribute whose name
// is itself personal.
const (
	canaryValue = "canary.attr.value@example.com"
	canaryName  = "canary-attr-name-alice"
)

func newDeadLetterAnon(t *testing.T, keys Keys, scope string) *Anonymizer {
	t.Helper()
	reg, err := schemas.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	a, err := NewAnonymizer(reg, keys, Options{MaxPayload: 4096, DeadLetterScope: scope})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// overFake runs test with f itself as the key source (rejections' payload
// keys asked in a lookup of their own) and with a key client over f (asked
// in the batch's one lookup, ForEncryptSets).
func overFake(t *testing.T, test func(t *testing.T, f *keyclient.Fake, keys Keys)) {
	t.Run("fake", func(t *testing.T) {
		f := keyclient.NewFake()
		test(t, f, f)
	})
	t.Run("client", func(t *testing.T) {
		f := keyclient.NewFake()
		kc, err := keyclient.New(f, keyclient.Options{Scope: keyclient.FakeScope})
		if err != nil {
			t.Fatal(err)
		}
		test(t, f, kc)
	})
}

// withExtra returns attrs plus two non-contract attributes holding the
// canaries (3 with the contract ones when attrs has both).
func withExtra(attrs map[string]string) map[string]string {
	out := maps.Clone(attrs)
	if out == nil {
		out = map[string]string{}
	}
	out["x-user-email"] = canaryValue
	out[canaryName] = "1"
	return out
}

// openSealed decrypts a dead letter's ciphertext with the payload key of
// its subject, as a replay tool holding that key would.
func openSealed(t *testing.T, f *keyclient.Fake, r *Rejection, ct []byte, aad string) ([]byte, error) {
	t.Helper()
	uks, err := f.ForDecrypt(context.Background(), []string{r.Subject}, []string{PayloadCategory})
	if err != nil || uks[0].Err != nil || len(uks[0].Keys) == 0 {
		t.Fatalf("payload key of %s: %v %+v", r.Subject, err, uks)
	}
	c, err := fieldcrypt.NewCipher(uks[0].Keys[len(uks[0].Keys)-1])
	if err != nil {
		t.Fatal(err)
	}
	return c.Decrypt(ct, []byte(aad), false)
}

func noCanary(t *testing.T, what string, r *Rejection) {
	t.Helper()
	js, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{canaryValue, canaryName, "canary"} {
		if bytes.Contains(js, []byte(c)) {
			t.Fatalf("%s: dead-letter record contains %q: %s", what, c, js)
		}
	}
	for k := range r.Attributes {
		if k != AttrEventType && k != AttrSchemaVersion {
			t.Fatalf("%s: attribute %q in clear", what, k)
		}
	}
}

func TestRejectSealsAttributes(t *testing.T) { overFake(t, testRejectSealsAttributes) }

func testRejectSealsAttributes(t *testing.T, f *keyclient.Fake, keys Keys) {
	ctx := context.Background()
	a := newDeadLetterAnon(t, keys, "root-a")
	pb := map[string]string{AttrEventType: "PlaybackEvent", AttrSchemaVersion: "1"}
	msgs := []Message{
		// wrong type: the payload names its user, sealed under carol's key
		{ID: "m-wrong", PublishTime: t0, Attributes: withExtra(pb),
			Data: []byte(`{"event_id":"x","user_id":"carol","timestamp":1,"track_id":"t","ms_played":"long","country":"SE","ip_address":"10.9.8.7","device_id":"d"}`)},
		// unreadable payload, no contract attributes: the root's dead-letter key
		{ID: "m-bad", PublishTime: t0, Attributes: withExtra(nil), Data: []byte(`{not json`)},
		// oversized: payload dropped unread, attributes under the dead-letter key
		{ID: "m-big", PublishTime: t0, Attributes: withExtra(pb), Data: []byte(`{"user_id":"carol","pad":"` + strings.Repeat("S", 5000) + `"}`)},
	}
	out, err := a.Anonymize(ctx, msgs)
	if err != nil {
		t.Fatal(err)
	}
	deadSubject := f.SubjectOf(DeadLetterUser("root-a", t0))
	wantSubject := []string{f.SubjectOf("carol"), deadSubject, deadSubject}
	if deadSubject == "" || wantSubject[0] == "" {
		t.Fatalf("keychains not created: carol %q, dead letters %q", wantSubject[0], deadSubject)
	}
	wantClear := []map[string]string{pb, nil, pb}
	for i, o := range out {
		r := o.Reject
		if r == nil {
			t.Fatalf("message %d accepted", i)
		}
		noCanary(t, msgs[i].ID, r)
		if !maps.Equal(r.Attributes, wantClear[i]) {
			t.Fatalf("%s: attributes in clear %v, want %v", msgs[i].ID, r.Attributes, wantClear[i])
		}
		if r.Subject != wantSubject[i] || r.AttributesDropped != 0 || r.AttributesCiphertext == nil {
			t.Fatalf("%s: subject %q (want %q), dropped %d, sealed %v", msgs[i].ID, r.Subject, wantSubject[i], r.AttributesDropped, r.AttributesCiphertext != nil)
		}
		if want := "_deadletter_attributes." + msgs[i].ID + "|" + r.Subject; r.AttributesAAD != want {
			t.Fatalf("%s: attributes AAD %q, want %q", msgs[i].ID, r.AttributesAAD, want)
		}
		// The sealed attributes open, with the payload's key, to exactly the
		// non-contract attributes.
		pt, err := openSealed(t, f, r, r.AttributesCiphertext, r.AttributesAAD)
		if err != nil {
			t.Fatalf("%s: sealed attributes do not open: %v", msgs[i].ID, err)
		}
		var got map[string]string
		if err := json.Unmarshal(pt, &got); err != nil {
			t.Fatal(err)
		}
		if want := map[string]string{"x-user-email": canaryValue, canaryName: "1"}; !maps.Equal(got, want) {
			t.Fatalf("%s: sealed attributes %v, want %v", msgs[i].ID, got, want)
		}
		// Not under the payload's AAD: the two cannot be swapped.
		if _, err := openSealed(t, f, r, r.AttributesCiphertext, "_deadletter."+msgs[i].ID+"|"+r.Subject); err == nil {
			t.Fatalf("%s: sealed attributes open with the payload's AAD", msgs[i].ID)
		}
		if i == 2 {
			if r.PayloadCiphertext != nil {
				t.Fatal("oversized payload kept")
			}
			continue
		}
		pt, err = openSealed(t, f, r, r.PayloadCiphertext, r.PayloadAAD)
		if err != nil || !bytes.Equal(pt, msgs[i].Data) {
			t.Fatalf("%s: sealed payload: %v", msgs[i].ID, err)
		}
	}
	// The message's own map is untouched (the writer may share it).
	if len(msgs[0].Attributes) != 4 {
		t.Fatalf("input attributes changed: %d", len(msgs[0].Attributes))
	}
}

func TestRejectDropsWhatNothingSeals(t *testing.T) { overFake(t, testRejectDropsWhatNothingSeals) }

func testRejectDropsWhatNothingSeals(t *testing.T, f *keyclient.Fake, keys Keys) {
	ctx := context.Background()
	a := newDeadLetterAnon(t, keys, "root-a")
	pb := map[string]string{AttrEventType: "PlaybackEvent", AttrSchemaVersion: "1"}
	// dave is deleted; erin revoked her "payload" category.
	if _, err := f.ForEncrypt(ctx, []string{"dave", "erin"}, []string{PayloadCategory}); err != nil {
		t.Fatal(err)
	}
	f.DeleteUser("dave")
	f.Revoke("erin", PayloadCategory)
	deleted := playback("d1", "dave", "198.51.100.1")
	deleted.Attributes = withExtra(deleted.Attributes)
	revoked := Message{ID: "m-rev", PublishTime: t0, Attributes: withExtra(pb), Data: []byte(`{"user_id":"erin","oops":true}`)}
	onlyContract := Message{ID: "m-plain", PublishTime: t0, Attributes: pb, Data: []byte(`{"user_id":"erin","oops":true}`)}
	out, err := a.Anonymize(ctx, []Message{deleted, revoked, onlyContract})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []struct {
		reason  string
		dropped int
	}{{ReasonUserDeleted, 2}, {schemas.ReasonUnknownField, 2}, {schemas.ReasonUnknownField, 0}} {
		r := out[i].Reject
		if r == nil || r.Reason != want.reason {
			t.Fatalf("message %d: %+v, want reason %s", i, r, want.reason)
		}
		noCanary(t, r.MessageID, r)
		if r.AttributesDropped != want.dropped || r.AttributesCiphertext != nil || r.PayloadCiphertext != nil || !maps.Equal(r.Attributes, pb) {
			t.Fatalf("message %d: dropped %d (want %d), sealed attributes %v, payload %v, clear %v",
				i, r.AttributesDropped, want.dropped, r.AttributesCiphertext != nil, r.PayloadCiphertext != nil, r.Attributes)
		}
	}

	// key_unavailable: nothing can seal.
	for _, o := range KeyUnavailable([]Message{deleted, {ID: "m-none", PublishTime: t0, Data: []byte("{}")}}) {
		noCanary(t, o.MessageID, o.Reject)
	}
	ku := KeyUnavailable([]Message{deleted})[0].Reject
	if ku.AttributesDropped != 2 || !maps.Equal(ku.Attributes, pb) || ku.AttributesCiphertext != nil {
		t.Fatalf("key_unavailable: %+v", ku)
	}
}

func TestDeadLetterUserScopes(t *testing.T) {
	day := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	late := day.Add(23*time.Hour + 59*time.Minute)
	if DeadLetterUser("a", day) == DeadLetterUser("b", day) {
		t.Fatal("two roots share a dead-letter keychain")
	}
	if DeadLetterUser("a", day) != DeadLetterUser("a", late) || DeadLetterUser("a", day) == DeadLetterUser("a", day.Add(24*time.Hour)) {
		t.Fatal("not one keychain per UTC day")
	}
	if got := DeadLetterUser("0123456789abcdef0123456789abcdef", late.In(time.FixedZone("X", 3600))); got != "lockstream:deadletter:0123456789abcdef0123456789abcdef:2026-11-23" {
		t.Fatalf("DeadLetterUser = %q", got)
	}

	// Two anonymizers writing to different roots seal unknown-user dead
	// letters under different keychains.
	f := keyclient.NewFake()
	bad := Message{ID: "m-bad", PublishTime: t0, Data: []byte(`{not json`)}
	var subjects []string
	for _, scope := range []string{"root-a", "root-b"} {
		out, err := newDeadLetterAnon(t, f, scope).Anonymize(context.Background(), []Message{bad})
		if err != nil {
			t.Fatal(err)
		}
		if s := f.SubjectOf(DeadLetterUser(scope, t0)); s == "" || out[0].Reject.Subject != s {
			t.Fatalf("scope %s: sealed under %q, want the keychain %q", scope, out[0].Reject.Subject, s)
		}
		subjects = append(subjects, out[0].Reject.Subject)
	}
	if subjects[0] == subjects[1] {
		t.Fatal("two roots' dead letters sealed under one keychain")
	}

	reg, _ := schemas.Embedded()
	if _, err := NewAnonymizer(reg, f, Options{DeadLetterScope: strings.Repeat("x", MaxDeadLetterScope+1)}); err == nil {
		t.Fatal("an over-long scope was accepted")
	}
}
