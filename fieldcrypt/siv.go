package fieldcrypt

import (
	"crypto/aes"
	"crypto/subtle"
	"encoding/binary"
	"errors"
)

// AES-SIV (RFC 5297) with one associated-data component, the construction
// Tink's DeterministicAEAD computes (so its ciphertexts are Tink's, and
// Tink opens them: TestSIVMatchesTink, insecurekeyset's tests): S2V with
// AES-CMAC under the first half of the key gives the synthetic IV, AES-CTR
// under the second half the ciphertext. It is written here, on this
// package's AES blocks (aes.go: AES-NI, else crypto/aes), rather than
// called through Tink because Tink builds it anew per key (two AES key
// schedules, a CMAC object, a CTR stream: 13 allocations and ~1.1 µs per
// value), and a category key is used for a handful of values before the
// next user's: this costs the two key schedules and the block encryptions,
// nothing else, and with AES-NI the schedules are held in sivKeys itself,
// on the caller's stack.

const sivBlock = aes.BlockSize

// sivKeys are the two AES states of an AES-SIV key, with the CMAC subkeys.
type sivKeys struct {
	mac, ctr block
	k1, k2   [sivBlock]byte // CMAC subkeys of mac (RFC 4493)
}

// init keys s with an AES-SIV key (two AES keys of 16, 24 or 32 bytes).
func (s *sivKeys) init(key []byte) error {
	if len(key) != 32 && len(key) != 48 && len(key) != 64 {
		return errors.New("fieldcrypt: aes-siv key must be 32, 48 or 64 bytes")
	}
	if err := s.mac.init(key[:len(key)/2]); err != nil {
		return err
	}
	if err := s.ctr.init(key[len(key)/2:]); err != nil {
		return err
	}
	var l [sivBlock]byte
	s.mac.encrypt(&l, &l)
	s.k1 = double(l)
	s.k2 = double(s.k1)
	return nil
}

// wipe clears the key schedules and subkeys.
func (s *sivKeys) wipe() {
	s.mac.wipe()
	s.ctr.wipe()
	clear(s.k1[:])
	clear(s.k2[:])
}

// double multiplies a block by x in GF(2^128) (RFC 5297's "dbl"), in
// constant time.
func double(b [sivBlock]byte) [sivBlock]byte {
	var d [sivBlock]byte
	carry := b[0] >> 7
	for i := 0; i < sivBlock-1; i++ {
		d[i] = b[i]<<1 | b[i+1]>>7
	}
	d[sivBlock-1] = b[sivBlock-1]<<1 ^ byte(subtle.ConstantTimeSelect(int(carry), 0x87, 0))
	return d
}

// cmac is AES-CMAC (RFC 4493) of msg whose last sivBlock bytes are XORed
// with end first, when end is not nil (S2V's "xorend"; msg is then at
// least a block long).
func (s *sivKeys) cmac(msg []byte, end *[sivBlock]byte) [sivBlock]byte {
	var x, blk [sivBlock]byte
	endAt := len(msg) - sivBlock // where end applies
	n := (len(msg) + sivBlock - 1) / sivBlock
	if n == 0 {
		n = 1
	}
	for i := 0; i < n; i++ {
		part := msg[i*sivBlock : min((i+1)*sivBlock, len(msg))]
		blk = [sivBlock]byte{}
		copy(blk[:], part)
		if end != nil {
			for j := range part {
				if p := i*sivBlock + j; p >= endAt {
					blk[j] ^= end[p-endAt]
				}
			}
		}
		if i == n-1 {
			if len(part) == sivBlock {
				subtle.XORBytes(blk[:], blk[:], s.k1[:])
			} else {
				blk[len(part)] ^= 0x80
				subtle.XORBytes(blk[:], blk[:], s.k2[:])
			}
		}
		subtle.XORBytes(x[:], x[:], blk[:])
		s.mac.encrypt(&x, &x)
	}
	return x
}

// s2v is RFC 5297's S2V over (aad, plaintext).
func (s *sivKeys) s2v(plaintext, aad []byte) [sivBlock]byte {
	var zero [sivBlock]byte
	d := double(s.cmac(zero[:], nil))
	a := s.cmac(aad, nil)
	subtle.XORBytes(d[:], d[:], a[:])
	if len(plaintext) >= sivBlock {
		return s.cmac(plaintext, &d)
	}
	t := double(d)
	subtle.XORBytes(t[:len(plaintext)], t[:len(plaintext)], plaintext)
	t[len(plaintext)] ^= 0x80
	return s.cmac(t[:], nil)
}

// ctr XORs in with the AES-CTR key stream from the synthetic IV (bits 31
// and 63 cleared, RFC 5297 section 2.5) into out (len(in) bytes).
func (s *sivKeys) ctrXOR(out, in []byte, iv [sivBlock]byte) {
	iv[8] &= 0x7f
	iv[12] &= 0x7f
	hi, lo := binary.BigEndian.Uint64(iv[:8]), binary.BigEndian.Uint64(iv[8:])
	var ks [streamBatch * sivBlock]byte
	for len(in) > 0 {
		k := 0
		for ; k < streamBatch && k*sivBlock < len(in); k++ {
			binary.BigEndian.PutUint64(ks[k*sivBlock:], hi)
			binary.BigEndian.PutUint64(ks[k*sivBlock+8:], lo)
			lo++
			if lo == 0 {
				hi++
			}
		}
		s.ctr.encryptBlocks(ks[:k*sivBlock])
		n := subtle.XORBytes(out, in, ks[:k*sivBlock])
		out, in = out[n:], in[n:]
	}
	clear(ks[:]) // key stream
}

// seal appends V | CTR(plaintext) to dst.
func (s *sivKeys) seal(dst, plaintext, aad []byte) []byte {
	v := s.s2v(plaintext, aad)
	dst = append(dst, v[:]...)
	n := len(dst)
	dst = append(dst, plaintext...) // room, overwritten below
	s.ctrXOR(dst[n:], plaintext, v)
	return dst
}

// open appends the plaintext of ciphertext (V | C) to dst, or fails with
// ErrDecrypt when V is not S2V of what it decrypts to.
func (s *sivKeys) open(dst, ciphertext, aad []byte) ([]byte, error) {
	if len(ciphertext) < sivBlock {
		return nil, ErrDecrypt
	}
	v := [sivBlock]byte(ciphertext[:sivBlock])
	n := len(dst)
	dst = append(dst, ciphertext[sivBlock:]...)
	s.ctrXOR(dst[n:], ciphertext[sivBlock:], v)
	if want := s.s2v(dst[n:], aad); subtle.ConstantTimeCompare(want[:], v[:]) != 1 {
		clear(dst[n:])
		return nil, ErrDecrypt
	}
	return dst, nil
}
