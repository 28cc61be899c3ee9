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
// load drops (a closed loop of as many callers as it admits is shed none).
// A pipeline ingesting during the overload backs off and loses nothing (no
// key_unavailable dead letters, invariants hold).
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
	// closedLoop runs as many workers as the server admits, each calling
	// again as soon as its call returns, for d.
	closedLoop := func(d time.Duration) *loadResult {
		r := &loadResult{}
		start := time.Now()
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for time.Since(start) < d {
					call(r)
				}
			})
		}
		wg.Wait()
		return r
	}
	// Capacity: what the closed loop sustains.
	start := time.Now()
	closed := closedLoop(2 * time.Second)
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
	// The load drops (the pipeline is done too). Recovery is proved with
	// a closed loop of as many workers as the server admits: at most that
	// many calls are ever in flight (a slot is released before the
	// response is written), so a server that recovered sheds none of
	// them, whatever GC or scheduler stalls do to the timing; a slot that
	// the overload leaked would shed some. The open loop at a quarter of
	// capacity is reported, not asserted: without a queue, a stall under
	// -race lets a fifth call arrive before one of four ends (CI saw 1 of
	// 114 and 7 of 124 shed that way).
	runtime.GC()
	after := closedLoop(time.Second)
	quarter := openLoop(capacity/4, 2*time.Second)
	if got.err != nil {
		t.Fatal(got.err)
	}
	t.Logf("capacity %.0f RPC/s (closed loop of 4: %d shed); at 2x: %d served, %d shed, %d other errors; after: closed loop of 4 %d served, %d shed; open loop at 0.25x %d served, %d shed",
		capacity, closed.shed.Load(), over.ok.Load(), over.shed.Load(), over.other.Load(), after.ok.Load(), after.shed.Load(), quarter.ok.Load(), quarter.shed.Load())
	if closed.shed.Load() != 0 || closed.other.Load() != 0 {
		t.Fatalf("closed loop of 4 before the overload: %d shed, %d errors; the server admits 4 at once", closed.shed.Load(), closed.other.Load())
	}
	if over.shed.Load() == 0 || over.ok.Load() == 0 || over.other.Load() != 0 {
		t.Fatalf("at 2x capacity: %d served, %d shed, %d other errors; want some of each of the first two, none of the last", over.ok.Load(), over.shed.Load(), over.other.Load())
	}
	if msg, _ := over.shedMsg.Load().(string); !strings.Contains(msg, "overloaded") || !strings.Contains(msg, "retry with backoff") {
		t.Fatalf("shed error says %q", msg)
	}
	if after.ok.Load() == 0 || after.shed.Load() != 0 || after.other.Load() != 0 {
		t.Fatalf("no recovery: a closed loop of 4 after the overload got %d served, %d shed, %d errors", after.ok.Load(), after.shed.Load(), after.other.Load())
	}
	if quarter.other.Load() != 0 {
		t.Fatalf("open loop at a quarter of capacity: %d errors other than shedding", quarter.other.Load())
	}
	if _, err := invariants.PublishGated(ctx, pipelines.HourlyConfig{Root: root}); err != nil {
		t.Fatal(err)
	}
	invariants.Require(t, ctx, invariants.Input{NoLate: true, Scenario: "10-load-shedding", Root: root, Sent: tr.Messages, Canaries: tr.Canaries,
		Logs: k.log.Bytes(), Ingest: got.res.Rows, NoDead: []string{record.ReasonKeyUnavailable}})
}
