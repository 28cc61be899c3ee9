package record

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/linkedin/goavro/v2"

	"github.com/lockstream/lockstream/fieldcrypt"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/schemas"
)

// DecryptKeys is what a Decryptor needs from the key service; keyclient.Keys
// satisfies it.
type DecryptKeys interface {
	ForDecrypt(ctx context.Context, subjects, categories []string) ([]keyclient.UserKeys, error)
}

// Field states of a decrypted record.
const (
	StateOK       = "ok"       // every PII field decrypted (or was null)
	StateShredded = "shredded" // the user or a category key is gone: those fields are null
	StateCorrupt  = "corrupt"  // a ciphertext failed to decrypt (tampered, moved): those fields are null
)

// Plain is one decrypted record: column name → value (nil for null,
// string, int64, float64, bool, []byte), in the view schema's order.
type Plain struct {
	Names    []string
	Values   []any
	Shredded []string // PII fields that are null because their key is gone
	Corrupt  []string // PII fields whose ciphertext did not decrypt
}

// State summarizes the record: corrupt wins over shredded.
func (p *Plain) State() string {
	switch {
	case len(p.Corrupt) > 0:
		return StateCorrupt
	case len(p.Shredded) > 0:
		return StateShredded
	}
	return StateOK
}

// Native returns the record as goavro native data for the view schema.
func (p *Plain) Native(s *schemas.Schema) map[string]any {
	m := make(map[string]any, len(p.Names))
	enc := s.Encrypted()
	for i, n := range p.Names {
		v := p.Values[i]
		f := &enc.Fields[i]
		nullable := f.Nullable || f.PII != nil
		switch {
		case v == nil:
			m[n] = nil
		case f.Meta == schemas.MetaPublishTime || f.Meta == schemas.MetaHour:
			m[n] = time.UnixMilli(v.(int64)).UTC()
		case f.Source >= 0 && s.Fields[f.Source].Kind == schemas.KindTimestampMillis:
			t := time.UnixMilli(v.(int64)).UTC()
			if nullable {
				m[n] = goavro.Union("long.timestamp-millis", t)
			} else {
				m[n] = t
			}
		case nullable:
			m[n] = goavro.Union(avroUnionName(s, f), avroNative(s, f, v))
		default:
			m[n] = avroNative(s, f, v)
		}
	}
	return m
}

func avroNative(s *schemas.Schema, f *schemas.EncryptedField, v any) any {
	if f.Source >= 0 && s.Fields[f.Source].Kind == schemas.KindInt {
		return int32(v.(int64))
	}
	if f.Source >= 0 && s.Fields[f.Source].Kind == schemas.KindFloat {
		return float32(v.(float64))
	}
	return v
}

func avroUnionName(s *schemas.Schema, f *schemas.EncryptedField) string {
	if f.Source < 0 {
		return f.Kind.String()
	}
	sf := &s.Fields[f.Source]
	if sf.Kind == schemas.KindEnum {
		return sf.EnumName
	}
	return sf.Kind.String()
}

// ViewSchema is the Avro schema of decrypted records of s: the encrypted
// schema's columns with every PII field back in its source type (nullable:
// a shredded value is null). Namespace lockstream.view.
func ViewSchema(s *schemas.Schema) ([]byte, error) {
	var enc map[string]any
	if err := json.Unmarshal(s.Encrypted().JSON, &enc); err != nil {
		return nil, err
	}
	var src map[string]any
	if err := json.Unmarshal(s.Source(), &src); err != nil {
		return nil, err
	}
	srcTypes := map[string]any{}
	for _, f := range src["fields"].([]any) {
		fm := f.(map[string]any)
		srcTypes[fm["name"].(string)] = fm["type"]
	}
	enc["namespace"] = "lockstream.view"
	for _, f := range enc["fields"].([]any) {
		fm := f.(map[string]any)
		if _, ok := fm["pii"]; !ok {
			continue
		}
		t := srcTypes[fm["name"].(string)]
		if u, ok := t.([]any); ok && len(u) == 2 {
			t = u[1]
		}
		fm["type"] = []any{"null", t}
		fm["default"] = nil
	}
	return json.Marshal(enc)
}

// Decryptor turns encrypted records back into plaintext for an authorized
// service. It is for one goroutine at a time; keys and ciphers may be shared.
type Decryptor struct {
	keys    DecryptKeys
	ciphers *fieldcrypt.Cache
	cols    []Column
	// answers is the room decryptKeysInto answers a batch's keys into:
	// they are used up by the time Decrypt returns.
	answers keyclient.Answers
	who     []int  // per record of a batch: its subject's index
	aad, pt []byte // one field's AAD and plaintext
}

// decryptKeysInto is a DecryptKeys that answers into room the caller
// reuses (keyclient.Client).
type decryptKeysInto interface {
	ForDecryptInto(ctx context.Context, a *keyclient.Answers, subjects, categories []string) ([]keyclient.UserKeys, error)
}

// NewDecryptor builds a decryptor; ciphers may be nil.
func NewDecryptor(keys DecryptKeys, ciphers *fieldcrypt.Cache) *Decryptor {
	if ciphers == nil {
		ciphers = fieldcrypt.NewCache(100_000, 0)
	}
	return &Decryptor{keys: keys, ciphers: ciphers}
}

// Decrypt decrypts a batch of encrypted records of schema s with one key
// lookup. A shredded user or revoked category gives null fields
// (Plain.Shredded); a ciphertext that fails to decrypt gives a null field
// listed in Plain.Corrupt, never garbage and never a panic. A record that is
// not valid Avro is an error for that record (returned in errs).
func (d *Decryptor) Decrypt(ctx context.Context, s *schemas.Schema, recs [][]byte) ([]Plain, []error, error) {
	enc := s.Encrypted()
	lay, err := NewLayout(s)
	if err != nil {
		return nil, nil, err
	}
	if cap(d.cols) < len(enc.Fields)*len(recs) {
		d.cols = make([]Column, len(enc.Fields)*len(recs))
	}
	cols := d.cols[:len(enc.Fields)*len(recs)]
	errs := make([]error, len(recs))
	who := slices.Grow(d.who[:0], len(recs))[:len(recs)]
	d.who = who
	var subjects []string
	idx := map[string]int{}
	var cats []string
	for _, f := range s.PIIFields() {
		cats = appendUnique(cats, f.PII.Category)
	}
	for i, r := range recs {
		c := cols[i*len(enc.Fields) : (i+1)*len(enc.Fields)]
		n, err := DecodeColumns(enc, r, c)
		if err == nil && n != len(r) {
			err = fmt.Errorf("record: %d stray bytes after the record", len(r)-n)
		}
		if err != nil {
			errs[i] = err
			continue
		}
		w, ok := idx[string(c[lay.Subject].Bytes)]
		if !ok {
			sub := string(c[lay.Subject].Bytes)
			w = len(subjects)
			idx[sub] = w
			subjects = append(subjects, sub)
		}
		who[i] = w
	}
	var keys []keyclient.UserKeys
	if len(subjects) > 0 {
		if into, ok := d.keys.(decryptKeysInto); ok {
			keys, err = into.ForDecryptInto(ctx, &d.answers, subjects, cats)
		} else {
			keys, err = d.keys.ForDecrypt(ctx, subjects, cats)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("record: key lookup for %d subjects: %w", len(subjects), err)
		}
		if len(keys) != len(subjects) {
			return nil, nil, fmt.Errorf("record: key service answered %d of %d subjects", len(keys), len(subjects))
		}
	}
	out := make([]Plain, len(recs))
	names := make([]string, len(enc.Fields))
	for i, f := range enc.Fields {
		names[i] = f.Name
	}
	for i := range recs {
		if errs[i] != nil {
			continue
		}
		c := cols[i*len(enc.Fields) : (i+1)*len(enc.Fields)]
		sub := subjects[who[i]]
		uk := &keys[who[i]]
		p := Plain{Names: names, Values: make([]any, len(enc.Fields))}
		for j := range enc.Fields {
			f := &enc.Fields[j]
			col := &c[j]
			if col.Null {
				continue
			}
			if f.PII == nil {
				p.Values[j] = plainColumn(s, f, col)
				continue
			}
			v, state := d.open(s, f, col.Bytes, sub, uk)
			switch state {
			case StateOK:
				p.Values[j] = v
			case StateShredded:
				p.Shredded = append(p.Shredded, f.Name)
			case StateCorrupt:
				p.Corrupt = append(p.Corrupt, f.Name)
			}
		}
		out[i] = p
	}
	return out, errs, nil
}

func (d *Decryptor) open(s *schemas.Schema, f *schemas.EncryptedField, ct []byte, subject string, uk *keyclient.UserKeys) (any, string) {
	version, err := fieldcrypt.VersionOf(ct)
	if err != nil {
		return nil, StateCorrupt
	}
	if uk.Err != nil {
		return nil, StateShredded
	}
	var key fieldcrypt.CategoryKey
	for _, k := range uk.Keys {
		if k.Category == f.PII.Category && k.Version == version {
			key = k
		}
	}
	if key.Version == 0 {
		return nil, StateShredded
	}
	c, err := d.ciphers.Cipher(key, f.PII.Deterministic)
	if err != nil {
		return nil, StateCorrupt
	}
	d.aad = fieldcrypt.AppendAAD(d.aad[:0], s.Type, f.Name, subject)
	pt, err := c.AppendDecrypt(d.pt[:0], ct, d.aad, f.PII.Deterministic)
	if err != nil {
		return nil, StateCorrupt
	}
	d.pt = pt[:0] // reused: what is returned below is a copy
	sf := &s.Fields[f.Source]
	switch sf.Kind {
	case schemas.KindInt, schemas.KindLong:
		n, err := strconv.ParseInt(string(pt), 10, 64)
		if err != nil {
			return nil, StateCorrupt
		}
		return n, StateOK
	case schemas.KindBytes:
		return append([]byte(nil), pt...), StateOK // nil when empty, as plainColumn
	}
	return string(pt), StateOK
}

func plainColumn(s *schemas.Schema, f *schemas.EncryptedField, c *Column) any {
	switch f.Kind {
	case schemas.KindString:
		return string(c.Bytes)
	case schemas.KindBytes:
		return append([]byte(nil), c.Bytes...)
	case schemas.KindFloat, schemas.KindDouble:
		return c.Float
	case schemas.KindBoolean:
		return c.Int == 1
	case schemas.KindEnum:
		if f.Source >= 0 {
			if sy := s.Fields[f.Source].Symbols; c.Int >= 0 && int(c.Int) < len(sy) {
				return sy[c.Int]
			}
		}
		return nil
	}
	return c.Int
}

// ErrNoKeys is returned when a decryptor is built without a key source.
var ErrNoKeys = errors.New("record: no key source")
