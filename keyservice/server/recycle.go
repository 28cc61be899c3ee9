package server

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"unsafe"

	"github.com/lockstream/lockstream/keyservice"
	keysv1 "github.com/lockstream/lockstream/keyservice/api/keysv1"
)

// Answers of key RPCs are built in buffers that are reused once the answer
// is on the wire. A batch answer is a few hundred small objects (the
// service's UserKeys and keys, then their protobuf messages); allocated per
// request they were ~45 KB of garbage per batch of 100, and the garbage
// collection they caused was most of the load bench's tail latency.
//
// recycle wraps the RPC handler: it hands each request an empty slot in
// its context, and after the handler has returned and the response has
// been written (a unary Connect/gRPC handler writes the message before
// ServeHTTP returns) it resets the answer buffer the handler took and
// returns it to the pool. Reset clears every reference, so a pooled buffer
// holds no key bytes or ids.

type answerBuf struct {
	svc   keyservice.Answer
	out   []*keysv1.UserKeys
	users []keysv1.UserKeys
	keys  []keysv1.Key
	ptrs  []*keysv1.Key
}

var answerPool = sync.Pool{New: func() any { return new(answerBuf) }}

// sized returns the buffers for an answer of n users holding k keys.
func (b *answerBuf) sized(n, k int) (out []*keysv1.UserKeys, users []keysv1.UserKeys, keys []keysv1.Key, ptrs []*keysv1.Key) {
	b.out, b.users = slices.Grow(b.out[:0], n)[:n], slices.Grow(b.users[:0], n)[:n]
	b.keys, b.ptrs = slices.Grow(b.keys[:0], k)[:k], slices.Grow(b.ptrs[:0], k)[:k]
	return b.out, b.users, b.keys, b.ptrs
}

func (b *answerBuf) reset() {
	b.svc.Reset()
	clear(b.out[:cap(b.out)])
	clear(b.users[:cap(b.users)])
	clear(b.keys[:cap(b.keys)])
	clear(b.ptrs[:cap(b.ptrs)])
	b.out, b.users, b.keys, b.ptrs = b.out[:0], b.users[:0], b.keys[:0], b.ptrs[:0]
}

// answerSlot is the context value recycle puts in each request.
type answerSlot struct {
	buf *answerBuf
	ids *idArena // the request's user ids (see idArena)
}

type answerSlotKey struct{}

// answerFrom returns the request's answer buffer, taking one from the pool
// on first use. Without recycle (a handler called directly) it is a fresh
// buffer, left to the garbage collector.
func answerFrom(ctx context.Context) *answerBuf {
	slot, _ := ctx.Value(answerSlotKey{}).(*answerSlot)
	if slot == nil {
		return new(answerBuf)
	}
	if slot.buf == nil {
		slot.buf = answerPool.Get().(*answerBuf)
	}
	return slot.buf
}

// recycle serves next with an answer slot, and pools the slot's buffer
// once next has written the response.
func recycle(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		slot := &answerSlot{}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), answerSlotKey{}, slot)))
		if slot.buf != nil {
			slot.buf.reset()
			answerPool.Put(slot.buf)
		}
		if slot.ids != nil {
			slot.ids.release()
		}
	})
}

// User ids of batch requests live in pooled arenas too. Decoded one by one
// they were a third of the server's garbage (~3.6 KB per batch of 100: the
// id bytes and the slice of strings viewing them). The codec cuts the ids
// of GetOrCreateKeys and GetKeysByUser as views of an arena's bytes; the
// interceptor hands the arena to the request's slot; recycle pools the
// arena once the response is written, and the next request's ids overwrite
// its bytes.
//
// That is safe because nothing keeps a user id past its request: the
// service reads an id to validate it and to compute its index hash (the
// keyed hash of the user index, which is what every cache and store row
// is keyed by; its map of ids to positions is cleared before it is
// pooled), and the answer that echoes the id is written before recycle
// runs. Scope and categories may be kept (caches keyed by them) and
// by-subject requests keep their subjects (keychain cache, in-flight
// reads): those are always copies of their own. The package's tests run
// with recycled arenas scribbled over ('#'), so an id kept and used
// anywhere shows as a wrong answer (TestPooledIDsAreNotKept).

// idArena holds the user ids of one request.
type idArena struct {
	buf []byte   // the id bytes, back to back; sized before the first view
	ids []string // views of buf, in request order
}

var idArenas = sync.Pool{New: func() any { return new(idArena) }}

// view appends v to the arena and returns a string viewing the copy. The
// caller has grown buf to hold every id first, so it never moves.
func (a *idArena) view(v []byte) string {
	if len(v) == 0 {
		return ""
	}
	off := len(a.buf)
	a.buf = append(a.buf, v...)
	return unsafe.String(&a.buf[off], len(v))
}

// scribbleRecycledIDs overwrites the bytes of a recycled arena (tests set
// it: an id kept past its request then reads as '#'s).
var scribbleRecycledIDs bool

// release empties a and pools it. Its strings must be unreachable.
func (a *idArena) release() {
	if scribbleRecycledIDs {
		for i := range a.buf {
			a.buf[i] = '#'
		}
	}
	clear(a.ids[:cap(a.ids)])
	a.buf, a.ids = a.buf[:0], a.ids[:0]
	if cap(a.buf) > 64<<10 { // keep the pool's arenas of batch size
		return
	}
	idArenas.Put(a)
}

// pendingIDs holds the arenas of decoded requests until the interceptor
// takes them (by request message). A request that fails between decoding
// and the interceptor (a malformed gRPC stream) leaves its arena here;
// past pendingMax entries the map is emptied: a forgotten arena is never
// reused, only collected, so forgetting is always safe.
var pendingIDs = pendingArenas{m: map[any]*idArena{}}

const pendingMax = 4096

type pendingArenas struct {
	mu sync.Mutex
	m  map[any]*idArena
}

func (p *pendingArenas) put(msg any, a *idArena) {
	p.mu.Lock()
	if len(p.m) >= pendingMax {
		clear(p.m)
	}
	p.m[msg] = a
	p.mu.Unlock()
}

// take moves msg's arena, if any, to the request's slot in ctx; without a
// slot (a handler called without recycle) it is left to the collector.
func (p *pendingArenas) take(ctx context.Context, msg any) {
	p.mu.Lock()
	a, ok := p.m[msg]
	if ok {
		delete(p.m, msg)
	}
	p.mu.Unlock()
	if !ok {
		return
	}
	if slot, _ := ctx.Value(answerSlotKey{}).(*answerSlot); slot != nil {
		slot.ids = a
	}
}
