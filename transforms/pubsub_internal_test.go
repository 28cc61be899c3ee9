package transforms

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/mtime"
)

// TestPullEstimatorReadDuringProcessElement: the SDK harness reads the
// Pub/Sub source's watermark estimator (progress and split requests) from
// other goroutines while ProcessElement runs. Here a reader does that all
// along a drain of pstest's subscription; under the race detector (make
// test) an unguarded estimator fails this test, as it failed
// TestScenario06_BadInputCorpus on 2026-12-04.
func TestPullEstimatorReadDuringProcessElement(t *testing.T) {
	ctx := context.Background()
	srv := pstest.NewServer()
	defer srv.Close()
	t.Setenv("PUBSUB_EMULATOR_HOST", srv.Addr)
	const topic, sub, n = "projects/p/topics/t", "projects/p/subscriptions/s", 50
	if _, err := srv.GServer.CreateTopic(ctx, &pubsubpb.Topic{Name: topic}); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.GServer.CreateSubscription(ctx, &pubsubpb.Subscription{Name: sub, Topic: topic, AckDeadlineSeconds: 60}); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		srv.Publish(topic, []byte(strconv.Itoa(i)), nil)
	}

	root := t.TempDir()
	fn := &pullFn{Subscription: sub, BatchSize: 7, Streams: 1, MaxOutstandingMessages: 100, MaxOutstandingBytes: 1 << 20,
		MaxDeliveryDelayMs: 1000, IdleTimeoutMs: 300, StaleAfterMs: time.Minute.Milliseconds(),
		Write: writeFnConfig{Root: root, KeysURL: registerTestKeys(&testKeys{}), RunID: "r", KeyRetryBudgetMs: 1000}}
	if err := fn.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	init := fn.CreateInitialRestriction(nil)
	rest := fn.SplitRestriction(nil, init)
	if len(rest) != 1 {
		t.Fatalf("%d restrictions for 1 stream", len(rest))
	}
	we := fn.CreateWatermarkEstimator(fn.InitialWatermarkEstimatorState(0, rest[0], nil))
	rt := fn.CreateTracker(rest[0])
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the harness's progress and split requests
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = fn.WatermarkEstimatorState(we)
			_ = we.CurrentWatermark()
			time.Sleep(100 * time.Microsecond)
		}
	}()
	var files []string
	emit := func(f string) { files = append(files, f) }
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		pc, err := fn.ProcessElement(ctx, we, rt, nil, emit)
		if err != nil {
			t.Fatal(err)
		}
		if !pc.ShouldResume() {
			break
		}
	}
	close(stop)
	wg.Wait()

	st := fn.WatermarkEstimatorState(we)
	if st.Pulled != n || !st.Done {
		t.Fatalf("pulled %d messages (state: %+v), want %d and done", st.Pulled, st, n)
	}
	// The payloads are not messages of the contract: every one is
	// dead-lettered, and acknowledged.
	for _, m := range srv.Messages() {
		if m.Acks == 0 {
			t.Fatalf("message %s was not acknowledged", m.ID)
		}
	}
	if wm := we.CurrentWatermark(); !wm.Equal(mtime.MaxTimestamp.ToTime()) {
		t.Fatalf("watermark after the drain %v, want the end of time", wm)
	}
}
