package schemas

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// ParsingCanonicalForm returns the Parsing Canonical Form of an Avro schema
// as the Avro specification defines it ("Parsing Canonical Form for
// Schemas"): primitives in their simple form ([PRIMITIVES]), names
// replaced by fullnames ([FULLNAMES]), only the attributes that matter for
// parsing kept (name, type, fields, symbols, items, values, size: [STRIP];
// so a logicalType, a doc, a default or a "pii" annotation is dropped, and
// {"type":"long","logicalType":"timestamp-millis"} becomes "long"), in that
// order ([ORDER]), strings without escapes ([STRINGS]), integers without
// quotes or leading zeros ([INTEGERS]) and no whitespace ([WHITESPACE]).
// Its SHA-256 is the schema fingerprint the specification recommends, the
// one Java's SchemaNormalization and other implementations compute.
func ParsingCanonicalForm(schemaJSON []byte) (string, error) {
	var v any
	d := json.NewDecoder(bytes.NewReader(schemaJSON))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		return "", fmt.Errorf("schemas: canonical form: %w", err)
	}
	var b strings.Builder
	if err := canonical(&b, v, ""); err != nil {
		return "", err
	}
	return b.String(), nil
}

var primitiveTypes = map[string]bool{"null": true, "boolean": true, "int": true, "long": true, "float": true, "double": true, "bytes": true, "string": true}

// canonical writes the canonical form of schema v, in namespace ns.
func canonical(b *strings.Builder, v any, ns string) error {
	switch s := v.(type) {
	case string:
		if primitiveTypes[s] {
			writeString(b, s)
		} else {
			writeString(b, fullname(s, "", ns)) // a reference to a named type
		}
		return nil
	case []any: // a union
		b.WriteByte('[')
		for i, branch := range s {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := canonical(b, branch, ns); err != nil {
				return err
			}
		}
		b.WriteByte(']')
		return nil
	case map[string]any:
		return canonicalObject(b, s, ns)
	}
	return fmt.Errorf("schemas: canonical form: %T is not a schema", v)
}

func canonicalObject(b *strings.Builder, s map[string]any, ns string) error {
	t, ok := s["type"].(string)
	if !ok {
		// {"type": <schema>}: the schema itself.
		inner, present := s["type"]
		if !present {
			return fmt.Errorf("schemas: canonical form: an object without a type")
		}
		return canonical(b, inner, ns)
	}
	if primitiveTypes[t] {
		writeString(b, t)
		return nil
	}
	switch t {
	case "record", "error", "enum", "fixed":
		name, _ := s["name"].(string)
		if name == "" {
			return fmt.Errorf("schemas: canonical form: a %s without a name", t)
		}
		own, _ := s["namespace"].(string)
		full := fullname(name, own, ns)
		b.WriteString(`{"name":`)
		writeString(b, full)
		b.WriteString(`,"type":`)
		writeString(b, t)
		switch t {
		case "record", "error":
			inner := ""
			if i := strings.LastIndexByte(full, '.'); i >= 0 {
				inner = full[:i]
			}
			fields, _ := s["fields"].([]any)
			b.WriteString(`,"fields":[`)
			for i, f := range fields {
				fm, ok := f.(map[string]any)
				if !ok {
					return fmt.Errorf("schemas: canonical form: a field of %s is not an object", full)
				}
				if i > 0 {
					b.WriteByte(',')
				}
				fname, _ := fm["name"].(string)
				b.WriteString(`{"name":`)
				writeString(b, fname)
				b.WriteString(`,"type":`)
				if err := canonical(b, fm["type"], inner); err != nil {
					return err
				}
				b.WriteByte('}')
			}
			b.WriteByte(']')
		case "enum":
			syms, _ := s["symbols"].([]any)
			b.WriteString(`,"symbols":[`)
			for i, sym := range syms {
				if i > 0 {
					b.WriteByte(',')
				}
				str, _ := sym.(string)
				writeString(b, str)
			}
			b.WriteByte(']')
		case "fixed":
			n, err := integer(s["size"])
			if err != nil {
				return fmt.Errorf("schemas: canonical form: fixed %s: %w", full, err)
			}
			b.WriteString(`,"size":`)
			b.WriteString(strconv.FormatInt(n, 10))
		}
		b.WriteByte('}')
		return nil
	case "array":
		b.WriteString(`{"type":"array","items":`)
		if err := canonical(b, s["items"], ns); err != nil {
			return err
		}
		b.WriteByte('}')
		return nil
	case "map":
		b.WriteString(`{"type":"map","values":`)
		if err := canonical(b, s["values"], ns); err != nil {
			return err
		}
		b.WriteByte('}')
		return nil
	}
	// A named type referenced as {"type": "Name"}.
	writeString(b, fullname(t, "", ns))
	return nil
}

// fullname is name's fullname: name itself when it has a dot, else in
// the namespace attribute own, else in the enclosing namespace ns.
func fullname(name, own, ns string) string {
	switch {
	case strings.Contains(name, "."):
		return name
	case own != "":
		return own + "." + name
	case ns != "":
		return ns + "." + name
	}
	return name
}

// integer reads a JSON integer, quoted or not ([INTEGERS]).
func integer(v any) (int64, error) {
	switch n := v.(type) {
	case json.Number:
		return n.Int64()
	case string:
		return strconv.ParseInt(strings.TrimSpace(n), 10, 64)
	}
	return 0, fmt.Errorf("size %v is not an integer", v)
}

// writeString writes s as a JSON string with the escapes JSON requires
// only (quote, backslash, control characters): UTF-8 as is ([STRINGS]).
func writeString(b *strings.Builder, s string) {
	var buf bytes.Buffer
	e := json.NewEncoder(&buf)
	e.SetEscapeHTML(false)
	_ = e.Encode(s)
	b.Write(bytes.TrimRight(buf.Bytes(), "\n"))
}
