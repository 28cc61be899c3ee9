package record

import (
	"encoding/binary"
	"math"
)

// Avro binary encoding of the primitives an encrypted record uses
// (https://avro.apache.org/docs/current/specification/#binary-encoding).
// Records are encoded here rather than through goavro's map-based codec
// because this is the per-event hot path; tests decode every record we
// encode with goavro to prove the bytes are standard Avro.

func appendLong(b []byte, v int64) []byte {
	u := uint64(v<<1) ^ uint64(v>>63) // zigzag
	return binary.AppendUvarint(b, u)
}

func appendBytes(b, v []byte) []byte {
	b = appendLong(b, int64(len(v)))
	return append(b, v...)
}

func appendString(b []byte, v string) []byte {
	b = appendLong(b, int64(len(v)))
	return append(b, v...)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

func appendFloat(b []byte, v float32) []byte {
	return binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
}

func appendDouble(b []byte, v float64) []byte {
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
}
