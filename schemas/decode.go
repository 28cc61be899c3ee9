package schemas

import (
	"encoding/base64"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"
	"unsafe"
)

// MaxDepth is the deepest nesting Decode accepts; the event object itself is
// depth 1. Deeper input is rejected with too_deep before it is read further.
const MaxDepth = 32

// Range of timestamp-millis values: 0000-01-01T00:00:00.000Z to 9999-12-31T23:59:59.999Z.
const (
	MinTimestampMillis int64 = -62167219200000
	MaxTimestampMillis int64 = 253402300799999
)

// Value is one decoded field. Which member is meaningful depends on the field's
// Kind: Str (string, bytes as raw decoded bytes, enum symbol), Int (int, long,
// timestamp-millis as epoch milliseconds UTC), Float (float, double), Bool.
type Value struct {
	Present bool // the member was in the payload (false: filled from the default)
	Null    bool // the value is null (nullable fields only)
	Str     string
	Int     int64
	Float   float64
	Bool    bool
}

// Event is a decoded payload: Values[i] belongs to Schema.Fields[i]. Reuse one
// Event across Decode calls to avoid allocations; strings handed out by an
// earlier Decode stay valid.
type Event struct {
	Values []Value

	buf   []byte // decoded string bytes of the current payload
	spans []span // where each field's string lives in buf
	kbuf  []byte // scratch for keys with escapes
}

type span struct {
	off, n int
	set    bool
}

// Decode parses payload, a JSON object holding one event, checks it against s
// and fills ev. Errors are *ValidationError and never contain payload bytes.
// On error the content of ev is unspecified.
//
// Precedence: syntax problems (malformed_json, invalid_utf8, too_deep) win over
// everything, since the whole payload is always scanned; then the first
// field-level problem in document order; then the first missing field in
// schema order.
func (s *Schema) Decode(payload []byte, ev *Event) error {
	n := len(s.Fields)
	if cap(ev.Values) < n {
		ev.Values = make([]Value, n)
	} else {
		ev.Values = ev.Values[:n]
		clear(ev.Values)
	}
	if cap(ev.spans) < n {
		ev.spans = make([]span, n)
	} else {
		ev.spans = ev.spans[:n]
		clear(ev.spans)
	}
	ev.buf = ev.buf[:0]
	d := decoder{s: s, p: payload, ev: ev}
	if err := d.object(); err != nil {
		return err
	}
	if d.err != nil {
		return d.err
	}
	for i := range s.Fields {
		v := &ev.Values[i]
		if v.Present {
			continue
		}
		f := &s.Fields[i]
		if !f.HasDefault {
			return &ValidationError{Reason: ReasonMissingField, Path: f.path, Rule: "required field is missing"}
		}
		*v = f.def
	}
	if len(ev.buf) > 0 {
		str := string(ev.buf) // the one allocation: every string field is a substring
		for i := range ev.spans {
			if sp := ev.spans[i]; sp.set {
				ev.Values[i].Str = str[sp.off : sp.off+sp.n]
			}
		}
	}
	return nil
}

type decoder struct {
	s    *Schema
	p    []byte
	i    int
	next int // predicted index of the next field (members usually come in schema order)
	ev   *Event
	err  *ValidationError // first field-level error; scanning continues for syntax errors
}

func (d *decoder) syntax(format string, args ...any) *ValidationError {
	return &ValidationError{Reason: ReasonMalformedJSON, Path: "$", Rule: fmt.Sprintf(format, args...)}
}

func (d *decoder) unexpected(what string) *ValidationError {
	if d.i >= len(d.p) {
		return d.syntax("unexpected end of input, expected %s", what)
	}
	return d.syntax("expected %s at offset %d", what, d.i)
}

func (d *decoder) semantic(reason, path, rule string) {
	if d.err == nil {
		d.err = &ValidationError{Reason: reason, Path: path, Rule: rule}
	}
}

func (d *decoder) ws() {
	for d.i < len(d.p) {
		switch d.p[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *decoder) object() *ValidationError {
	d.ws()
	if d.i >= len(d.p) {
		return d.syntax("empty payload")
	}
	if d.p[d.i] != '{' {
		if err := d.skip(1); err != nil {
			return err
		}
		if err := d.end(); err != nil {
			return err
		}
		d.semantic(ReasonWrongType, "$", "expected a JSON object")
		return nil
	}
	d.i++
	d.ws()
	if d.i < len(d.p) && d.p[d.i] == '}' {
		d.i++
		return d.end()
	}
	for member := 1; ; member++ {
		if d.i >= len(d.p) || d.p[d.i] != '"' {
			return d.unexpected("a string key")
		}
		key, err := d.key()
		if err != nil {
			return err
		}
		d.ws()
		if d.i >= len(d.p) || d.p[d.i] != ':' {
			return d.unexpected("':'")
		}
		d.i++
		d.ws()
		if d.i >= len(d.p) {
			return d.unexpected("a value")
		}
		idx := d.lookup(key)
		switch {
		case idx < 0:
			if d.s.UnknownFields != UnknownFieldsIgnore && d.err == nil {
				d.semantic(ReasonUnknownField, "$", fmt.Sprintf("member #%d is not a field of %s (unknown_fields=reject)", member, d.s))
			}
			err = d.skip(2)
		case d.ev.Values[idx].Present:
			d.semantic(ReasonDuplicateField, d.s.Fields[idx].path, "field appears more than once")
			err = d.skip(2)
		default:
			d.ev.Values[idx].Present = true
			err = d.value(idx)
		}
		if err != nil {
			return err
		}
		d.ws()
		if d.i >= len(d.p) {
			return d.unexpected("',' or '}'")
		}
		switch d.p[d.i] {
		case ',':
			d.i++
			d.ws()
		case '}':
			d.i++
			return d.end()
		default:
			return d.unexpected("',' or '}'")
		}
	}
}

func (d *decoder) end() *ValidationError {
	d.ws()
	if d.i != len(d.p) {
		return d.syntax("trailing data after the JSON value at offset %d", d.i)
	}
	return nil
}

func (d *decoder) lookup(key []byte) int {
	fs := d.s.Fields
	if d.next < len(fs) && string(key) == fs[d.next].Name {
		d.next++
		return d.next - 1
	}
	if i, ok := d.s.byName[string(key)]; ok {
		d.next = i + 1
		return i
	}
	return -1
}

// key reads an object key. The result aliases the payload or ev.kbuf.
func (d *decoder) key() ([]byte, *ValidationError) {
	start := d.i + 1
	for j := start; j < len(d.p); j++ {
		c := d.p[j]
		if c == '"' {
			d.i = j + 1
			return d.p[start:j], nil
		}
		if !strSafe[c] {
			break
		}
	}
	d.ev.kbuf = d.ev.kbuf[:0]
	if err := d.str(&d.ev.kbuf); err != nil {
		return nil, err
	}
	return d.ev.kbuf, nil
}

// strSafe marks bytes that stand for themselves inside a JSON string.
var strSafe = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// str reads a JSON string at d.i (which holds '"'), unescaping into *dst if dst
// is not nil. It enforces valid UTF-8 and rejects lone surrogates.
func (d *decoder) str(dst *[]byte) *ValidationError {
	p := d.p
	i := d.i + 1
	for {
		start := i
		for i < len(p) && strSafe[p[i]] {
			i++
		}
		if dst != nil {
			*dst = append(*dst, p[start:i]...)
		}
		if i >= len(p) {
			d.i = i
			return d.syntax("unterminated string")
		}
		c := p[i]
		switch {
		case c == '"':
			d.i = i + 1
			return nil
		case c == '\\':
			if i+1 >= len(p) {
				d.i = i
				return d.syntax("unterminated string")
			}
			var out byte
			switch p[i+1] {
			case '"', '\\', '/':
				out = p[i+1]
			case 'b':
				out = '\b'
			case 'f':
				out = '\f'
			case 'n':
				out = '\n'
			case 'r':
				out = '\r'
			case 't':
				out = '\t'
			case 'u':
				r, ok := hex4(p, i+2)
				if !ok {
					return d.syntax("invalid \\u escape at offset %d", i)
				}
				i += 6
				switch {
				case r >= 0xDC00 && r <= 0xDFFF:
					return &ValidationError{Reason: ReasonInvalidUTF8, Path: "$", Rule: fmt.Sprintf("lone low surrogate escape at offset %d", i-6)}
				case r >= 0xD800 && r < 0xDC00:
					if i+1 >= len(p) || p[i] != '\\' || p[i+1] != 'u' {
						return &ValidationError{Reason: ReasonInvalidUTF8, Path: "$", Rule: fmt.Sprintf("high surrogate escape without a low surrogate at offset %d", i-6)}
					}
					lo, ok := hex4(p, i+2)
					if !ok {
						return d.syntax("invalid \\u escape at offset %d", i)
					}
					if lo < 0xDC00 || lo > 0xDFFF {
						return &ValidationError{Reason: ReasonInvalidUTF8, Path: "$", Rule: fmt.Sprintf("high surrogate escape without a low surrogate at offset %d", i-6)}
					}
					i += 6
					r = 0x10000 + (r-0xD800)<<10 + (lo - 0xDC00)
				}
				if dst != nil {
					*dst = utf8.AppendRune(*dst, r)
				}
				continue
			default:
				return d.syntax("invalid escape at offset %d", i)
			}
			if dst != nil {
				*dst = append(*dst, out)
			}
			i += 2
		case c < 0x20:
			return d.syntax("control character in string at offset %d", i)
		default:
			r, size := utf8.DecodeRune(p[i:])
			if r == utf8.RuneError && size <= 1 {
				return &ValidationError{Reason: ReasonInvalidUTF8, Path: "$", Rule: fmt.Sprintf("invalid UTF-8 in string at offset %d", i)}
			}
			if dst != nil {
				*dst = append(*dst, p[i:i+size]...)
			}
			i += size
		}
	}
}

func hex4(p []byte, i int) (rune, bool) {
	if i+4 > len(p) {
		return 0, false
	}
	var r rune
	for _, c := range p[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// number scans a JSON number at d.i and returns its bytes and whether it is an
// integer literal (no fraction, no exponent).
func (d *decoder) number() ([]byte, bool, *ValidationError) {
	p := d.p
	start, i := d.i, d.i
	if i < len(p) && p[i] == '-' {
		i++
	}
	switch {
	case i < len(p) && p[i] == '0':
		i++
	case i < len(p) && p[i] >= '1' && p[i] <= '9':
		for i < len(p) && p[i] >= '0' && p[i] <= '9' {
			i++
		}
	default:
		d.i = i
		return nil, false, d.unexpected("a digit")
	}
	isInt := true
	if i < len(p) && p[i] == '.' {
		i++
		if i >= len(p) || p[i] < '0' || p[i] > '9' {
			d.i = i
			return nil, false, d.unexpected("a digit after '.'")
		}
		for i < len(p) && p[i] >= '0' && p[i] <= '9' {
			i++
		}
		isInt = false
	}
	if i < len(p) && (p[i] == 'e' || p[i] == 'E') {
		i++
		if i < len(p) && (p[i] == '+' || p[i] == '-') {
			i++
		}
		if i >= len(p) || p[i] < '0' || p[i] > '9' {
			d.i = i
			return nil, false, d.unexpected("a digit in the exponent")
		}
		for i < len(p) && p[i] >= '0' && p[i] <= '9' {
			i++
		}
		isInt = false
	}
	d.i = i
	return p[start:i], isInt, nil
}

// parseInt parses an integer literal already checked by number.
func parseInt(b []byte) (int64, bool) {
	neg := b[0] == '-'
	if neg {
		b = b[1:]
	}
	var u uint64
	for _, c := range b {
		if u > (math.MaxUint64-9)/10 {
			return 0, false
		}
		u = u*10 + uint64(c-'0')
	}
	if neg {
		if u > 1<<63 {
			return 0, false
		}
		return int64(-u), true
	}
	if u > math.MaxInt64 {
		return 0, false
	}
	return int64(u), true
}

func (d *decoder) literal(lit string) *ValidationError {
	if len(d.p)-d.i < len(lit) || string(d.p[d.i:d.i+len(lit)]) != lit {
		return d.syntax("invalid literal at offset %d", d.i)
	}
	d.i += len(lit)
	return nil
}

// skip validates and skips any JSON value. depth is the nesting depth the
// value would have if it were a container.
func (d *decoder) skip(depth int) *ValidationError {
	if d.i >= len(d.p) {
		return d.unexpected("a value")
	}
	switch c := d.p[d.i]; c {
	case '"':
		return d.str(nil)
	case 't':
		return d.literal("true")
	case 'f':
		return d.literal("false")
	case 'n':
		return d.literal("null")
	case '{', '[':
		if depth > MaxDepth {
			return &ValidationError{Reason: ReasonTooDeep, Path: "$", Rule: fmt.Sprintf("nesting deeper than %d at offset %d", MaxDepth, d.i)}
		}
		closer := byte('}')
		if c == '[' {
			closer = ']'
		}
		d.i++
		d.ws()
		if d.i < len(d.p) && d.p[d.i] == closer {
			d.i++
			return nil
		}
		for {
			if c == '{' {
				if d.i >= len(d.p) || d.p[d.i] != '"' {
					return d.unexpected("a string key")
				}
				if err := d.str(nil); err != nil {
					return err
				}
				d.ws()
				if d.i >= len(d.p) || d.p[d.i] != ':' {
					return d.unexpected("':'")
				}
				d.i++
				d.ws()
			}
			if err := d.skip(depth + 1); err != nil {
				return err
			}
			d.ws()
			if d.i >= len(d.p) {
				return d.unexpected("',' or a closing bracket")
			}
			switch d.p[d.i] {
			case ',':
				d.i++
				d.ws()
			case closer:
				d.i++
				return nil
			default:
				return d.unexpected("',' or a closing bracket")
			}
		}
	default:
		if c == '-' || (c >= '0' && c <= '9') {
			_, _, err := d.number()
			return err
		}
		return d.syntax("unexpected character at offset %d", d.i)
	}
}

// value decodes the member value for field idx at d.i.
func (d *decoder) value(idx int) *ValidationError {
	f := &d.s.Fields[idx]
	v := &d.ev.Values[idx]
	c := d.p[d.i]
	if c == 'n' {
		if err := d.literal("null"); err != nil {
			return err
		}
		if f.Nullable {
			v.Null = true
		} else {
			d.semantic(ReasonWrongType, f.path, "null in a required field, expected "+f.Kind.String())
		}
		return nil
	}
	if d.err != nil { // already rejected: only check syntax from here on
		return d.skip(2)
	}
	switch f.Kind {
	case KindString, KindBytes, KindEnum:
		if c != '"' {
			break
		}
		buf := &d.ev.buf
		off := len(*buf)
		if err := d.str(buf); err != nil {
			return err
		}
		switch f.Kind {
		case KindString:
			n := len(*buf) - off
			if n == 0 && (idx == d.s.SubjectIndex || idx == d.s.DedupeIndex) {
				d.semantic(ReasonInvalidValue, f.path, "must not be empty")
			}
			d.ev.spans[idx] = span{off: off, n: n, set: true}
		case KindBytes:
			enc := (*buf)[off:]
			need := base64.StdEncoding.DecodedLen(len(enc))
			*buf = append(*buf, make([]byte, need)...)
			enc = (*buf)[off : off+len(enc)]
			out := (*buf)[off+len(enc):]
			m, err := base64.StdEncoding.Strict().Decode(out, enc)
			if err != nil {
				*buf = (*buf)[:off]
				d.semantic(ReasonInvalidValue, f.path, "expected standard base64 (with padding)")
				return nil
			}
			copy((*buf)[off:], out[:m])
			*buf = (*buf)[:off+m]
			d.ev.spans[idx] = span{off: off, n: m, set: true}
		case KindEnum:
			sym := (*buf)[off:]
			found := false
			for _, s := range f.Symbols {
				if string(sym) == s {
					v.Str, found = s, true
					break
				}
			}
			*buf = (*buf)[:off]
			if !found {
				d.semantic(ReasonInvalidValue, f.path, "not one of the enum symbols")
			}
		}
		return nil
	case KindInt, KindLong, KindTimestampMillis:
		if c == '"' && f.Kind == KindTimestampMillis {
			buf := &d.ev.buf
			off := len(*buf)
			if err := d.str(buf); err != nil {
				return err
			}
			ms, ok := parseRFC3339Millis((*buf)[off:])
			*buf = (*buf)[:off]
			if !ok {
				d.semantic(ReasonInvalidValue, f.path, "expected an RFC 3339 timestamp (e.g. 2026-11-23T06:12:00.000Z, years 0000-9999)")
				return nil
			}
			v.Int = ms
			return nil
		}
		if c != '-' && (c < '0' || c > '9') {
			break
		}
		b, isInt, err := d.number()
		if err != nil {
			return err
		}
		if !isInt {
			d.semantic(ReasonWrongType, f.path, "expected "+f.Kind.String()+" (an integer literal, no fraction or exponent)")
			return nil
		}
		n, ok := parseInt(b)
		switch {
		case !ok:
			d.semantic(ReasonOutOfRange, f.path, "integer does not fit in 64 bits")
		case f.Kind == KindInt && (n < math.MinInt32 || n > math.MaxInt32):
			d.semantic(ReasonOutOfRange, f.path, "integer does not fit in an Avro int (32 bits)")
		case f.Kind == KindTimestampMillis && (n < MinTimestampMillis || n > MaxTimestampMillis):
			d.semantic(ReasonOutOfRange, f.path, "epoch milliseconds outside years 0000-9999")
		default:
			v.Int = n
		}
		return nil
	case KindFloat, KindDouble:
		if c != '-' && (c < '0' || c > '9') {
			break
		}
		b, _, err := d.number()
		if err != nil {
			return err
		}
		bits := 64
		if f.Kind == KindFloat {
			bits = 32
		}
		x, perr := strconv.ParseFloat(unsafe.String(unsafe.SliceData(b), len(b)), bits)
		if perr != nil {
			d.semantic(ReasonOutOfRange, f.path, "number does not fit in a "+f.Kind.String())
			return nil
		}
		v.Float = x
		return nil
	case KindBoolean:
		switch c {
		case 't':
			v.Bool = true
			return d.literal("true")
		case 'f':
			return d.literal("false")
		}
	}
	d.semantic(ReasonWrongType, f.path, "expected "+expectName(f))
	return d.skip(2)
}

func expectName(f *Field) string {
	s := f.Kind.String()
	if f.Kind == KindTimestampMillis {
		s = "timestamp-millis (RFC 3339 string or integer epoch milliseconds)"
	}
	if f.Kind == KindBytes {
		s = "bytes (base64 string)"
	}
	if f.Nullable {
		s += " or null"
	}
	return s
}

// Validate checks the values of an Event against s, the way Decode leaves
// them: nulls only in nullable fields, valid UTF-8 strings, non-empty subject
// and dedupe key, enum symbols, ints and timestamps in range, finite floats.
// It does not look at Present. Use it for events built in code.
func (s *Schema) Validate(ev *Event) error {
	if len(ev.Values) != len(s.Fields) {
		return &ValidationError{Reason: ReasonInvalidValue, Path: "$", Rule: fmt.Sprintf("event has %d values, %s has %d fields", len(ev.Values), s, len(s.Fields))}
	}
	for i := range s.Fields {
		f, v := &s.Fields[i], &ev.Values[i]
		bad := func(reason, rule string) error { return &ValidationError{Reason: reason, Path: f.path, Rule: rule} }
		if v.Null {
			if !f.Nullable {
				return bad(ReasonWrongType, "null in a required field")
			}
			continue
		}
		switch f.Kind {
		case KindString:
			if !utf8.ValidString(v.Str) {
				return bad(ReasonInvalidUTF8, "string is not valid UTF-8")
			}
			if v.Str == "" && (i == s.SubjectIndex || i == s.DedupeIndex) {
				return bad(ReasonInvalidValue, "must not be empty")
			}
		case KindEnum:
			found := false
			for _, sym := range f.Symbols {
				found = found || sym == v.Str
			}
			if !found {
				return bad(ReasonInvalidValue, "not one of the enum symbols")
			}
		case KindInt:
			if v.Int < math.MinInt32 || v.Int > math.MaxInt32 {
				return bad(ReasonOutOfRange, "integer does not fit in an Avro int (32 bits)")
			}
		case KindTimestampMillis:
			if v.Int < MinTimestampMillis || v.Int > MaxTimestampMillis {
				return bad(ReasonOutOfRange, "epoch milliseconds outside years 0000-9999")
			}
		case KindFloat, KindDouble:
			if math.IsInf(v.Float, 0) || math.IsNaN(v.Float) || (f.Kind == KindFloat && float64(float32(v.Float)) != v.Float) {
				return bad(ReasonOutOfRange, "number does not fit in a "+f.Kind.String())
			}
		}
	}
	return nil
}
