package record

import (
	"unicode/utf8"
)

// scanLine is the fast path of ParseLine for the shape lockstream itself
// writes (MarshalLine): one flat object with the keys id, publish_time,
// attributes (string values) and data, each at most once, strings whose
// escapes are the short ones (\" \\ \/ \b \f \n \r \t), and nothing else.
// Anything it is not sure of — another key, a \u escape, invalid UTF-8,
// null, a number, trailing bytes — makes it return ok=false, and ParseLine
// falls back to encoding/json, so both paths give the same answer on every
// input (FuzzParseLine checks it). On the replay path encoding/json was
// about 10% of ingest CPU, mostly unescaping data.
func scanLine(line []byte, memo *attrMemo) (w wireMessage, data []byte, ok bool) {
	s := lineScanner{b: line, memo: memo}
	if !s.byte('{') {
		return w, nil, false
	}
	var seen [4]bool
	for first := true; ; first = false {
		s.ws()
		if s.peek() == '}' && first {
			s.i++
			break
		}
		key, ok := s.str(nil, true)
		if !ok || !s.byte(':') {
			return w, nil, false
		}
		s.ws()
		var k int
		switch string(key) {
		case "id":
			k = 0
		case "publish_time":
			k = 1
		case "attributes":
			k = 2
		case "data":
			k = 3
		default:
			return w, nil, false
		}
		if seen[k] {
			return w, nil, false
		}
		seen[k] = true
		switch k {
		case 0, 1:
			v, ok := s.str(nil, true)
			if !ok {
				return w, nil, false
			}
			if k == 0 {
				w.ID = string(v)
			} else {
				w.PublishTime = string(v)
			}
		case 2:
			if w.Attributes, ok = s.attrs(); !ok {
				return w, nil, false
			}
		case 3:
			if data, ok = s.str(nil, false); !ok {
				return w, nil, false
			}
			if data == nil {
				data = []byte{}
			}
		}
		s.ws()
		if s.peek() == ',' {
			s.i++
			continue
		}
		if !s.byte('}') {
			return w, nil, false
		}
		break
	}
	s.ws()
	if s.i != len(s.b) {
		return w, nil, false
	}
	return w, data, true
}

type lineScanner struct {
	b    []byte
	i    int
	memo *attrMemo // nil: every attributes object gets its own map
}

// attrMemo remembers the last few attributes objects a LineParser read, by
// their bytes: the messages of a replay file mostly carry the same few
// (event type, schema version), and they then share one map instead of
// each allocating its own (a map and four strings per message, most of a
// replay batch's objects).
type attrMemo struct {
	raw  [4][]byte
	m    [4]map[string]string
	next int
}

func (a *attrMemo) find(raw []byte) (map[string]string, bool) {
	for i := range a.raw {
		if a.m[i] != nil && string(a.raw[i]) == string(raw) {
			return a.m[i], true
		}
	}
	return nil, false
}

func (a *attrMemo) put(raw []byte, m map[string]string) {
	a.raw[a.next] = append(a.raw[a.next][:0], raw...)
	a.m[a.next] = m
	a.next = (a.next + 1) % len(a.raw)
}

func (s *lineScanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *lineScanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// byte skips whitespace and expects c.
func (s *lineScanner) byte(c byte) bool {
	s.ws()
	if s.peek() != c {
		return false
	}
	s.i++
	return true
}

// str reads a string (after whitespace) into dst, unescaped; with alias, a
// string without escapes is returned as a slice of the input (for callers
// that copy it). It gives up (ok=false) on what the fast path does not
// handle.
func (s *lineScanner) str(dst []byte, alias bool) ([]byte, bool) {
	s.ws()
	if s.peek() != '"' {
		return nil, false
	}
	s.i++
	start := s.i
	ascii := true
	// Fast run: no escapes.
	for s.i < len(s.b) {
		c := s.b[s.i]
		if c == '"' || c == '\\' {
			break
		}
		if c < 0x20 {
			return nil, false
		}
		if c >= 0x80 {
			ascii = false
		}
		s.i++
	}
	if s.peek() == '"' && dst == nil && alias {
		s.i++
		if !ascii && !utf8.Valid(s.b[start:s.i-1]) {
			return nil, false
		}
		return s.b[start : s.i-1], true // no escapes: the input itself
	}
	dst = append(dst, s.b[start:s.i]...)
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			if !ascii && !utf8.Valid(dst) {
				return nil, false // encoding/json would substitute U+FFFD
			}
			return dst, true
		case c == '\\':
			if s.i+1 >= len(s.b) {
				return nil, false
			}
			var r byte
			switch s.b[s.i+1] {
			case '"':
				r = '"'
			case '\\':
				r = '\\'
			case '/':
				r = '/'
			case 'b':
				r = '\b'
			case 'f':
				r = '\f'
			case 'n':
				r = '\n'
			case 'r':
				r = '\r'
			case 't':
				r = '\t'
			default:
				return nil, false // \u and invalid escapes: encoding/json decides
			}
			dst = append(dst, r)
			s.i += 2
		case c < 0x20:
			return nil, false
		default:
			if c >= 0x80 {
				ascii = false
			}
			dst = append(dst, c)
			s.i++
		}
	}
	return nil, false
}

// attrs reads an object of string values. With a memo, an object
// byte-identical to one read recently gives that one's map. More than
// maxAttrs attributes leave the fast path (encoding/json reads them).
func (s *lineScanner) attrs() (map[string]string, bool) {
	start := s.i
	if !s.byte('{') {
		return nil, false
	}
	// The key and value bytes (slices of the line while they have no
	// escapes), until the object's end is known.
	var kv [maxAttrs][2][]byte
	n := 0
	s.ws()
	if s.peek() == '}' {
		s.i++
	} else {
		for {
			k, ok := s.str(nil, true)
			if !ok || !s.byte(':') || n == len(kv) {
				return nil, false
			}
			v, ok := s.str(nil, true)
			if !ok {
				return nil, false
			}
			kv[n] = [2][]byte{k, v}
			n++
			s.ws()
			if s.peek() == ',' {
				s.i++
				continue
			}
			if !s.byte('}') {
				return nil, false
			}
			break
		}
	}
	raw := s.b[start:s.i]
	if s.memo != nil {
		if m, ok := s.memo.find(raw); ok {
			return m, true
		}
	}
	m := make(map[string]string, n)
	for _, p := range kv[:n] {
		if _, dup := m[string(p[0])]; dup {
			return nil, false
		}
		m[string(p[0])] = string(p[1])
	}
	if s.memo != nil {
		s.memo.put(raw, m)
	}
	return m, true
}

// maxAttrs is the most attributes the fast path reads.
const maxAttrs = 8
