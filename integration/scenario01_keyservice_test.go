package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/lockstream/lockstream/integration/invariants"
	"github.com/lockstream/lockstream/keyservice/server"
	"github.com/lockstream/lockstream/pipelines"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/synth"
)

// scenarioPubSub creates a topic and an ingest subscription on the
// emulator and returns the subscription, a publish function that returns
// the messages with their server-assigned ids, and the client.
func scenarioPubSub(t *testing.T, ctx context.Context, name string) (sub string, publish func([]record.Message) []record.Message, client *pubsub.Client) {
	t.Helper()
	pubsubEmulator(t)
	project := fmt.Sprintf("lockstream-%s-%d", name, time.Now().UnixNano())
	client, err := pubsub.NewClient(ctx, project)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	topic := "projects/" + project + "/topics/events"
	sub = "projects/" + project + "/subscriptions/ingest"
	if _, err := client.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: topic}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.SubscriptionAdminClient.CreateSubscription(ctx, &pubsubpb.Subscription{Name: sub, Topic: topic, AckDeadlineSeconds: 20}); err != nil {
		t.Fatal(err)
	}
	pub := client.Publisher(topic)
	t.Cleanup(pub.Stop)
	publish = func(msgs []record.Message) []record.Message {
		out := make([]record.Message, len(msgs))
		results := make([]*pubsub.PublishResult, len(msgs))
		for i, m := range msgs {
			results[i] = pub.Publish(ctx, &pubsub.Message{Data: m.Data, Attributes: m.Attributes})
		}
		for i, r := range results {
			id, err := r.Get(ctx)
			if err != nil {
				t.Errorf("publish: %v", err)
			}
			out[i] = msgs[i]
			out[i].ID = id
		}
		return out
	}
	return sub, publish, client
}

// TestScenario01_KeyServiceDownAndSlow: the key service goes down for 30 s
// in the middle of a Pub/Sub ingest and comes back: batches that cannot get
// keys are held (their messages stay leased, unwritten, and hold the
// watermark) until it answers, so nothing is lost, late or dead-lettered,
// nothing is written in plaintext, and the backlog drains. Then the key service is slow (p99 ~500 ms): throughput drops,
// nothing breaks.
func TestScenario01_KeyServiceDownAndSlow(t *testing.T) {
	// run ingests events from Pub/Sub while during acts on the key server;
	// paced spreads the publishing over 20 s (so an outage falls in the
	// middle of the stream), otherwise everything is published first and
	// the elapsed time measures the pipeline.
	run := func(t *testing.T, name string, during func(k *scenarioKeyServer), events int, paced bool) (*invariants.Summary, time.Duration) {
		ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
		defer cancel()
		k := startScenarioKeyServer(t, server.Config{}, nil)
		sub, publish, _ := scenarioPubSub(t, ctx, name)
		// Many distinct users: most batches need keys the client has not cached.
		tr := synth.Generate(synth.Config{Events: events, Users: events / 2, Hours: 1, Seed: 101})
		var sent []record.Message
		published := make(chan struct{})
		pace := func() {
			defer close(published)
			const chunks = 20
			for i := 0; i < chunks; i++ {
				lo, hi := i*len(tr.Messages)/chunks, (i+1)*len(tr.Messages)/chunks
				sent = append(sent, publish(tr.Messages[lo:hi])...)
				if paced {
					time.Sleep(time.Second)
				}
			}
		}
		if paced {
			go pace()
		} else {
			pace()
		}
		go during(k)
		root := t.TempDir()
		logs := &lockedBuffer{}
		start := time.Now()
		res, err := pipelines.Ingest(ctx, pipelines.IngestConfig{Subscription: sub, Out: root, KeysURL: k.url(),
			IdleTimeout: 20 * time.Second, BatchSize: 100, KeyRetryBudget: 3 * time.Second, Progress: logs, ProgressEvery: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		elapsed := time.Since(start) - 20*time.Second // minus the idle wait at the end
		<-published
		if _, err := invariants.PublishGated(ctx, pipelines.HourlyConfig{Root: root}); err != nil {
			t.Fatal(err)
		}
		s := invariants.Require(t, ctx, invariants.Input{NoLate: true, Scenario: "01-" + name, Root: root, Sent: sent, Canaries: tr.Canaries,
			Logs: append(logs.Bytes(), k.log.Bytes()...), Ingest: res.Rows, NoDead: []string{record.ReasonKeyUnavailable},
			KeysURL: k.url(), Readable: []string{synth.IP(0), synth.IP(1), synth.IP(2)}})
		t.Logf("%s: %d messages in %v (%.0f events/s); progress:\n%s", name, len(sent), elapsed.Round(time.Second), float64(len(sent))/elapsed.Seconds(), lastLines(logs.Bytes(), 3))
		return s, elapsed
	}

	t.Run("down-30s", func(t *testing.T) {
		run(t, "down", func(k *scenarioKeyServer) {
			time.Sleep(4 * time.Second)
			k.stop()
			time.Sleep(30 * time.Second)
			k.start(t)
		}, 3000, true)
	})
	t.Run("slow-p99-500ms", func(t *testing.T) {
		_, normal := run(t, "normal", func(*scenarioKeyServer) {}, 2000, false)
		_, slow := run(t, "slow", func(k *scenarioKeyServer) {
			k.slow(func() time.Duration {
				if rand.IntN(50) == 0 {
					return 500 * time.Millisecond
				}
				return 30 * time.Millisecond
			})
		}, 2000, false)
		t.Logf("ingest time normal %v, with a slow key service %v", normal.Round(time.Second), slow.Round(time.Second))
	})
}

// lastLines returns the last n lines of b.
func lastLines(b []byte, n int) string {
	lines := 0
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == '\n' {
			lines++
			if lines > n {
				return string(b[i+1:])
			}
		}
	}
	return string(b)
}
