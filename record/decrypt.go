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
	// batch, answers and idx are room a call reuses: the decoded records,
	// the keys decryptKeysInto answers into and the subjects' index. They
	// are used up by the time it returns.
	batch   batch
	answers keyclient.Answers
	idx     map[string]int
	aad, pt []byte // one field's AAD and plaintext
	// carried counts the call's ciphers answered from carried keys, added
	// to the cipher cache's hits when it returns (AddCarried).
	carried uint64
	// what the last schema decrypted needs, built when the schema changes
	layoutOf *schemas.Schema
	lay      *Layout
	names    [][]byte // JSON-quoted column names
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
	defer d.ciphers.AddCarried(&d.carried)
	b, err := d.prepare(ctx, s, recs)
	if err != nil {
		return nil, nil, err
	}
	enc := s.Encrypted()
	errs := slices.Clone(b.errs)
	out := make([]Plain, len(recs))
	names := make([]string, len(enc.Fields))
	for i, f := range enc.Fields {
		names[i] = f.Name
	}
	for i := range recs {
		if errs[i] != nil {
			continue
		}
		c := b.record(i)
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
			v, state := d.open(s, f, col.Bytes, b, i)
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

// Tally counts what AppendJSONLines decrypted.
type Tally struct {
	Records                  int64 // records written
	Shredded, ShreddedFields int64 // records with PII fields null because their key is gone, and those fields
	Corrupt, CorruptFields   int64 // records with ciphertexts that did not decrypt, and those fields
	Unreadable               int64 // records that are not valid Avro of the schema: skipped
}

// Add counts p, a record Decrypt returned, as AppendJSONLines counts it.
func (t *Tally) Add(p *Plain) { t.count(len(p.Shredded), len(p.Corrupt)) }

// AddTally adds what u counted to t.
func (t *Tally) AddTally(u Tally) {
	t.Records += u.Records
	t.Shredded += u.Shredded
	t.ShreddedFields += u.ShreddedFields
	t.Corrupt += u.Corrupt
	t.CorruptFields += u.CorruptFields
	t.Unreadable += u.Unreadable
}

// count counts a record written with that many shredded and corrupt fields.
func (t *Tally) count(shredded, corrupt int) {
	t.Records++
	if shredded > 0 {
		t.Shredded++
		t.ShreddedFields += int64(shredded)
	}
	if corrupt > 0 {
		t.Corrupt++
		t.CorruptFields += int64(corrupt)
	}
}

// AppendJSONLines decrypts a batch as Decrypt does and appends every
// readable record to b as one line: the bytes Plain.AppendJSON makes of
// it, then a newline. It builds no Plain (no value boxed per field, no
// map), which is what a view writing NDJSON spends most of its time on
// otherwise. Unreadable records are skipped; t counts every record.
func (d *Decryptor) AppendJSONLines(ctx context.Context, s *schemas.Schema, b []byte, recs [][]byte, t *Tally) ([]byte, error) {
	defer d.ciphers.AddCarried(&d.carried)
	bt, err := d.prepare(ctx, s, recs)
	if err != nil {
		return b, err
	}
	enc := s.Encrypted()
	for i := range recs {
		if bt.errs[i] != nil {
			t.Unreadable++
			continue
		}
		c := bt.record(i)
		var shredded, corrupt int
		b = append(b, '{')
		for j := range enc.Fields {
			if j > 0 {
				b = append(b, ',')
			}
			b = append(append(b, d.names[j]...), ':')
			f, col := &enc.Fields[j], &c[j]
			switch {
			case col.Null:
				b = append(b, "null"...)
			case f.PII == nil:
				if b, err = appendColumnJSON(b, s, f, col); err != nil {
					return b, err
				}
			default:
				pt, state := d.openBytes(s, f, col.Bytes, bt, i)
				if state == StateOK {
					if b, state = appendPlainJSON(b, &s.Fields[f.Source], pt); state == StateOK {
						continue
					}
				}
				b = append(b, "null"...)
				if state == StateShredded {
					shredded++
				} else {
					corrupt++
				}
			}
		}
		b = append(b, '}', '\n')
		t.count(shredded, corrupt)
	}
	return b, nil
}

// appendColumnJSON appends a non-PII column's value as AppendJSON writes
// plainColumn's.
func appendColumnJSON(b []byte, s *schemas.Schema, f *schemas.EncryptedField, c *Column) ([]byte, error) {
	switch f.Kind {
	case schemas.KindString:
		return appendJSONString(b, c.Bytes), nil
	case schemas.KindBytes:
		return appendJSONBytes(b, c.Bytes), nil
	case schemas.KindFloat, schemas.KindDouble:
		j, err := json.Marshal(c.Float) // json's own float formatting, as AppendJSON
		return append(b, j...), err
	case schemas.KindBoolean:
		return strconv.AppendBool(b, c.Int == 1), nil
	case schemas.KindEnum:
		if f.Source >= 0 {
			if sy := s.Fields[f.Source].Symbols; c.Int >= 0 && int(c.Int) < len(sy) {
				return appendJSONString(b, sy[c.Int]), nil
			}
		}
		return append(b, "null"...), nil
	}
	return strconv.AppendInt(b, c.Int, 10), nil
}

// appendPlainJSON appends a PII field's decrypted plaintext as AppendJSON
// writes what open returns for it; a plaintext that is not of the field's
// kind is corrupt (nothing appended).
func appendPlainJSON(b []byte, sf *schemas.Field, pt []byte) ([]byte, string) {
	switch sf.Kind {
	case schemas.KindInt, schemas.KindLong:
		n, err := strconv.ParseInt(string(pt), 10, 64)
		if err != nil {
			return b, StateCorrupt
		}
		return strconv.AppendInt(b, n, 10), StateOK
	case schemas.KindBytes:
		return appendJSONBytes(b, pt), StateOK
	}
	return appendJSONString(b, pt), StateOK
}

// batch is a batch of records decoded into columns, with its subjects'
// keys: what Decrypt and AppendJSONLines share. It lives in the
// Decryptor's room until the next call.
type batch struct {
	width    int      // columns per record
	cols     []Column // record i's are cols[i*width:(i+1)*width]
	errs     []error  // per record: not valid Avro of the schema
	who      []int    // per record: its subject's index in subjects and keys
	subjects []string
	keys     []keyclient.UserKeys
}

func (b *batch) record(i int) []Column { return b.cols[i*b.width : (i+1)*b.width] }

// prepare decodes recs and looks up the keys of their subjects, once each.
func (d *Decryptor) prepare(ctx context.Context, s *schemas.Schema, recs [][]byte) (*batch, error) {
	if err := d.useSchema(s); err != nil {
		return nil, err
	}
	enc := s.Encrypted()
	b := &d.batch
	b.width = len(enc.Fields)
	if cap(b.cols) < b.width*len(recs) {
		b.cols = make([]Column, b.width*len(recs))
	}
	b.cols = b.cols[:b.width*len(recs)]
	b.errs = slices.Grow(b.errs[:0], len(recs))[:len(recs)]
	clear(b.errs)
	b.who = slices.Grow(b.who[:0], len(recs))[:len(recs)]
	b.subjects, b.keys = b.subjects[:0], nil
	if d.idx == nil {
		d.idx = map[string]int{}
	}
	clear(d.idx)
	subject := d.lay.Subject
	for i, r := range recs {
		c := b.record(i)
		n, err := DecodeColumns(enc, r, c)
		if err == nil && n != len(r) {
			err = fmt.Errorf("record: %d stray bytes after the record", len(r)-n)
		}
		if err != nil {
			b.errs[i] = err
			continue
		}
		w, ok := d.idx[string(c[subject].Bytes)]
		if !ok {
			sub := string(c[subject].Bytes)
			w = len(b.subjects)
			d.idx[sub] = w
			b.subjects = append(b.subjects, sub)
		}
		b.who[i] = w
	}
	if len(b.subjects) == 0 {
		return b, nil
	}
	var err error
	if into, ok := d.keys.(decryptKeysInto); ok {
		b.keys, err = into.ForDecryptInto(ctx, &d.answers, b.subjects, s.Categories())
	} else {
		b.keys, err = d.keys.ForDecrypt(ctx, b.subjects, s.Categories())
	}
	if err != nil {
		return nil, fmt.Errorf("record: key lookup for %d subjects: %w", len(b.subjects), err)
	}
	if len(b.keys) != len(b.subjects) {
		return nil, fmt.Errorf("record: key service answered %d of %d subjects", len(b.keys), len(b.subjects))
	}
	return b, nil
}

// useSchema makes d.lay and d.names s's, built when s is not the last
// schema decrypted.
func (d *Decryptor) useSchema(s *schemas.Schema) error {
	if d.layoutOf == s {
		return nil
	}
	lay, err := NewLayout(s)
	if err != nil {
		return err
	}
	d.lay, d.names = lay, d.names[:0]
	for _, f := range s.Encrypted().Fields {
		d.names = append(d.names, appendJSONString(nil, f.Name))
	}
	d.layoutOf = s
	return nil
}

// open decrypts one PII field of record i of b into its value.
func (d *Decryptor) open(s *schemas.Schema, f *schemas.EncryptedField, ct []byte, b *batch, i int) (any, string) {
	pt, state := d.openBytes(s, f, ct, b, i)
	if state != StateOK {
		return nil, state
	}
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

// openBytes decrypts one PII field of record i of b: its plaintext, valid
// until the next call.
func (d *Decryptor) openBytes(s *schemas.Schema, f *schemas.EncryptedField, ct []byte, b *batch, i int) ([]byte, string) {
	version, err := fieldcrypt.VersionOf(ct)
	if err != nil {
		return nil, StateCorrupt
	}
	uk := &b.keys[b.who[i]]
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
	c, err := d.ciphers.CipherCounting(key, f.PII.Deterministic, &d.carried)
	if err != nil {
		return nil, StateCorrupt
	}
	d.aad = fieldcrypt.AppendAAD(d.aad[:0], s.Type, f.Name, b.subjects[b.who[i]])
	pt, err := c.AppendDecrypt(d.pt[:0], ct, d.aad, f.PII.Deterministic)
	if err != nil {
		return nil, StateCorrupt
	}
	d.pt = pt[:0] // reused: callers copy what they keep
	return pt, StateOK
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
