package synth

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/schemas"
)

// FromSchema makes a valid message of any event type from its schema alone,
// so that a type declared only by its .avsc file can be driven end to end
// without Go code that knows it: event n of user (the subject field), at
// publish time at. Every field gets a value (nullable ones too): strings
// "<field>-<n>", PII strings the canary Canary(s, field, n), numbers n,
// timestamps at, enums their first symbol, bytes the field name.
func FromSchema(s *schemas.Schema, n int, user string, at time.Time) record.Message {
	obj := map[string]any{}
	for i, f := range s.Fields {
		var v any
		switch {
		case i == s.SubjectIndex:
			v = user
		case i == s.DedupeIndex:
			v = fmt.Sprintf("ev-%s-%07d", s.Type, n)
		default:
			switch f.Kind {
			case schemas.KindString:
				v = f.Name + "-" + strconv.Itoa(n)
				if f.PII != nil {
					v = Canary(s, f.Name, n)
				}
			case schemas.KindBytes:
				v = base64.StdEncoding.EncodeToString([]byte(f.Name))
			case schemas.KindInt, schemas.KindLong:
				v = n
			case schemas.KindFloat, schemas.KindDouble:
				v = float64(n) + 0.5
			case schemas.KindBoolean:
				v = n%2 == 0
			case schemas.KindTimestampMillis:
				v = at.UnixMilli()
			case schemas.KindEnum:
				v = f.Symbols[0]
			}
		}
		obj[f.Name] = v
	}
	data, err := json.Marshal(obj)
	if err != nil {
		panic(err) // only plain values above
	}
	return record.Message{
		ID: fmt.Sprintf("msg-%s-v%d-%07d", s.Type, s.Version, n), PublishTime: at,
		Attributes: map[string]string{record.AttrEventType: s.Type, record.AttrSchemaVersion: strconv.Itoa(s.Version)},
		Data:       data,
	}
}

// Canary is the plaintext FromSchema puts in PII string field of event n.
func Canary(s *schemas.Schema, field string, n int) string {
	return fmt.Sprintf("pii-%s-v%d-%s-%d", s.Type, s.Version, field, n)
}
