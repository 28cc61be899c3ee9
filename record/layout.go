package record

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/lockstream/lockstream/schemas"
)

// Column is one decoded column of an encrypted record. Bytes aliases the
// record's buffer (strings, bytes and ciphertexts).
type Column struct {
	Null  bool
	Int   int64 // int, long, timestamp-millis, enum index, boolean (0/1)
	Float float64
	Bytes []byte
}

var errShort = errors.New("record truncated")

// DecodeColumns decodes one encrypted record at the start of b into cols
// (len(enc.Fields) long) and returns its length in bytes.
func DecodeColumns(enc *schemas.EncryptedSchema, b []byte, cols []Column) (int, error) {
	if len(cols) < len(enc.Fields) {
		return 0, fmt.Errorf("record: %d columns for %d fields", len(cols), len(enc.Fields))
	}
	return decode(enc, b, cols)
}

// RecordLen checks one encrypted record at the start of b as
// DecodeColumns does and returns its length, keeping no column.
func RecordLen(enc *schemas.EncryptedSchema, b []byte) (int, error) {
	return decode(enc, b, nil)
}

// decode is DecodeColumns, into nothing when cols is nil: a column that is
// not kept is not written (a column holds a pointer, and writing one into
// the heap while the collector marks costs a write barrier).
func decode(enc *schemas.EncryptedSchema, b []byte, cols []Column) (int, error) {
	p := 0
	for i := range enc.Fields {
		f := &enc.Fields[i]
		var scratch Column
		c := &scratch
		if cols != nil {
			c = &cols[i]
			*c = Column{}
		}
		if f.Nullable {
			br, n := binary.Uvarint(b[p:])
			if n <= 0 || (br != 0 && br != 2) {
				return 0, fmt.Errorf("record: field %s: bad union branch", f.Name)
			}
			p += n
			if br == 0 {
				c.Null = true
				continue
			}
		}
		switch f.Kind {
		case schemas.KindString, schemas.KindBytes:
			l, n := varlong(b[p:])
			if n <= 0 || l < 0 || int64(len(b)-p-n) < l {
				return 0, fmt.Errorf("record: field %s: %w", f.Name, errShort)
			}
			p += n
			c.Bytes = b[p : p+int(l)]
			p += int(l)
		case schemas.KindInt, schemas.KindLong, schemas.KindTimestampMillis, schemas.KindEnum:
			v, n := varlong(b[p:])
			if n <= 0 {
				return 0, fmt.Errorf("record: field %s: %w", f.Name, errShort)
			}
			c.Int = v
			p += n
		case schemas.KindFloat:
			if len(b)-p < 4 {
				return 0, fmt.Errorf("record: field %s: %w", f.Name, errShort)
			}
			c.Float = float64(math.Float32frombits(binary.LittleEndian.Uint32(b[p:])))
			p += 4
		case schemas.KindDouble:
			if len(b)-p < 8 {
				return 0, fmt.Errorf("record: field %s: %w", f.Name, errShort)
			}
			c.Float = math.Float64frombits(binary.LittleEndian.Uint64(b[p:]))
			p += 8
		case schemas.KindBoolean:
			if len(b)-p < 1 || b[p] > 1 {
				return 0, fmt.Errorf("record: field %s: bad boolean", f.Name)
			}
			c.Int = int64(b[p])
			p++
		default:
			return 0, fmt.Errorf("record: field %s: unsupported kind %v", f.Name, f.Kind)
		}
	}
	return p, nil
}

func varlong(b []byte) (int64, int) {
	u, n := binary.Uvarint(b)
	return int64(u>>1) ^ -int64(u&1), n
}

// Layout indexes the columns of one encrypted schema that pipelines read.
type Layout struct {
	Enc         *schemas.EncryptedSchema
	Dedupe      int // column of the dedupe key
	Subject     int
	KeyVersion  int
	PublishTime int
	Hour        int
}

// NewLayout finds the columns of s's encrypted schema.
func NewLayout(s *schemas.Schema) (*Layout, error) {
	enc := s.Encrypted()
	l := &Layout{Enc: enc, Dedupe: -1, Subject: -1, KeyVersion: -1, PublishTime: -1, Hour: -1}
	for i, f := range enc.Fields {
		switch {
		case f.Source == s.DedupeIndex && f.Meta == "":
			l.Dedupe = i
		case f.Meta == schemas.MetaSubject:
			l.Subject = i
		case f.Meta == schemas.MetaKeyVersion:
			l.KeyVersion = i
		case f.Meta == schemas.MetaPublishTime:
			l.PublishTime = i
		case f.Meta == schemas.MetaHour:
			l.Hour = i
		}
	}
	if l.Dedupe < 0 || l.Subject < 0 || l.KeyVersion < 0 || l.PublishTime < 0 || l.Hour < 0 {
		return nil, fmt.Errorf("record: %s: encrypted schema lacks a required column", s)
	}
	return l, nil
}

// Skip returns a function that measures the first record of a buffer, for
// NewOCFReader.
func (l *Layout) Skip() func([]byte) (int, error) {
	return func(b []byte) (int, error) { return RecordLen(l.Enc, b) }
}

// SkipInto is Skip that also decodes each record it measures into cols
// (len(l.Enc.Fields) long): after OCFReader.Next, cols are the columns of
// the record it returned, which is then decoded once, not twice.
func (l *Layout) SkipInto(cols []Column) (func([]byte) (int, error), error) {
	if len(cols) < len(l.Enc.Fields) {
		return nil, fmt.Errorf("record: %d columns for %d fields", len(cols), len(l.Enc.Fields))
	}
	return func(b []byte) (int, error) { return decode(l.Enc, b, cols) }, nil
}
