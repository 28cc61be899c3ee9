package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/lockstream/lockstream/keyservice"
	keysv1 "github.com/lockstream/lockstream/keyservice/api/keysv1"
	"github.com/lockstream/lockstream/keyservice/api/keysv1/keysv1connect"
)

// TestReusedAnswersNeverMix: many concurrent RPCs of different shapes
// (batch sizes, category sets, a deleted user among them) through the
// server, whose answer buffers are reused from request to request, each
// get exactly their own answer: the subject the service gives each user,
// one key per asked category in order, no leftover from a larger answer.
func TestReusedAnswersNeverMix(t *testing.T) {
	e := startEnv(t, t.TempDir(), masterKey(t), nil)
	ctx := context.Background()
	users := make([]string, 300)
	for i := range users {
		users[i] = fmt.Sprintf("reuse-user-%03d", i)
	}
	subjects := map[string]string{}
	res, err := e.svc.GetOrCreate(ctx, scope, users, testCats)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		subjects[users[i]] = r.Subject
	}
	if err := e.svc.DeleteUser(ctx, users[7]); err != nil {
		t.Fatal(err)
	}
	catSets := [][]string{testCats, {"location"}, {"device", "contact"}}
	c := e.client(secretWide)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 40 {
				n := 1 + (g*37+i*11)%len(users)
				lo := (g*13 + i*29) % (len(users) - n + 1)
				ids, cats := users[lo:lo+n], catSets[(g+i)%len(catSets)]
				resp, err := c.GetOrCreateKeys(ctx, connect.NewRequest(&keysv1.GetOrCreateKeysRequest{Scope: scope, UserIds: ids, Categories: cats}))
				if err != nil {
					t.Error(err)
					return
				}
				if len(resp.Msg.Results) != len(ids) {
					t.Errorf("%d answers for %d ids", len(resp.Msg.Results), len(ids))
					return
				}
				for j, r := range resp.Msg.Results {
					if ids[j] == users[7] {
						if r.Status != keysv1.Status_STATUS_DELETED || r.Subject != "" || len(r.Keys) != 0 {
							t.Errorf("deleted user answered %v %q with %d keys", r.Status, r.Subject, len(r.Keys))
						}
						continue
					}
					if r.Status != keysv1.Status_STATUS_OK || r.Subject != subjects[ids[j]] || len(r.Keys) != len(cats) {
						t.Errorf("user %d: %v, subject %q (want %q), %d keys for %d categories", lo+j, r.Status, r.Subject, subjects[ids[j]], len(r.Keys), len(cats))
						return
					}
					for k, key := range r.Keys {
						if key.Category != cats[k] || len(key.Key) != 32 {
							t.Errorf("user %d key %d: category %q, %d bytes; want %q, 32", lo+j, k, key.Category, len(key.Key), cats[k])
							return
						}
					}
				}
			}
		})
	}
	wg.Wait()
}

// Every test of this package runs with recycled id arenas scribbled over,
// so an id kept past its request would read as '#'s (see idArena).
func init() { scribbleRecycledIDs = true }

// TestIDArenaRoundTrip follows one request's ids through the codec, the
// interceptor's take and recycle: the ids are views of the arena until the
// slot is released, then their bytes are gone. This is what makes keeping
// one visible in TestPooledIDsAreNotKept.
func TestIDArenaRoundTrip(t *testing.T) {
	body, err := proto.Marshal(&keysv1.GetOrCreateKeysRequest{Scope: scope, UserIds: []string{"arena-user-1", "", "arena-user-3"}, Categories: []string{"contact"}})
	if err != nil {
		t.Fatal(err)
	}
	var req keysv1.GetOrCreateKeysRequest
	if err := (batchCodec{}).Unmarshal(body, &req); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(req.UserIds, []string{"arena-user-1", "", "arena-user-3"}) || req.Scope != scope || !slices.Equal(req.Categories, []string{"contact"}) {
		t.Fatalf("decoded %q %q %q", req.Scope, req.UserIds, req.Categories)
	}
	kept, scopeKept, catKept := req.UserIds[0], req.Scope, req.Categories[0]
	slot := &answerSlot{}
	ctx := context.WithValue(context.Background(), answerSlotKey{}, slot)
	pendingIDs.take(ctx, &req)
	if slot.ids == nil {
		t.Fatal("the interceptor's take found no arena for the request")
	}
	pendingIDs.mu.Lock()
	_, left := pendingIDs.m[&req]
	pendingIDs.mu.Unlock()
	if left {
		t.Fatal("arena still pending after take")
	}
	slot.ids.release()
	if kept != strings.Repeat("#", len("arena-user-1")) {
		t.Fatalf("a kept id reads %q after recycle: the arena was not the id's memory", kept)
	}
	if scopeKept != scope || catKept != "contact" {
		t.Fatalf("scope %q and category %q changed with the id arena: they must be copies", scopeKept, catKept)
	}

	// By subject: copies, never an arena.
	var bs keysv1.GetKeysBySubjectRequest
	if err := (batchCodec{}).Unmarshal(body, &bs); err != nil {
		t.Fatal(err)
	}
	pendingIDs.mu.Lock()
	_, pending := pendingIDs.m[&bs]
	pendingIDs.mu.Unlock()
	if pending {
		t.Fatal("a by-subject request got a pooled arena")
	}
}

// TestPooledIDsAreNotKept: concurrent GetOrCreateKeys and GetKeysByUser
// through the server (HTTP/2, Connect and gRPC), creating users, some of
// the calls cancelled by a short deadline mid-flight, with recycled id
// bytes scribbled over. Afterwards every user has exactly the subject and
// keys the service gives for a fresh copy of its id, no user named by
// scribbled bytes exists, and no arena is left pending.
func TestPooledIDsAreNotKept(t *testing.T) {
	e := startEnv(t, t.TempDir(), masterKey(t), nil)
	ctx := context.Background()
	users := make([]string, 400)
	for i := range users {
		users[i] = fmt.Sprintf("pooled-user-%03d", i)
	}
	// Codec tests decode without a server: their arenas stay pending.
	pendingIDs.mu.Lock()
	clear(pendingIDs.m)
	pendingIDs.mu.Unlock()
	clients := []keysv1connect.KeyServiceClient{e.client(secretWide), e.client(secretWide, connect.WithGRPC())}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			c := clients[g%len(clients)]
			for i := range 30 {
				n := 1 + (g*31+i*17)%120
				lo := (g*53 + i*41) % (len(users) - n + 1)
				ids := slices.Clone(users[lo : lo+n])
				cctx, cancel := ctx, context.CancelFunc(func() {})
				if i%7 == 3 {
					cctx, cancel = context.WithTimeout(ctx, time.Duration(50+g*100)*time.Microsecond)
				}
				var err error
				if i%3 == 2 {
					_, err = c.GetKeysByUser(cctx, connect.NewRequest(&keysv1.GetKeysByUserRequest{Scope: scope, UserIds: ids, Categories: testCats}))
				} else {
					_, err = c.GetOrCreateKeys(cctx, connect.NewRequest(&keysv1.GetOrCreateKeysRequest{Scope: scope, UserIds: ids, Categories: testCats}))
				}
				cancel()
				if err != nil && !slices.Contains([]connect.Code{connect.CodeDeadlineExceeded, connect.CodeCanceled}, connect.CodeOf(err)) {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	// The reference: the service itself, on fresh copies of the ids.
	fresh := make([]string, len(users))
	for i, u := range users {
		fresh[i] = strings.Clone(u)
	}
	want, err := e.svc.GetOrCreate(ctx, scope, fresh, testCats)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.client(secretWide).GetKeysByUser(ctx, connect.NewRequest(&keysv1.GetKeysByUserRequest{Scope: scope, UserIds: users, Categories: testCats}))
	if err != nil {
		t.Fatal(err)
	}
	subjects := map[string]bool{}
	for i, r := range resp.Msg.Results {
		w := want[i]
		if r.Status != keysv1.Status_STATUS_OK || r.Subject != w.Subject || len(r.Keys) != len(w.Keys) {
			t.Fatalf("user %d: %v subject %q with %d keys; the service says %q with %d", i, r.Status, r.Subject, len(r.Keys), w.Subject, len(w.Keys))
		}
		for j, k := range r.Keys {
			if !bytes.Equal(k.Key, w.Keys[j].Secret.Expose()) {
				t.Fatalf("user %d key %d differs from the service's", i, j)
			}
		}
		if subjects[r.Subject] {
			t.Fatalf("user %d shares its subject with another user", i)
		}
		subjects[r.Subject] = true
	}
	// Ids made of scribble: nobody has them.
	var scribbled []string
	for n := 1; n <= 20; n++ {
		scribbled = append(scribbled, strings.Repeat("#", n))
	}
	got, err := e.svc.GetByUser(ctx, scope, scribbled, testCats)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range got {
		if !errors.Is(r.Err, keyservice.ErrUnknownUser) {
			t.Fatalf("an id of %d scribbled bytes has keys (subject %q): a pooled id was kept", i+1, r.Subject)
		}
	}
	pendingIDs.mu.Lock()
	n := len(pendingIDs.m)
	pendingIDs.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d id arenas left pending after every request ended", n)
	}
}
