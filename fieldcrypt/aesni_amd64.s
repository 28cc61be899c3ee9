//go:build amd64 && !purego

#include "textflag.h"

// AES-256 and GHASH on AES-NI and PCLMULQDQ, keyed into memory the caller
// owns (aesni_amd64.go says why). Written for this package from the
// instructions' definitions (Intel's AES-NI and carry-less multiplication
// white papers); checked against crypto/aes and crypto/cipher by
// TestAESNIMatchesStdlib and TestGCMMatchesStdlib.

// One round key of the AES-256 schedule. The even ones (X1) take
// SubWord(RotWord(last word of X3)) ^ rcon, broadcast by PSHUFD $0xff;
// the odd ones (X3) SubWord(last word of X1), broadcast by PSHUFD $0xaa.
// Each new key is the previous key of its parity with every word XORed
// with the words before it (the three shifted XORs), then with the
// broadcast word.
#define PREFIXXOR(r) \
	MOVO  r, X4;       \
	PSLLDQ $4, X4;     \
	PXOR  X4, r;       \
	PSLLDQ $4, X4;     \
	PXOR  X4, r;       \
	PSLLDQ $4, X4;     \
	PXOR  X4, r

#define EVEN(rcon, off) \
	AESKEYGENASSIST $rcon, X3, X2; \
	PSHUFD $0xff, X2, X2;          \
	PREFIXXOR(X1);                 \
	PXOR  X2, X1;                  \
	MOVOU X1, off(BX)

#define ODD(off) \
	AESKEYGENASSIST $0x00, X1, X2; \
	PSHUFD $0xaa, X2, X2;          \
	PREFIXXOR(X3);                 \
	PXOR  X2, X3;                  \
	MOVOU X3, off(BX)

// func expandKey256(key *byte, rk *schedule)
TEXT ·expandKey256(SB), NOSPLIT, $0-16
	MOVQ  key+0(FP), AX
	MOVQ  rk+8(FP), BX
	MOVOU 0(AX), X1
	MOVOU 16(AX), X3
	MOVOU X1, 0(BX)
	MOVOU X3, 16(BX)
	EVEN(0x01, 32)
	ODD(48)
	EVEN(0x02, 64)
	ODD(80)
	EVEN(0x04, 96)
	ODD(112)
	EVEN(0x08, 128)
	ODD(144)
	EVEN(0x10, 160)
	ODD(176)
	EVEN(0x20, 192)
	ODD(208)
	EVEN(0x40, 224)
	PXOR  X1, X1
	PXOR  X2, X2
	PXOR  X3, X3
	PXOR  X4, X4
	RET

#define ROUND1(off) \
	MOVOU off(AX), X8; \
	AESENC X8, X0

#define ROUND4(off) \
	MOVOU off(AX), X8; \
	AESENC X8, X0;     \
	AESENC X8, X1;     \
	AESENC X8, X2;     \
	AESENC X8, X3

// func encryptBlocks256(rk *schedule, dst, src *byte, n int)
//
// Four blocks at a time go through the rounds side by side: a round of
// one waits on its previous round, not on the other three's.
TEXT ·encryptBlocks256(SB), NOSPLIT, $0-32
	MOVQ  rk+0(FP), AX
	MOVQ  dst+8(FP), BX
	MOVQ  src+16(FP), CX
	MOVQ  n+24(FP), DX

four:
	CMPQ  DX, $4
	JB    one
	MOVOU 0(CX), X0
	MOVOU 16(CX), X1
	MOVOU 32(CX), X2
	MOVOU 48(CX), X3
	MOVOU 0(AX), X8
	PXOR  X8, X0
	PXOR  X8, X1
	PXOR  X8, X2
	PXOR  X8, X3
	ROUND4(16)
	ROUND4(32)
	ROUND4(48)
	ROUND4(64)
	ROUND4(80)
	ROUND4(96)
	ROUND4(112)
	ROUND4(128)
	ROUND4(144)
	ROUND4(160)
	ROUND4(176)
	ROUND4(192)
	ROUND4(208)
	MOVOU 224(AX), X8
	AESENCLAST X8, X0
	AESENCLAST X8, X1
	AESENCLAST X8, X2
	AESENCLAST X8, X3
	MOVOU X0, 0(BX)
	MOVOU X1, 16(BX)
	MOVOU X2, 32(BX)
	MOVOU X3, 48(BX)
	ADDQ  $64, CX
	ADDQ  $64, BX
	SUBQ  $4, DX
	JMP   four

one:
	TESTQ DX, DX
	JEQ   done
	MOVOU 0(CX), X0
	MOVOU 0(AX), X8
	PXOR  X8, X0
	ROUND1(16)
	ROUND1(32)
	ROUND1(48)
	ROUND1(64)
	ROUND1(80)
	ROUND1(96)
	ROUND1(112)
	ROUND1(128)
	ROUND1(144)
	ROUND1(160)
	ROUND1(176)
	ROUND1(192)
	ROUND1(208)
	MOVOU 224(AX), X8
	AESENCLAST X8, X0
	MOVOU X0, 0(BX)
	ADDQ  $16, CX
	ADDQ  $16, BX
	DECQ  DX
	JMP   one

done:
	PXOR  X0, X0
	PXOR  X1, X1
	PXOR  X2, X2
	PXOR  X3, X3
	PXOR  X8, X8
	RET

// Reverses a block's bytes: GHASH's bit order, with the first bit of a
// block its x^0 coefficient, becomes bit 127 of the register.
DATA reverseBytes<>+0(SB)/8, $0x08090a0b0c0d0e0f
DATA reverseBytes<>+8(SB)/8, $0x0001020304050607
GLOBL reverseBytes<>(SB), RODATA|NOPTR, $16

// X1 = X1 * X0 in GHASH's field, both byte-reversed (so bit 127-i is the
// coefficient of x^i). X2-X7 are clobbered.
//
// The 4 carry-less products give the 255-bit product <X3:X2>, bit 254-i
// the coefficient of x^i; shifted left by one, bit 255-i is. Its high
// half (X3) holds the coefficients below x^128, its low half (X2) the
// rest, c_hi, which is reduced by x^128 = x^7 + x^2 + x + 1: in this bit
// order multiplying by x^k is a right shift by k. The bits the shifts by
// 1, 2 and 7 push out of c_hi (degree 128 and up again) are first folded
// back into c_hi's top word (D = X1 ^ X0<<63 ^ X0<<62 ^ X0<<57), then the
// result is X3 ^ L ^ L>>1 ^ L>>2 ^ L>>7 over L = <D:X0> (128-bit shifts).
#define GFMUL \
	MOVO X1, X2; PCLMULQDQ $0x00, X0, X2; \
	MOVO X1, X3; PCLMULQDQ $0x11, X0, X3; \
	MOVO X1, X4; PCLMULQDQ $0x01, X0, X4; \
	MOVO X1, X5; PCLMULQDQ $0x10, X0, X5; \
	PXOR X5, X4;                          \
	MOVO X4, X5; PSLLDQ $8, X5; PXOR X5, X2; \
	PSRLDQ $8, X4; PXOR X4, X3;           \
	MOVO X2, X4; PSRLQ $63, X4;           \
	MOVO X3, X5; PSRLQ $63, X5;           \
	PSLLQ $1, X2; PSLLQ $1, X3;           \
	MOVO X4, X6; PSLLDQ $8, X6; PXOR X6, X2; \
	PSRLDQ $8, X4; PXOR X4, X3;           \
	PSLLDQ $8, X5; PXOR X5, X3;           \
	MOVO X2, X4; PSLLQ $63, X4;           \
	MOVO X2, X5; PSLLQ $62, X5;           \
	MOVO X2, X6; PSLLQ $57, X6;           \
	PXOR X5, X4; PXOR X6, X4;             \
	PSLLDQ $8, X4; PXOR X4, X2;           \
	MOVO X2, X4; PSRLQ $1, X4;            \
	MOVO X2, X5; PSRLQ $2, X5;            \
	MOVO X2, X6; PSRLQ $7, X6;            \
	PXOR X5, X4; PXOR X6, X4;             \
	MOVO X2, X5; PSLLQ $63, X5;           \
	MOVO X2, X6; PSLLQ $62, X6;           \
	MOVO X2, X7; PSLLQ $57, X7;           \
	PXOR X6, X5; PXOR X7, X5;             \
	PSRLDQ $8, X5; PXOR X5, X4;           \
	PXOR X2, X4;                          \
	PXOR X4, X3;                          \
	MOVO X3, X1

// func ghashBlocks(h, y *[16]byte, data *byte, n int)
TEXT ·ghashBlocks(SB), NOSPLIT, $0-32
	MOVQ  h+0(FP), AX
	MOVQ  y+8(FP), BX
	MOVQ  data+16(FP), CX
	MOVQ  n+24(FP), DX
	MOVOU reverseBytes<>(SB), X8
	MOVOU 0(AX), X0
	PSHUFB X8, X0
	MOVOU 0(BX), X1
	PSHUFB X8, X1

loop:
	TESTQ DX, DX
	JEQ   done
	MOVOU 0(CX), X2
	PSHUFB X8, X2
	PXOR  X2, X1
	GFMUL
	ADDQ  $16, CX
	DECQ  DX
	JMP   loop

done:
	PSHUFB X8, X1
	MOVOU X1, 0(BX)
	PXOR  X0, X0
	RET
