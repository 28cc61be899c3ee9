package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// badMemcached is a TCP proxy in front of a real memcached that, while
// corrupting, rewrites the values memcached returns (text protocol, VALUE
// lines of get/gets): a third of them get a flipped byte, a third are
// replaced by the value of another key seen earlier (a swapped entry: for
// an index row, another user's subject), a third pass unchanged. Requests
// pass through untouched.
type badMemcached struct {
	addr       string
	upstream   string
	corrupting atomic.Bool
	flipped    atomic.Int64
	swapped    atomic.Int64

	mu     sync.Mutex
	recent map[string][]byte // key -> a value memcached returned for it
	conns  []net.Conn
	ln     net.Listener
}

func startBadMemcached(t *testing.T, upstream string) *badMemcached {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &badMemcached{addr: ln.Addr().String(), upstream: upstream, recent: map[string][]byte{}, ln: ln}
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *badMemcached) close() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

func (p *badMemcached) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.upstream)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(u, c); u.Close() }()
		go func() { p.relay(c, u); c.Close() }()
	}
}

// relay copies memcached's answers from u to c, rewriting values.
func (p *badMemcached) relay(c io.Writer, u io.Reader) {
	r := bufio.NewReader(u)
	w := bufio.NewWriter(c)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		f := strings.Fields(string(line))
		if len(f) >= 4 && f[0] == "VALUE" {
			n, err := strconv.Atoi(f[3])
			if err != nil {
				return
			}
			data := make([]byte, n+2)
			if _, err := io.ReadFull(r, data); err != nil {
				return
			}
			v := p.rewrite(f[1], data[:n])
			f[3] = strconv.Itoa(len(v))
			fmt.Fprintf(w, "%s\r\n", strings.Join(f, " "))
			w.Write(v)
			w.WriteString("\r\n")
		} else {
			w.Write(line)
		}
		if r.Buffered() == 0 {
			if w.Flush() != nil {
				return
			}
		}
	}
}

func (p *badMemcached) rewrite(key string, v []byte) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.recent) < 4096 {
		p.recent[key] = bytes.Clone(v)
	}
	if !p.corrupting.Load() {
		return v
	}
	switch rand.IntN(3) {
	case 0:
		v = bytes.Clone(v)
		v[rand.IntN(len(v))] ^= 1 << rand.IntN(8)
		p.flipped.Add(1)
	case 1:
		// Another key's value, of the same kind of row when there is one
		// (the row kind is in the key: lockstream/ks2/uid_…, sub_…).
		kind := rowKind(key)
		for k, other := range p.recent {
			if k != key && rowKind(k) == kind && !bytes.Equal(other, v) {
				p.swapped.Add(1)
				return bytes.Clone(other)
			}
		}
	}
	return v
}

func rowKind(key string) string {
	if i := strings.LastIndexByte(key, '/'); i >= 0 && len(key) > i+4 {
		return key[i+1 : i+5]
	}
	return ""
}
