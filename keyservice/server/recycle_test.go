package server

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"connectrpc.com/connect"

	keysv1 "github.com/lockstream/lockstream/keyservice/api/keysv1"
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
