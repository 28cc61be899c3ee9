package transforms

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"github.com/apache/beam/sdks/v2/go/pkg/beam"
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

	fn := &pullFn{Subscription: sub, BatchSize: 7, IdleTimeoutMs: 300, RunID: "r"}
	if err := fn.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	we := fn.CreateWatermarkEstimator(fn.InitialWatermarkEstimatorState(0, fn.CreateInitialRestriction(nil), nil))
	rt := fn.CreateTracker(fn.CreateInitialRestriction(nil))

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
	got := 0
	emit := func(_ beam.EventTime, b Batch) { got += len(b.Messages) }
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
	if got != n || st.Pulled != n || !st.Done {
		t.Fatalf("pulled %d messages (state: %+v), want %d and done", got, st, n)
	}
	if wm := we.CurrentWatermark(); !wm.Equal(mtime.MaxTimestamp.ToTime()) {
		t.Fatalf("watermark after the drain %v, want the end of time", wm)
	}
}
