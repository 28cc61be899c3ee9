//go:build amd64 && !purego

package fieldcrypt

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"math/rand/v2"
	"testing"
)

// The machines this runs on (CI's included) have AES-NI: a test that
// found none would prove nothing of aesni_amd64.s.
func requireAESNI(t testing.TB) {
	t.Helper()
	if !useAESNI {
		t.Fatal("this CPU lacks AES-NI, PCLMULQDQ or SSSE3; run with -tags purego to test without aesni_amd64.s")
	}
}

func TestAESNIMatchesStdlib(t *testing.T) {
	requireAESNI(t)
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		key := randBytes(r, 32)
		if i == 0 {
			clear(key) // FIPS-197's all-zero key too
		}
		std, err := aes.NewCipher(key)
		if err != nil {
			t.Fatal(err)
		}
		var b block
		if err := b.init(key); err != nil {
			t.Fatal(err)
		}
		if b.std != nil {
			t.Fatal("a 32-byte key was not expanded by expandKey256")
		}
		var src, got, want [16]byte
		copy(src[:], randBytes(r, 16))
		b.encrypt(&got, &src)
		std.Encrypt(want[:], src[:])
		if got != want {
			t.Fatalf("key %d: AES-NI %x, crypto/aes %x", i, got, want)
		}
		b.encrypt(&src, &src) // in place
		if src != want {
			t.Fatalf("key %d: in place %x, want %x", i, src, want)
		}
	}
}

// FIPS-197 appendix C.3: the AES-256 example vector.
func TestAESNIFIPS197(t *testing.T) {
	requireAESNI(t)
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i)
	}
	var b block
	if err := b.init(key); err != nil {
		t.Fatal(err)
	}
	var in [16]byte
	for i := range in {
		in[i] = byte(i * 0x11)
	}
	b.encrypt(&in, &in)
	if want := unhex(t, "8ea2b7ca516745bfeafc49904b496089"); !bytes.Equal(in[:], want) {
		t.Fatalf("got %x, want %x", in, want)
	}
}

// TestGCMMatchesStdlib: gcmSeal's output is crypto/cipher's AES-GCM for
// the same IV, byte for byte, each opens the other's, and a flipped bit
// anywhere (IV, ciphertext, tag, AAD) is refused.
func TestGCMMatchesStdlib(t *testing.T) {
	requireAESNI(t)
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 3000; i++ {
		var key [32]byte
		copy(key[:], randBytes(r, 32))
		pt := randBytes(r, r.IntN(300))
		aad := randBytes(r, r.IntN(60))
		if i%7 == 0 {
			aad = nil
		}
		block, _ := aes.NewCipher(key[:])
		std, _ := cipher.NewGCM(block)

		prefix := []byte("pre")
		body := gcmSeal(&key, append([]byte(nil), prefix...), pt, aad)
		if !bytes.Equal(body[:len(prefix)], prefix) {
			t.Fatal("gcmSeal overwrote what it appends to")
		}
		body = body[len(prefix):]
		iv := body[:gcmIVSize]
		if want := std.Seal(nil, iv, pt, aad); !bytes.Equal(body[gcmIVSize:], want) {
			t.Fatalf("case %d (pt %d, aad %d bytes): ours %x, crypto/cipher %x", i, len(pt), len(aad), body[gcmIVSize:], want)
		}
		if got, err := std.Open(nil, iv, body[gcmIVSize:], aad); err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("case %d: crypto/cipher does not open ours: %v", i, err)
		}
		theirs := append(append([]byte(nil), iv...), std.Seal(nil, iv, pt, aad)...)
		got, err := gcmOpen(&key, []byte("x"), theirs, aad)
		if err != nil || !bytes.Equal(got, append([]byte("x"), pt...)) {
			t.Fatalf("case %d: ours does not open crypto/cipher's: %v", i, err)
		}
		bit := r.IntN(8 * len(body))
		body[bit/8] ^= 1 << (bit % 8)
		if _, err := gcmOpen(&key, nil, body, aad); err != ErrDecrypt {
			t.Fatalf("case %d: bit %d flipped opened: %v", i, bit, err)
		}
		body[bit/8] ^= 1 << (bit % 8)
		if len(aad) > 0 {
			aad[0] ^= 0x80
			if _, err := gcmOpen(&key, nil, body, aad); err != ErrDecrypt {
				t.Fatalf("case %d: altered AAD opened: %v", i, err)
			}
		}
	}
	var key [32]byte
	if _, err := gcmOpen(&key, nil, make([]byte, gcmIVSize+gcmTagSize-1), nil); err != ErrDecrypt {
		t.Fatalf("a body shorter than IV and tag: %v", err)
	}
}

func TestGCMAllocatesOnlyItsOutput(t *testing.T) {
	requireAESNI(t)
	var key [32]byte
	pt, aad := make([]byte, 64), make([]byte, 40)
	dst := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() { dst = gcmSeal(&key, dst[:0], pt, aad) }); n != 0 {
		t.Fatalf("gcmSeal into room: %v allocations", n)
	}
	body := gcmSeal(&key, nil, pt, aad)
	if n := testing.AllocsPerRun(100, func() { _, _ = gcmOpen(&key, dst[:0], body, aad) }); n != 0 {
		t.Fatalf("gcmOpen into room: %v allocations", n)
	}
}

// TestEncryptBlocksMatchesStdlib: every count of blocks, across the four
// side by side and the ones after, in place and not.
func TestEncryptBlocksMatchesStdlib(t *testing.T) {
	requireAESNI(t)
	r := rand.New(rand.NewPCG(5, 6))
	key := randBytes(r, 32)
	std, _ := aes.NewCipher(key)
	var rk schedule
	expandKey256(&key[0], &rk)
	for n := 1; n <= 13; n++ {
		src := randBytes(r, 16*n)
		want := make([]byte, len(src))
		for i := 0; i < len(src); i += 16 {
			std.Encrypt(want[i:], src[i:])
		}
		got := make([]byte, len(src))
		encryptBlocks256(&rk, &got[0], &src[0], n)
		if !bytes.Equal(got, want) {
			t.Fatalf("%d blocks: %x, want %x", n, got, want)
		}
		encryptBlocks256(&rk, &src[0], &src[0], n)
		if !bytes.Equal(src, want) {
			t.Fatalf("%d blocks in place: %x, want %x", n, src, want)
		}
	}
}

// FuzzGCM: for any key, plaintext and AAD, crypto/cipher opens what
// gcmSeal seals, byte for byte its own sealing under the same IV, and
// gcmOpen opens it back (make fuzz).
func FuzzGCM(f *testing.F) {
	f.Add(make([]byte, 32), []byte("a@example.com"), []byte("AccountUpdate.email|s_a"))
	f.Add(bytes.Repeat([]byte{0xff}, 32), bytes.Repeat([]byte{1}, 200), []byte{})
	f.Fuzz(func(t *testing.T, keyBytes, pt, aad []byte) {
		requireAESNI(t)
		var key [32]byte
		copy(key[:], keyBytes)
		block, _ := aes.NewCipher(key[:])
		std, _ := cipher.NewGCM(block)
		body := gcmSeal(&key, nil, pt, aad)
		iv := body[:gcmIVSize]
		if want := std.Seal(nil, iv, pt, aad); !bytes.Equal(body[gcmIVSize:], want) {
			t.Fatalf("ours %x, crypto/cipher %x", body[gcmIVSize:], want)
		}
		if got, err := gcmOpen(&key, nil, body, aad); err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("gcmOpen: %x, %v", got, err)
		}
	})
}

// BenchmarkSealAESNI: sealing a 64-byte value with AES-NI against the
// same through crypto/aes and crypto/cipher (useAESNI off, as where the
// CPU lacks it or with -tags purego), in one run.
func BenchmarkSealAESNI(b *testing.B) {
	requireAESNI(b)
	c := mustCipher(b, testKey(b, "s_a", "contact", 1))
	pt := bytes.Repeat([]byte("x"), 64)
	aad := AAD("AccountUpdate", "email", "s_a")
	dst := make([]byte, 0, 256)
	for _, det := range []bool{false, true} {
		for _, aesni := range []bool{true, false} {
			name := map[bool]string{false: "aes-gcm", true: "aes-siv"}[det] + map[bool]string{true: "/aes-ni", false: "/crypto-cipher"}[aesni]
			b.Run(name, func(b *testing.B) {
				defer func(was bool) { useAESNI = was }(useAESNI)
				useAESNI = aesni
				b.ReportAllocs()
				for b.Loop() {
					var err error
					if dst, err = c.AppendEncrypt(dst[:0], pt, aad, det); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// TestIVsAreNeverHandedOutTwice: AES-GCM IVs come from buffers of random
// bytes (readIV), each byte handed out once: 4 goroutines seal 20k values
// each (~60 buffer refills apiece) and every IV differs, and each
// ciphertext opens.
func TestIVsAreNeverHandedOutTwice(t *testing.T) {
	requireAESNI(t)
	c := mustCipher(t, testKey(t, "s_a", "contact", 1))
	aad := AAD("AccountUpdate", "email", "s_a")
	const workers, each = 4, 20_000
	ivs := make([][][gcmIVSize]byte, workers)
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			var err error
			defer func() { errs <- err }()
			for range each {
				var ct []byte
				if ct, err = c.AppendEncrypt(nil, []byte("same value"), aad, false); err != nil {
					return
				}
				if _, err = c.Decrypt(ct, aad, false); err != nil {
					return
				}
				ivs[w] = append(ivs[w], [gcmIVSize]byte(ct[prefixSize:]))
			}
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	seen := make(map[[gcmIVSize]byte]bool, workers*each)
	for _, list := range ivs {
		for _, iv := range list {
			if seen[iv] {
				t.Fatalf("IV %x handed out twice", iv)
			}
			seen[iv] = true
		}
	}
}
