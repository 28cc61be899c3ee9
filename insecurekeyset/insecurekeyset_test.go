package insecurekeyset

import (
	"bytes"
	"crypto/rand"
	"testing"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/daead"
	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/keyset"

	"github.com/lockstream/lockstream/fieldcrypt"
)

func newKey(t *testing.T, version int) fieldcrypt.CategoryKey {
	b := make([]byte, fieldcrypt.CategoryKeySize)
	rand.Read(b)
	return fieldcrypt.CategoryKey{Subject: "s_alice", Category: "contact", Version: version, Secret: fieldcrypt.NewSecret(b)}
}

// TestPlainTinkDecryptsOurCiphertexts is the compatibility proof behind the
// BigQuery views: ciphertexts written by fieldcrypt open with plain Tink
// primitives built from the exported keyset (binary and JSON), for every
// version in the keyset.
func TestPlainTinkDecryptsOurCiphertexts(t *testing.T) {
	k1, k2 := newKey(t, 1), newKey(t, 2)
	aad := fieldcrypt.AAD("AccountUpdate", "email", "s_alice")
	type sealed struct {
		ct  []byte
		det bool
		pt  string
	}
	var cts []sealed
	for _, k := range []fieldcrypt.CategoryKey{k1, k2} {
		c, err := fieldcrypt.NewCipher(k)
		if err != nil {
			t.Fatal(err)
		}
		for _, det := range []bool{false, true} {
			pt := "alice@example.com/" + k.String()
			ct, err := c.Encrypt([]byte(pt), aad, det)
			if err != nil {
				t.Fatal(err)
			}
			cts = append(cts, sealed{ct, det, pt})
		}
	}
	ah, err := AEAD(k2, k1)
	if err != nil {
		t.Fatal(err)
	}
	dh, err := Deterministic(k1, k2)
	if err != nil {
		t.Fatal(err)
	}
	for _, form := range []string{"binary", "json"} {
		ser := Binary
		if form == "json" {
			ser = JSON
		}
		ab, err := ser(ah)
		if err != nil {
			t.Fatal(err)
		}
		db, err := ser(dh)
		if err != nil {
			t.Fatal(err)
		}
		// Read back with Tink's own reader, not ours.
		var ar, dr keyset.Reader
		if form == "json" {
			ar, dr = keyset.NewJSONReader(bytes.NewReader(ab)), keyset.NewJSONReader(bytes.NewReader(db))
		} else {
			ar, dr = keyset.NewBinaryReader(bytes.NewReader(ab)), keyset.NewBinaryReader(bytes.NewReader(db))
		}
		ah2, err := insecurecleartextkeyset.Read(ar)
		if err != nil {
			t.Fatal(err)
		}
		dh2, err := insecurecleartextkeyset.Read(dr)
		if err != nil {
			t.Fatal(err)
		}
		a, err := aead.New(ah2)
		if err != nil {
			t.Fatal(err)
		}
		d, err := daead.New(dh2)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range cts {
			var got []byte
			if s.det {
				got, err = d.DecryptDeterministically(s.ct, aad)
			} else {
				got, err = a.Decrypt(s.ct, aad)
			}
			if err != nil || string(got) != s.pt {
				t.Fatalf("%s keyset: plain Tink failed to decrypt (det=%v): %v", form, s.det, err)
			}
			// And the AAD still binds under plain Tink.
			if s.det {
				_, err = d.DecryptDeterministically(s.ct, fieldcrypt.AAD("AccountUpdate", "email", "s_bob"))
			} else {
				_, err = a.Decrypt(s.ct, fieldcrypt.AAD("AccountUpdate", "email", "s_bob"))
			}
			if err == nil {
				t.Fatalf("%s keyset: wrong AAD decrypted under plain Tink", form)
			}
		}
		// Our reader reads both forms too.
		if _, err := Read(ab); err != nil {
			t.Fatalf("Read(%s): %v", form, err)
		}
	}
	// The primary is the highest version: Tink's own encryptions name it.
	a, _ := aead.New(ah)
	ct, _ := a.Encrypt([]byte("x"), aad)
	if v, err := fieldcrypt.VersionOf(ct); err != nil || v != 2 {
		t.Fatalf("primary version = %d, %v; want 2", v, err)
	}
}

// TestWeDecryptPlainTinkCiphertexts is the other direction: fieldcrypt seals
// AES-GCM with crypto/cipher in Tink's wire format, and opens what plain
// Tink sealed under the same exported key (and nothing under another
// version's).
func TestWeDecryptPlainTinkCiphertexts(t *testing.T) {
	k1, k2 := newKey(t, 1), newKey(t, 2)
	aad := fieldcrypt.AAD("PlaybackEvent", "ip_address", "s_alice")
	for _, k := range []fieldcrypt.CategoryKey{k1, k2} {
		h, err := AEAD(k)
		if err != nil {
			t.Fatal(err)
		}
		a, err := aead.New(h)
		if err != nil {
			t.Fatal(err)
		}
		for _, pt := range []string{"", "203.0.113.7", string(bytes.Repeat([]byte{0xff}, 1000))} {
			ct, err := a.Encrypt([]byte(pt), aad)
			if err != nil {
				t.Fatal(err)
			}
			if len(ct) != fieldcrypt.CiphertextSize(len(pt), false) {
				t.Fatalf("Tink ciphertext of %d bytes is %d long; CiphertextSize says %d", len(pt), len(ct), fieldcrypt.CiphertextSize(len(pt), false))
			}
			for _, c := range []fieldcrypt.CategoryKey{k1, k2} {
				ci, err := fieldcrypt.NewCipher(c)
				if err != nil {
					t.Fatal(err)
				}
				got, err := ci.Decrypt(ct, aad, false)
				if c.Version == k.Version && (err != nil || string(got) != pt) {
					t.Fatalf("v%d: Tink's ciphertext did not open: %v", k.Version, err)
				}
				if c.Version != k.Version && err == nil {
					t.Fatalf("v%d ciphertext opened under v%d", k.Version, c.Version)
				}
			}
		}
	}
}

func TestBuildErrors(t *testing.T) {
	k1 := newKey(t, 1)
	other := k1
	other.Subject = "s_bob"
	if _, err := AEAD(); err == nil {
		t.Error("empty keyset accepted")
	}
	if _, err := AEAD(k1, other); err == nil {
		t.Error("mixed subjects accepted")
	}
	if _, err := AEAD(k1, k1); err == nil {
		t.Error("duplicate version accepted")
	}
	bad := k1
	bad.Secret = fieldcrypt.NewSecret([]byte("short"))
	if _, err := Deterministic(bad); err == nil {
		t.Error("short key accepted")
	}
}
