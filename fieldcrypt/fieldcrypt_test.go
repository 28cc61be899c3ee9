package fieldcrypt

import (
	"bytes"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func testKey(t testing.TB, subject, category string, version int) CategoryKey {
	t.Helper()
	b := make([]byte, CategoryKeySize)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return CategoryKey{Subject: subject, Category: category, Version: version, Secret: NewSecret(b)}
}

func mustCipher(t testing.TB, k CategoryKey) *Cipher {
	t.Helper()
	c, err := NewCipher(k)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRoundTrip(t *testing.T) {
	k := testKey(t, "s_alice", "contact", 1)
	c := mustCipher(t, k)
	for _, det := range []bool{false, true} {
		for _, pt := range [][]byte{nil, {}, []byte("a"), []byte("alice@example.com"), bytes.Repeat([]byte{0}, 4096)} {
			aad := AAD("AccountUpdate", "email", k.Subject)
			ct, err := c.Encrypt(pt, aad, det)
			if err != nil {
				t.Fatal(err)
			}
			if len(pt) > 3 && bytes.Contains(ct, pt) {
				t.Fatalf("ciphertext contains plaintext")
			}
			got, err := c.Decrypt(ct, aad, det)
			if err != nil {
				t.Fatalf("det=%v len=%d: %v", det, len(pt), err)
			}
			if !bytes.Equal(got, pt) {
				t.Fatalf("det=%v: round trip changed the value", det)
			}
			v, err := VersionOf(ct)
			if err != nil || v != 1 {
				t.Fatalf("VersionOf = %d, %v", v, err)
			}
		}
	}
}

// TestAppendEncrypt: sealing into a buffer keeps what the buffer held,
// adds exactly CiphertextSize bytes and opens like Encrypt's.
func TestAppendEncrypt(t *testing.T) {
	c := mustCipher(t, testKey(t, "s_a", "contact", 3))
	aad := AAD("AccountUpdate", "email", "s_a")
	for _, det := range []bool{false, true} {
		for _, pt := range []string{"", "a@example.com", strings.Repeat("x", 300)} {
			head := []byte("record head")
			out, err := c.AppendEncrypt(head, []byte(pt), aad, det)
			if err != nil {
				t.Fatal(err)
			}
			if string(out[:len(head)]) != "record head" || len(out)-len(head) != CiphertextSize(len(pt), det) {
				t.Fatalf("det=%v: %d bytes appended, want %d, head intact", det, len(out)-len(head), CiphertextSize(len(pt), det))
			}
			got, err := c.Decrypt(out[len(head):], aad, det)
			if err != nil || string(got) != pt {
				t.Fatalf("det=%v: appended ciphertext: %q, %v", det, got, err)
			}
			if v, err := VersionOf(out[len(head):]); err != nil || v != 3 {
				t.Fatalf("det=%v: version %d, %v", det, v, err)
			}
			room := make([]byte, 2, 512)
			got, err = c.AppendDecrypt(room, out[len(head):], aad, det)
			if err != nil || string(got[2:]) != pt || &got[0] != &room[0] {
				t.Fatalf("det=%v: AppendDecrypt %q, %v (in the room given: %v)", det, got, err, &got[0] == &room[0])
			}
			bad := append([]byte(nil), out[len(head):]...)
			bad[len(bad)-1] ^= 1
			if got, err := c.AppendDecrypt(room, bad, aad, det); err != ErrDecrypt || got != nil {
				t.Fatalf("det=%v: AppendDecrypt of an altered ciphertext: %q, %v", det, got, err)
			}
		}
	}
}

func TestWrongKeyAndAADFail(t *testing.T) {
	k := testKey(t, "s_alice", "contact", 1)
	c := mustCipher(t, k)
	other := mustCipher(t, testKey(t, "s_alice", "contact", 1))
	pt := []byte("alice@example.com")
	aad := AAD("AccountUpdate", "email", "s_alice")
	wrong := map[string][]byte{
		"other field":      AAD("AccountUpdate", "display_name", "s_alice"),
		"other subject":    AAD("AccountUpdate", "email", "s_bob"),
		"other event type": AAD("PlaybackEvent", "email", "s_alice"),
		"empty":            nil,
	}
	for _, det := range []bool{false, true} {
		ct, err := c.Encrypt(pt, aad, det)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := other.Decrypt(ct, aad, det); !errors.Is(err, ErrDecrypt) {
			t.Errorf("det=%v: wrong key decrypted (err=%v)", det, err)
		}
		for name, w := range wrong {
			if _, err := c.Decrypt(ct, w, det); !errors.Is(err, ErrDecrypt) {
				t.Errorf("det=%v: wrong AAD (%s) decrypted (err=%v)", det, name, err)
			}
		}
		// A ciphertext of one mode never opens in the other.
		if _, err := c.Decrypt(ct, aad, !det); err == nil {
			t.Errorf("det=%v ciphertext opened in the other mode", det)
		}
	}
}

func TestEveryByteFlipFails(t *testing.T) {
	c := mustCipher(t, testKey(t, "s_alice", "location", 3))
	aad := AAD("PlaybackEvent", "ip_address", "s_alice")
	for _, det := range []bool{false, true} {
		ct, err := c.Encrypt([]byte("203.0.113.7"), aad, det)
		if err != nil {
			t.Fatal(err)
		}
		for i := range ct {
			for _, mask := range []byte{0x01, 0x80, 0xff} {
				bad := bytes.Clone(ct)
				bad[i] ^= mask
				if _, err := c.Decrypt(bad, aad, det); err == nil {
					t.Fatalf("det=%v: flipping byte %d with %#x still decrypts", det, i, mask)
				}
			}
		}
		if _, err := c.Decrypt(ct[:len(ct)-1], aad, det); err == nil {
			t.Fatalf("det=%v: truncated ciphertext decrypts", det)
		}
		if _, err := c.Decrypt(append(bytes.Clone(ct), 0), aad, det); err == nil {
			t.Fatalf("det=%v: extended ciphertext decrypts", det)
		}
	}
}

func TestDeterministic(t *testing.T) {
	k1 := testKey(t, "s_alice", "contact", 1)
	k2 := testKey(t, "s_alice", "contact", 1)
	c1, c2 := mustCipher(t, k1), mustCipher(t, k2)
	aad := AAD("AccountUpdate", "email", "s_alice")
	a, _ := c1.Encrypt([]byte("alice@example.com"), aad, true)
	b, _ := c1.Encrypt([]byte("alice@example.com"), aad, true)
	if !bytes.Equal(a, b) {
		t.Fatal("deterministic mode gave different ciphertexts for equal inputs under one key")
	}
	c, _ := c2.Encrypt([]byte("alice@example.com"), aad, true)
	if bytes.Equal(a, c) {
		t.Fatal("deterministic mode gave equal ciphertexts under different keys")
	}
	d, _ := c1.Encrypt([]byte("bob@example.com"), aad, true)
	if bytes.Equal(a, d) {
		t.Fatal("different plaintexts gave equal deterministic ciphertexts")
	}
	r1, _ := c1.Encrypt([]byte("alice@example.com"), aad, false)
	r2, _ := c1.Encrypt([]byte("alice@example.com"), aad, false)
	if bytes.Equal(r1, r2) {
		t.Fatal("randomized mode repeated a ciphertext")
	}
}

func TestCiphertextNamesItsVersion(t *testing.T) {
	for _, v := range []int{1, 2, 77, 1<<31 - 1} {
		c := mustCipher(t, testKey(t, "s_x", "device", v))
		for _, det := range []bool{false, true} {
			ct, _ := c.Encrypt([]byte("d"), nil, det)
			got, err := VersionOf(ct)
			if err != nil || got != v {
				t.Fatalf("VersionOf = %d, %v; want %d", got, err, v)
			}
		}
	}
	for _, bad := range [][]byte{nil, {1, 0, 0}, {0, 0, 0, 0, 1}, {1, 0, 0, 0, 0}} {
		if _, err := VersionOf(bad); !errors.Is(err, ErrFormat) {
			t.Errorf("VersionOf(%x) = %v, want ErrFormat", bad, err)
		}
	}
}

// TestAlgorithmKeysAreHKDF pins the derivation to RFC 5869 HKDF-SHA256
// without salt, as crypto/hkdf computes it, through the pooled Extract
// states: many keys in a row and from several goroutines at once, so a
// state that kept anything of the previous key would show.
func TestAlgorithmKeysAreHKDF(t *testing.T) {
	check := func(k CategoryKey) error {
		gcm, siv, err := AlgorithmKeys(k)
		if err != nil {
			return err
		}
		wantGCM, err := hkdf.Key(sha256.New, k.Secret.b, nil, infoGCM, 32)
		if err != nil {
			return err
		}
		wantSIV, err := hkdf.Key(sha256.New, k.Secret.b, nil, infoSIV, 64)
		if err != nil {
			return err
		}
		if !bytes.Equal(gcm.b, wantGCM) || !bytes.Equal(siv.b, wantSIV) {
			return fmt.Errorf("%v: derived keys differ from HKDF-SHA256", k)
		}
		return nil
	}
	for i := range 100 {
		if err := check(testKey(t, "s_a", "contact", i+1)); err != nil {
			t.Fatal(err)
		}
	}
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			var err error
			for i := 0; i < 200 && err == nil; i++ {
				err = check(testKey(t, "s_b", "location", i+1))
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

func TestKeyValidation(t *testing.T) {
	good := testKey(t, "s_a", "contact", 1)
	cases := map[string]CategoryKey{
		"short":      {Subject: "s_a", Category: "contact", Version: 1, Secret: NewSecret(make([]byte, 16))},
		"version 0":  {Subject: "s_a", Category: "contact", Version: 0, Secret: good.Secret},
		"no subject": {Category: "contact", Version: 1, Secret: good.Secret},
	}
	for name, k := range cases {
		if _, err := NewCipher(k); err == nil {
			t.Errorf("%s: NewCipher accepted an invalid key", name)
		}
	}
}

func TestSecretNeverPrints(t *testing.T) {
	k := testKey(t, "s_a", "contact", 1)
	raw := k.Secret.Expose()
	hexRaw := fmt.Sprintf("%x", raw)
	js, err := json.Marshal(k)
	if err != nil {
		t.Fatal(err)
	}
	outs := []string{
		fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s %x %q", k, k, k, k.Secret, k.Secret, k.Secret),
		fmt.Sprintf("%v", k.Secret), string(js), k.String(),
	}
	for _, o := range outs {
		if strings.Contains(o, hexRaw) || strings.Contains(o, string(raw)) || strings.Contains(o, fmt.Sprint(raw)) {
			t.Fatalf("key material printed: %q", o)
		}
	}
	var s Secret
	if err := json.Unmarshal([]byte(`"AAAA"`), &s); err == nil {
		t.Fatal("a Secret was read from JSON")
	}
}

// TestCache: a key met again is answered from the cache (its keys are
// not derived again); a key of other material or another version never
// is; eviction keeps the capacity; a cached cipher decrypts what a fresh
// one of the same key encrypts.
func TestCache(t *testing.T) {
	c := NewCache(2, 0)
	a, b, d := testKey(t, "s_a", "contact", 1), testKey(t, "s_b", "contact", 1), testKey(t, "s_d", "contact", 1)
	misses := func() uint64 { _, m := c.Stats(); return m }
	ca1, _ := c.Cipher(a, false)
	ca2, _ := c.Cipher(a, false)
	if ca1 != ca2 || misses() != 1 {
		t.Fatalf("second lookup derived again (%d misses)", misses())
	}
	aad := AAD("T", "f", "s_a")
	ct, err := ca2.Encrypt([]byte("x"), aad, false)
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := mustCipher(t, a).Decrypt(ct, aad, false); err != nil || string(pt) != "x" {
		t.Fatalf("the cached cipher's ciphertext does not open with a fresh one: %v", err)
	}
	c.Cipher(b, false)
	c.Cipher(d, false) // evicts one of a and b
	if c.Len() != 2 {
		t.Fatalf("Len = %d, want 2", c.Len())
	}
	// Same subject and category, other material: derived for itself.
	a2 := testKey(t, "s_a", "contact", 1)
	before := misses()
	ca4, _ := c.Cipher(a2, false)
	if ca4 == ca1 || misses() != before+1 {
		t.Fatal("the cipher of other key material was served")
	}
	if _, err := ca4.Decrypt(ct, aad, false); err == nil {
		t.Fatal("another key's cipher opens the ciphertext")
	}
	// Another version of the same material: its own prefix.
	v2 := a
	v2.Version = 2
	if cv, _ := c.Cipher(v2, true); cv == ca1 || cv.Version() != 2 {
		t.Fatal("a key with another version got the cached cipher")
	}
	if hits, _ := c.Stats(); hits == 0 {
		t.Fatal("no hits counted")
	}
}

// TestDerivedKey: a key that carries its derived keys (DeriveKey, as key
// caches keep them) seals what the plain path opens and the other way
// round, with AES-GCM and AES-SIV, without a cache lookup; the derived
// keys never print.
func TestDerivedKey(t *testing.T) {
	k := testKey(t, "s_a", "contact", 3)
	d, err := DeriveKey(k)
	if err != nil {
		t.Fatal(err)
	}
	wantGCM, wantSIV, err := AlgorithmKeys(k)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(d.b[:32], wantGCM.Expose()) || !bytes.Equal(d.b[32:], wantSIV.Expose()) {
		t.Fatal("DeriveKey's keys are not the HKDF ones")
	}
	dk := k.WithDerived(&d)
	c := NewCache(8, 0)
	aad := AAD("T", "f", "s_a")
	for _, det := range []bool{false, true} {
		fromDerived, err := c.Cipher(dk, det)
		if err != nil {
			t.Fatal(err)
		}
		ct, err := fromDerived.Encrypt([]byte("x"), aad, det)
		if err != nil {
			t.Fatal(err)
		}
		if pt, err := mustCipher(t, k).Decrypt(ct, aad, det); err != nil || string(pt) != "x" || fromDerived.Version() != 3 {
			t.Fatalf("deterministic=%v: a derived key's ciphertext does not open with the plain key: %v", det, err)
		}
		ct2, _ := mustCipher(t, k).Encrypt([]byte("y"), aad, det)
		if pt, err := fromDerived.Decrypt(ct2, aad, det); err != nil || string(pt) != "y" {
			t.Fatalf("deterministic=%v: the plain key's ciphertext does not open with the derived one: %v", det, err)
		}
		if det {
			if again, _ := fromDerived.Encrypt([]byte("y"), aad, det); !bytes.Equal(again, ct2) {
				t.Fatal("the deterministic path of a derived key differs")
			}
		}
	}
	// A cipher asked for AES-GCM carries no AES-SIV key and refuses
	// rather than seal under a wrong one.
	gcmOnly, err := c.Cipher(dk, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gcmOnly.Encrypt([]byte("x"), aad, true); err == nil {
		t.Fatal("an AES-GCM-only cipher sealed deterministically")
	}
	if h, m := c.Stats(); h != 3 || m != 0 || c.Len() != 0 {
		t.Fatalf("a derived key was looked up or cached (%d hits, %d misses, %d cached); want 3 hits", h, m, c.Len())
	}
	for _, o := range []string{fmt.Sprintf("%v %+v %#v %s", dk, dk, dk, dk), fmt.Sprint([]CategoryKey{dk}), fmt.Sprintf("%v %+v %#v", d, d, d)} {
		for _, b := range [][]byte{d.b[:32], d.b[32:]} {
			if strings.Contains(o, fmt.Sprintf("%x", b)) || strings.Contains(o, fmt.Sprint(b)) || strings.Contains(o, fmt.Sprint(b[:8])[1:12]) {
				t.Fatalf("derived key printed: %q", o)
			}
		}
	}
}

// TestDerivedGCMKey: DeriveGCMKey gives DeriveKey's AES-GCM key and no
// AES-SIV key. A key carrying it seals and opens AES-GCM from it, without
// a cache lookup; asked for a deterministic field, the Cache derives the
// whole key once (a miss, then hits) and seals as the plain key does,
// instead of under the zero bytes.
func TestDerivedGCMKey(t *testing.T) {
	k := testKey(t, "s_a", "location", 2)
	full, err := DeriveKey(k)
	if err != nil {
		t.Fatal(err)
	}
	d, err := DeriveGCMKey(k)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(d.b[:32], full.b[:32]) || [64]byte(d.b[32:]) != [64]byte{} || d.HasSIV() || !full.HasSIV() {
		t.Fatal("DeriveGCMKey's AES-GCM key is not DeriveKey's, or it has AES-SIV bytes")
	}
	if _, err := DeriveGCMKey(CategoryKey{Subject: "s_a", Category: "location", Version: 1, Secret: NewSecret([]byte("short"))}); err == nil {
		t.Fatal("DeriveGCMKey took a key of the wrong size")
	}
	dk := k.WithDerived(&d)
	c := NewCache(8, 0)
	aad := AAD("T", "f", "s_a")
	ci, err := c.Cipher(dk, false)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := ci.Encrypt([]byte("x"), aad, false)
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := mustCipher(t, k).Decrypt(ct, aad, false); err != nil || string(pt) != "x" {
		t.Fatalf("AES-GCM from DeriveGCMKey does not open with the plain key: %v", err)
	}
	if h, m := c.Stats(); h != 1 || m != 0 || c.Len() != 0 {
		t.Fatalf("AES-GCM of a carried key: %d hits, %d misses, %d cached; want 1 hit, nothing cached", h, m, c.Len())
	}
	want, err := mustCipher(t, k).Encrypt([]byte("y"), aad, true)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		det, err := c.Cipher(dk, true)
		if err != nil {
			t.Fatal(err)
		}
		got, err := det.Encrypt([]byte("y"), aad, true)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("deterministic seal of a key without AES-SIV bytes: %v, equal to the plain key's: %v", err, bytes.Equal(got, want))
		}
		if pt, err := det.Decrypt(want, aad, true); err != nil || string(pt) != "y" {
			t.Fatalf("deterministic open of a key without AES-SIV bytes: %v", err)
		}
	}
	if h, m := c.Stats(); h != 2 || m != 1 || c.Len() != 1 {
		t.Fatalf("deterministic, twice: %d hits, %d misses, %d cached; want the key derived and cached once", h, m, c.Len())
	}
}

func BenchmarkNewCipher(b *testing.B) {
	k := testKey(b, "s_a", "contact", 1)
	for b.Loop() {
		if _, err := NewCipher(k); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncrypt64(b *testing.B) {
	c := mustCipher(b, testKey(b, "s_a", "contact", 1))
	pt := bytes.Repeat([]byte("x"), 64)
	aad := AAD("AccountUpdate", "email", "s_a")
	for _, det := range []bool{false, true} {
		b.Run(fmt.Sprintf("deterministic=%v", det), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Encrypt(pt, aad, det); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkCacheHit(b *testing.B) {
	c := NewCache(1024, 0)
	k := testKey(b, "s_a", "contact", 1)
	c.Cipher(k, false)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Cipher(k, false); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDeriveKey is what a key cache pays per key it stores: both
// algorithm keys, the AES-GCM key alone (a category without deterministic
// fields), and both against crypto/hkdf (an HMAC per Expand).
func BenchmarkDeriveKey(b *testing.B) {
	k := testKey(b, "s_a", "contact", 1)
	b.Run("DeriveKey", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := DeriveKey(k); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("DeriveGCMKey", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := DeriveGCMKey(k); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("crypto-hkdf", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			prk, err := hkdf.Extract(sha256.New, k.Secret.b, nil)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := hkdf.Expand(sha256.New, prk, infoGCM, 32); err != nil {
				b.Fatal(err)
			}
			if _, err := hkdf.Expand(sha256.New, prk, infoSIV, 64); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestDeriveKeyAllocatesNothing: a key cache derives for every key it
// stores (hundreds of thousands per million events).
func TestDeriveKeyAllocatesNothing(t *testing.T) {
	k := testKey(t, "s_a", "contact", 1)
	if _, err := DeriveKey(k); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = DeriveKey(k) }); n != 0 && !raceEnabled {
		t.Fatalf("DeriveKey: %v allocations", n)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = DeriveGCMKey(k) }); n != 0 && !raceEnabled {
		t.Fatalf("DeriveGCMKey: %v allocations", n)
	}
}

// BenchmarkCarriedCipherParallel: ciphers of keys that carry their derived
// keys, asked from every core at once, each answer counted in the cache's
// shared counter (Cipher) or by the caller (CipherCounting, as record's
// Anonymizer and Decryptor ask for them). Run with -cpu 1,2.
func BenchmarkCarriedCipherParallel(b *testing.B) {
	keys := make([]CategoryKey, 1024)
	for i := range keys {
		k := testKey(b, "s_b", "device", 1+i)
		d, err := DeriveGCMKey(k)
		if err != nil {
			b.Fatal(err)
		}
		keys[i] = k.WithDerived(&d)
	}
	for _, counting := range []bool{false, true} {
		name := map[bool]string{false: "shared-counter", true: "caller-counts"}[counting]
		b.Run(name, func(b *testing.B) {
			c := NewCache(8, 0)
			b.RunParallel(func(pb *testing.PB) {
				var carried uint64
				var sink byte
				for i := 0; pb.Next(); i++ {
					var ci Cipher
					var err error
					if counting {
						ci, err = c.CipherCounting(keys[i&1023], false, &carried)
					} else {
						ci, err = c.Cipher(keys[i&1023], false)
					}
					if err != nil {
						b.Error(err)
						return
					}
					sink ^= ci.gcm[0]
				}
				c.AddCarried(&carried)
				_ = sink
			})
			if hits, _ := c.Stats(); hits != uint64(b.N) {
				b.Fatalf("%d hits counted for %d answers", hits, b.N)
			}
		})
	}
}
