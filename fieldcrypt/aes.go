package fieldcrypt

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"slices"
	"sync"
)

// Why this package keys AES itself: a category key seals a handful of
// values before the next user's, so its AES state is built per value, and
// crypto/aes and crypto/cipher can only build one on the heap (behind the
// cipher.Block and cipher.AEAD interfaces: 512 bytes per AES key, 768 more
// per GCM, ~3.3 KB per event and the collector's time to reclaim them).
// Where the CPU has AES-NI and PCLMULQDQ (aesni_amd64.s), the key
// schedule is expanded into a schedule on the caller's stack instead and
// AES-GCM is composed here (NIST SP 800-38D with a 96-bit IV, as
// crypto/cipher's and Tink's; TestGCMMatchesStdlib checks it byte for
// byte both ways). Elsewhere crypto/cipher does the work, as before.

// schedule is an AES-256 encryption key schedule: 15 round keys.
type schedule [15 * aes.BlockSize]byte

// block is one AES key ready to encrypt blocks: its schedule held in the
// block itself for a 32-byte key where the CPU has AES-NI (no
// allocation), a crypto/aes Block otherwise.
type block struct {
	rk  schedule
	std cipher.Block
	io  []byte // std's input and output: what goes through its interface escapes
}

func (b *block) init(key []byte) error {
	if useAESNI && len(key) == 32 {
		expandKey256(&key[0], &b.rk)
		return nil
	}
	std, err := aes.NewCipher(key)
	if err != nil {
		return err
	}
	b.std, b.io = std, make([]byte, aes.BlockSize)
	return nil
}

// encrypt encrypts src into dst (which may be src).
func (b *block) encrypt(dst, src *[aes.BlockSize]byte) {
	if b.std == nil {
		encryptBlocks256(&b.rk, &dst[0], &src[0], 1)
		return
	}
	copy(b.io, src[:])
	b.std.Encrypt(b.io, b.io)
	copy(dst[:], b.io)
}

// encryptBlocks encrypts the whole blocks of b in place.
func (b *block) encryptBlocks(p []byte) {
	if b.std == nil {
		if len(p) >= aes.BlockSize {
			encryptBlocks256(&b.rk, &p[0], &p[0], len(p)/aes.BlockSize)
		}
		return
	}
	for ; len(p) >= aes.BlockSize; p = p[aes.BlockSize:] {
		b.encrypt((*[aes.BlockSize]byte)(p), (*[aes.BlockSize]byte)(p))
	}
}

// wipe clears the schedule (a crypto/aes Block cannot be cleared).
func (b *block) wipe() {
	clear(b.rk[:])
	if b.io != nil {
		clear(b.io)
	}
}

// gcmSeal appends Tink's AES-GCM body, IV | ciphertext | tag, of
// plaintext under key to dst. The IV is random. Only with useAESNI.
func gcmSeal(key *[32]byte, dst, plaintext, aad []byte) []byte {
	n := len(dst)
	size := gcmIVSize + len(plaintext) + gcmTagSize
	dst = slices.Grow(dst, size)[:n+size]
	out := dst[n:]
	iv, ct := out[:gcmIVSize], out[gcmIVSize:gcmIVSize+len(plaintext)]
	readIV(iv)
	tag := gcm(key, iv, ct, plaintext, aad, ct)
	copy(out[gcmIVSize+len(plaintext):], tag[:])
	return dst
}

// ivBuf is random bytes for IVs, read from crypto/rand a buffer at a time
// and handed out once each: a rand.Read per seal cost ~50 ns (getrandom
// through the vDSO, per call), a third of sealing a short field. An IV is
// public (each ciphertext carries its own); what matters is that it is
// random and never handed out twice, and a buffer is read only by whoever
// took it from ivBufs, until it puts it back.
type ivBuf struct {
	b   [4096]byte
	off int // b[off:] is not handed out yet
}

var ivBufs = sync.Pool{New: func() any { return &ivBuf{off: 4096} }}

// readIV fills iv (at most 4096 bytes) with random bytes.
func readIV(iv []byte) {
	r := ivBufs.Get().(*ivBuf)
	if len(r.b)-r.off < len(iv) {
		rand.Read(r.b[:])
		r.off = 0
	}
	r.off += copy(iv, r.b[r.off:])
	ivBufs.Put(r)
}

// gcmOpen appends the plaintext of body (IV | ciphertext | tag) to dst,
// or fails with ErrDecrypt when the tag is not the body's under key and
// aad. Only with useAESNI.
func gcmOpen(key *[32]byte, dst, body, aad []byte) ([]byte, error) {
	if len(body) < gcmIVSize+gcmTagSize {
		return nil, ErrDecrypt
	}
	iv, ct, tag := body[:gcmIVSize], body[gcmIVSize:len(body)-gcmTagSize], body[len(body)-gcmTagSize:]
	n := len(dst)
	dst = slices.Grow(dst, len(ct))[:n+len(ct)]
	if want := gcm(key, iv, dst[n:], ct, aad, ct); subtle.ConstantTimeCompare(want[:], tag) != 1 {
		clear(dst[n:])
		return nil, ErrDecrypt
	}
	return dst, nil
}

// gcm is AES-GCM both ways under key and the 96-bit IV iv: it XORs src
// with the key stream into dst and returns the tag of the ciphertext ct
// (dst when sealing, src when opening) and aad.
func gcm(key *[32]byte, iv, dst, src, aad, ct []byte) [aes.BlockSize]byte {
	var rk schedule
	expandKey256(&key[0], &rk)
	var h, mask [aes.BlockSize]byte
	gcmCrypt(&rk, iv, &h, &mask, dst, src)
	clear(rk[:])
	tag := ghash(&h, aad, ct)
	subtle.XORBytes(tag[:], tag[:], mask[:])
	return tag
}

// streamBatch is how many key stream blocks gcmCrypt and AES-SIV's ctrXOR
// encrypt per call.
const streamBatch = 8

// gcmCrypt sets h to the hash key E(0) and mask to the tag mask E(J0) of
// the 96-bit IV iv, and XORs src with the key stream from inc32(J0) into
// dst. Blocks are encrypted streamBatch at a time (the first batch with the
// two above): encryptBlocks256 runs four side by side.
func gcmCrypt(rk *schedule, iv []byte, h, mask *[aes.BlockSize]byte, dst, src []byte) {
	var buf [streamBatch * aes.BlockSize]byte
	var ctr [aes.BlockSize]byte
	copy(ctr[:], iv)
	ctr[aes.BlockSize-1] = 1
	copy(buf[aes.BlockSize:], ctr[:]) // buf's first block is zero
	c := uint32(1)
	for first := 2; ; first = 0 {
		k := first
		for ; k < streamBatch && (k-first)*aes.BlockSize < len(src); k++ {
			c++
			binary.BigEndian.PutUint32(ctr[12:], c)
			copy(buf[k*aes.BlockSize:], ctr[:])
		}
		encryptBlocks256(rk, &buf[0], &buf[0], k)
		if first != 0 {
			*h, *mask = [aes.BlockSize]byte(buf[:]), [aes.BlockSize]byte(buf[aes.BlockSize:])
		}
		m := subtle.XORBytes(dst, src, buf[first*aes.BlockSize:k*aes.BlockSize])
		dst, src = dst[m:], src[m:]
		if len(src) == 0 {
			break
		}
	}
	clear(buf[:])
}

// ghash is GHASH under h of aad and ct, each zero-padded to whole blocks,
// then their lengths in bits.
func ghash(h *[aes.BlockSize]byte, aad, ct []byte) [aes.BlockSize]byte {
	var y, lens [aes.BlockSize]byte
	ghashPadded(h, &y, aad)
	ghashPadded(h, &y, ct)
	binary.BigEndian.PutUint64(lens[:8], uint64(len(aad))*8)
	binary.BigEndian.PutUint64(lens[8:], uint64(len(ct))*8)
	ghashBlocks(h, &y, &lens[0], 1)
	return y
}

func ghashPadded(h, y *[aes.BlockSize]byte, b []byte) {
	if full := len(b) / aes.BlockSize; full > 0 {
		ghashBlocks(h, y, &b[0], full)
	}
	if rest := b[len(b)&^(aes.BlockSize-1):]; len(rest) > 0 {
		var last [aes.BlockSize]byte
		copy(last[:], rest)
		ghashBlocks(h, y, &last[0], 1)
	}
}
