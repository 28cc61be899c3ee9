package integration

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/lockstream/lockstream/integration/invariants"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/keyservice"
	keysv1 "github.com/lockstream/lockstream/keyservice/api/keysv1"
	"github.com/lockstream/lockstream/keyservice/api/keysv1/keysv1connect"
	"github.com/lockstream/lockstream/keyservice/server"
	"github.com/lockstream/lockstream/pipelines"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/synth"
)

// loadResult counts the outcomes of a load phase.
type loadResult struct {
	ok, shed, other atomic.Int64
	shedMsg         atomic.Value
}

// TestScenario10_LoadShedding: a key server with a bounded concurrency is
// driven by our loopback load generator at 2x the rate it sustained in a
// closed loop: it sheds the excess at once with ResourceExhausted and a
// message saying it is overloaded, serves the rest, and recovers when the
// load drops. A pipeline ingesting during the overload backs off and loses
// nothing (no key_unavailable dead letters, invariants hold).
func TestScenario10_LoadShedding(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// Bounded capacity: 4 requests at once, each a few store calls of 2 ms.
	k := startScenarioKeyServer(t, server.Config{MaxConcurrent: 4}, func(st keyservice.Store) keyservice.Store { return slowStore{st, 2 * time.Millisecond} })
	auth := connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+scenarioKeySecret)
			return next(ctx, req)
		}
	})
	client := keysv1connect.NewKeyServiceClient(keyclient.DefaultHTTPClient(), k.url(), connect.WithInterceptors(auth))
	var seq atomic.Int64
	call := func(r *loadResult) {
		n := seq.Add(1)
		_, err := client.GetOrCreateKeys(ctx, connect.NewRequest(&keysv1.GetOrCreateKeysRequest{Scope: "lockstream",
			UserIds: []string{fmt.Sprintf("load-user-%d", n)}, Categories: []string{"device"}}))
		switch {
		case err == nil:
			r.ok.Add(1)
		case connect.CodeOf(err) == connect.CodeResourceExhausted:
			r.shed.Add(1)
			r.shedMsg.Store(err.Error())
		default:
			r.other.Add(1)
			t.Logf("unexpected error: %v", err)
		}
	}
	runtime.GC() // what earlier tests (the soak) left is collected before capacity is measured
	// Capacity: a closed loop with as many workers as the server admits.
	closed := &loadResult{}
	start := time.Now()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for time.Since(start) < 2*time.Second {
				call(closed)
			}
		})
	}
	wg.Wait()
	capacity := float64(closed.ok.Load()) / time.Since(start).Seconds()
	// openLoop starts calls at rate for d, on a 5 ms tick (sleeping per
	// call cannot keep up with short intervals), each in its own goroutine.
	// A late tick (a GC or scheduler stall under -race) skips the calls it
	// missed instead of launching them at once: a catch-up burst is not
	// the rate being measured, and at half capacity it was shed.
	openLoop := func(rate float64, d time.Duration) *loadResult {
		r := &loadResult{}
		var wg sync.WaitGroup
		launched := 0
		perTick := max(1, int(math.Ceil(rate*0.005)))
		t0 := time.Now()
		for tick := time.NewTicker(5 * time.Millisecond); time.Since(t0) < d; <-tick.C {
			due := int(rate * time.Since(t0).Seconds())
			launched = max(launched, due-perTick)
			for ; launched < due; launched++ {
				wg.Go(func() { call(r) })
			}
		}
		wg.Wait()
		return r
	}
	// The pipeline runs through the overload.
	tr := synth.Generate(synth.Config{Events: 1500, Users: 600, Hours: 1, Seed: 1010})
	root := t.TempDir()
	type ingestOut struct {
		res *pipelines.IngestResult
		err error
	}
	done := make(chan ingestOut, 1)
	go func() {
		res, err := pipelines.Ingest(ctx, pipelines.IngestConfig{Inputs: []string{writeReplayFile(t, tr.Messages)}, Out: root,
			KeysURL: k.url(), BatchSize: 50, KeyRetryBudget: time.Minute})
		done <- ingestOut{res, err}
	}()
	over := openLoop(2*capacity, 4*time.Second)
	got := <-done
	// The load drops (the pipeline is done too) to a quarter: at half, a
	// 4-slot server without a queue still shed a few calls in one run of
	// ~280 whenever a GC stall under -race let 5 pile up.
	runtime.GC() // the overload's and the pipeline's garbage is collected before, not during, the recovery phase
	after := openLoop(capacity/4, 2*time.Second)
	if got.err != nil {
		t.Fatal(got.err)
	}
	t.Logf("capacity %.0f RPC/s; at 2x: %d served, %d shed, %d other errors; at 0.25x after: %d served, %d shed",
		capacity, over.ok.Load(), over.shed.Load(), over.other.Load(), after.ok.Load(), after.shed.Load())
	if over.shed.Load() == 0 || over.ok.Load() == 0 || over.other.Load() != 0 {
		t.Fatalf("at 2x capacity: %d served, %d shed, %d other errors; want some of each of the first two, none of the last", over.ok.Load(), over.shed.Load(), over.other.Load())
	}
	if msg, _ := over.shedMsg.Load().(string); !strings.Contains(msg, "overloaded") || !strings.Contains(msg, "retry with backoff") {
		t.Fatalf("shed error says %q", msg)
	}
	if after.shed.Load() != 0 || after.other.Load() != 0 {
		t.Fatalf("no recovery: %d shed, %d errors at a quarter of capacity", after.shed.Load(), after.other.Load())
	}
	if _, err := invariants.PublishAll(ctx, pipelines.HourlyConfig{Root: root}); err != nil {
		t.Fatal(err)
	}
	invariants.Require(t, ctx, invariants.Input{Scenario: "10-load-shedding", Root: root, Sent: tr.Messages, Canaries: tr.Canaries,
		Logs: k.log.Bytes(), Ingest: got.res.Rows, NoDead: []string{record.ReasonKeyUnavailable}})
}
