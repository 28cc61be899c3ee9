package fieldcrypt

import (
	"bytes"
	"encoding/hex"
	"math/rand/v2"
	"strings"
	"testing"

	daeadsubtle "github.com/tink-crypto/tink-go/v2/daead/subtle"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSIVRFC5297: the deterministic example of RFC 5297 (appendix A.1,
// AES-SIV-CMAC-256) seals to the RFC's output and opens back.
func TestSIVRFC5297(t *testing.T) {
	key := unhex(t, "fffefdfc fbfaf9f8 f7f6f5f4 f3f2f1f0 f0f1f2f3 f4f5f6f7 f8f9fafb fcfdfeff")
	ad := unhex(t, "10111213 14151617 18191a1b 1c1d1e1f 20212223 24252627")
	pt := unhex(t, "11223344 55667788 99aabbcc ddee")
	want := unhex(t, "85632d07 c6e8f37f 950acd32 0a2ecc93 40c02b96 90c4dc04 daef7f6a fe5c")
	var s sivKeys
	if err := s.init(key); err != nil {
		t.Fatal(err)
	}
	if got := s.seal(nil, pt, ad); !bytes.Equal(got, want) {
		t.Fatalf("seal = %x, want %x", got, want)
	}
	if got, err := s.open(nil, want, ad); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("open = %x, %v", got, err)
	}
}

// randBytes is n bytes from r.
func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// lengths is 0, 1, ... n-1.
func lengths(n int) []int {
	l := make([]int, n)
	for i := range l {
		l[i] = i
	}
	return l
}

// TestSIVMatchesTink: for random 64-byte keys, plaintexts and associated
// data of every length around the block size (0 to 80 bytes, and longer
// plaintexts past the key stream's batch of 8 blocks), the
// ciphertext is Tink's AES-SIV's byte for byte, each opens the other's,
// and a flipped bit in the ciphertext or the associated data fails with
// ErrDecrypt.
func TestSIVMatchesTink(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, ptLen := range append(lengths(81), 127, 128, 129, 200, 1000) {
		for _, adLen := range []int{0, 1, 15, 16, 17, 31, 32, 33, r.IntN(200)} {
			key, pt, ad := randBytes(r, 64), randBytes(r, ptLen), randBytes(r, adLen)
			var ours sivKeys
			if err := ours.init(key); err != nil {
				t.Fatal(err)
			}
			tink, err := daeadsubtle.NewAESSIV(key)
			if err != nil {
				t.Fatal(err)
			}
			want, err := tink.EncryptDeterministically(pt, ad)
			if err != nil {
				t.Fatal(err)
			}
			prefix := []byte("prefix")
			got := ours.seal(prefix, pt, ad)
			if !bytes.Equal(got[:len(prefix)], prefix) || !bytes.Equal(got[len(prefix):], want) {
				t.Fatalf("pt %d, ad %d bytes: seal = %x, Tink's %x", ptLen, adLen, got[len(prefix):], want)
			}
			if back, err := ours.open(nil, want, ad); err != nil || !bytes.Equal(back, pt) {
				t.Fatalf("pt %d, ad %d bytes: Tink's ciphertext opens to %x, %v", ptLen, adLen, back, err)
			}
			if back, err := tink.DecryptDeterministically(got[len(prefix):], ad); err != nil || !bytes.Equal(back, pt) {
				t.Fatalf("pt %d, ad %d bytes: Tink cannot open ours: %v", ptLen, adLen, err)
			}
			bad := bytes.Clone(want)
			bad[r.IntN(len(bad))] ^= 1 << r.IntN(8)
			if _, err := ours.open(nil, bad, ad); err != ErrDecrypt {
				t.Fatalf("pt %d, ad %d bytes: a flipped ciphertext bit opened (%v)", ptLen, adLen, err)
			}
			if adLen > 0 {
				badAD := bytes.Clone(ad)
				badAD[r.IntN(adLen)] ^= 1
				if _, err := ours.open(nil, want, badAD); err != ErrDecrypt {
					t.Fatalf("pt %d, ad %d bytes: another AAD opened (%v)", ptLen, adLen, err)
				}
			}
		}
	}
	var s sivKeys
	if err := s.init(make([]byte, 40)); err == nil {
		t.Fatal("a 40-byte AES-SIV key was accepted")
	}
}
