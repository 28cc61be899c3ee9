package server

import (
	"context"
	"net/http"
	"slices"
	"sync"

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
//
// Only answers are pooled. A request's ids are pieces of one copy of the
// request bytes (batchCodec), left to the garbage collector: a pooled arena
// for the user ids (~3.6 KB per batch of 100) was tried and removed, its
// saving lost in the load benchmark's run-to-run noise (codec.go has the
// numbers), for the price of strings over recycled memory, a map of
// pending arenas and a test scribbling over that memory.

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
	})
}
