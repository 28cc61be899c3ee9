package server

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	keysv1 "github.com/lockstream/lockstream/keyservice/api/keysv1"
	"github.com/lockstream/lockstream/keyservice/api/keysv1/keysv1connect"
)

// The raw generator (LOCKSTREAM_BENCH_CLIENT=raw) speaks
// HTTP/1.1 on its own keep-alive connections, as wrk does: each call
// writes a request encoded once (headers and protobuf body) and reads the
// response on the calling goroutine (http.ReadResponse), decoding every
// 64th body. Go's http.Client hands every request to a write goroutine and
// every response to a read goroutine of its connection: measured here, it
// cost the generator ~130 µs of CPU per batch call at 50% load, on the
// cores the server needs, and its garbage had the generator collecting 5
// times a second. The raw generator measures the same round trip (loopback
// TCP, the server's HTTP stack, Connect, the service) for ~75 µs and half
// the garbage (http.ReadResponse still allocates a header map per call).

// rawConn is one connection of the raw generator.
type rawConn struct {
	c   net.Conn
	br  *bufio.Reader
	buf bytes.Buffer
}

type rawGen struct {
	addr  string // host:port
	idle  chan *rawConn
	reqs  sync.Map // first user -> the whole HTTP request
	calls atomic.Int64
}

func newRawGen(url string, maxConns int) *rawGen {
	return &rawGen{addr: strings.TrimPrefix(url, "http://"), idle: make(chan *rawConn, maxConns)}
}

// request is the HTTP request of a GetOrCreateKeys call for users.
func (g *rawGen) request(users []string) ([]byte, error) {
	if r, ok := g.reqs.Load(users[0]); ok {
		return r.([]byte), nil
	}
	body, err := proto.Marshal(&keysv1.GetOrCreateKeysRequest{Scope: scope, UserIds: users, Categories: benchCats})
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/proto\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n",
		keysv1connect.KeyServiceGetOrCreateKeysProcedure, g.addr, secretWide, len(body))
	b.Write(body)
	r, _ := g.reqs.LoadOrStore(users[0], b.Bytes())
	return r.([]byte), nil
}

func (g *rawGen) conn() (*rawConn, error) {
	select {
	case c := <-g.idle:
		return c, nil
	default:
	}
	c, err := net.Dial("tcp", g.addr)
	if err != nil {
		return nil, err
	}
	return &rawConn{c: c, br: bufio.NewReaderSize(c, 16<<10)}, nil
}

func (g *rawGen) release(c *rawConn) {
	select {
	case g.idle <- c:
	default:
		c.c.Close()
	}
}

// call makes one GetOrCreateKeys call for users and reads the whole answer.
func (g *rawGen) call(users []string) error {
	req, err := g.request(users)
	if err != nil {
		return err
	}
	c, err := g.conn()
	if err != nil {
		return err
	}
	reuse, err := c.roundTrip(req)
	if err != nil {
		c.c.Close()
		return err
	}
	if g.calls.Add(1)%64 == 0 {
		var m keysv1.GetOrCreateKeysResponse
		if err := proto.Unmarshal(c.buf.Bytes(), &m); err != nil {
			c.c.Close()
			return err
		}
		if len(m.Results) != len(users) {
			c.c.Close()
			return fmt.Errorf("%d results for %d users", len(m.Results), len(users))
		}
	}
	if reuse {
		g.release(c)
	} else {
		c.c.Close()
	}
	return nil
}

// roundTrip writes req and reads the response body into c.buf; reuse is
// false when the server said it closes the connection.
func (c *rawConn) roundTrip(req []byte) (reuse bool, err error) {
	if _, err := c.c.Write(req); err != nil {
		return false, err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return false, err
	}
	c.buf.Reset()
	_, err = c.buf.ReadFrom(resp.Body)
	resp.Body.Close()
	if err != nil {
		return false, err
	}
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, c.buf.Bytes())
	}
	return !resp.Close, nil
}
