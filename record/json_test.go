package record

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"
)

// jsonReference is the record as encoding/json writes it, value by value.
func jsonReference(t *testing.T, p *Plain) []byte {
	t.Helper()
	b := []byte{'{'}
	for i, n := range p.Names {
		if i > 0 {
			b = append(b, ',')
		}
		k, _ := json.Marshal(n)
		v, err := json.Marshal(p.Values[i])
		if err != nil {
			t.Fatal(err)
		}
		b = append(append(append(b, k...), ':'), v...)
	}
	return append(b, '}')
}

// TestAppendJSONIsEncodingJSON: AppendJSON writes what encoding/json
// writes, byte for byte, for every value type a Plain holds, strings of
// every ASCII byte, invalid UTF-8, U+2028/2029 and HTML characters, and
// random strings; the result is valid JSON.
func TestAppendJSONIsEncodingJSON(t *testing.T) {
	var all []byte
	for c := 0; c < 256; c++ {
		all = append(all, byte(c))
	}
	strs := []string{"", "plain", `q"uote\back`, "<a href='x'>&amp;</a>", "line\u2028sep\u2029", "é中😀", "\xff\xfe bad \xc3", string(all)}
	r := rand.New(rand.NewPCG(3, 4))
	for range 200 {
		b := make([]byte, r.IntN(40))
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		strs = append(strs, string(b))
	}
	for _, s := range strs {
		p := &Plain{Names: []string{"s", "n", "neg", "t", "f", "nil", "bytes", "float", "tiny", "big", "s<2>"},
			Values: []any{s, int64(math.MaxInt64), int64(math.MinInt64), true, false, nil, []byte(s), 3.25, 1e-9, 1e22, s}}
		got, err := p.AppendJSON([]byte("prefix"))
		if err != nil {
			t.Fatal(err)
		}
		want := jsonReference(t, p)
		if !bytes.Equal(got[len("prefix"):], want) {
			t.Fatalf("for %q:\n got %s\nwant %s", s, got[len("prefix"):], want)
		}
		if !json.Valid(want) {
			t.Fatalf("invalid JSON for %q", s)
		}
	}
	if _, err := (&Plain{Names: []string{"x"}, Values: []any{math.NaN()}}).AppendJSON(nil); err == nil {
		t.Fatal("NaN encoded")
	}
}
