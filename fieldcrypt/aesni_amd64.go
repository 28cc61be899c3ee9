//go:build amd64 && !purego

package fieldcrypt

import "golang.org/x/sys/cpu"

// useAESNI: this CPU has the instructions aesni_amd64.s is written with.
// Without them, AES-GCM is crypto/cipher's and AES-SIV's blocks go
// through crypto/aes (both allocate their AES states on the heap).
var useAESNI = cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ && cpu.X86.HasSSSE3

// expandKey256 writes the AES-256 encryption key schedule of the 32 bytes
// at key into rk.
//
//go:noescape
func expandKey256(key *byte, rk *schedule)

// encryptBlocks256 encrypts the n 16-byte blocks at src into dst (which
// may be src) under the schedule rk.
//
//go:noescape
func encryptBlocks256(rk *schedule, dst, src *byte, n int)

// ghashBlocks folds the n 16-byte blocks at data into the GHASH state y
// under the hash key h (y = (y ^ block) * h, block by block).
//
//go:noescape
func ghashBlocks(h, y *[16]byte, data *byte, n int)
