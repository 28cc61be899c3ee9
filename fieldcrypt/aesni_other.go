//go:build !amd64 || purego

package fieldcrypt

// useAESNI is false where aesni_amd64.s is not built: AES-GCM is
// crypto/cipher's and AES-SIV's blocks go through crypto/aes.
const useAESNI = false

func expandKey256(*byte, *schedule)                 { panic("fieldcrypt: no AES-NI") }
func encryptBlocks256(*schedule, *byte, *byte, int) { panic("fieldcrypt: no AES-NI") }
func ghashBlocks(*[16]byte, *[16]byte, *byte, int)  { panic("fieldcrypt: no AES-NI") }
