package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/keyservice/storetest"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/pipelines"
	"github.com/lockstream/lockstream/synth"
	"github.com/lockstream/lockstream/transforms"
)

func TestMain(m *testing.M) { ptest.MainWithDefault(m, "prism") }

// pubsubEmulator makes PUBSUB_EMULATOR_HOST point at a running emulator:
// the one in the environment (.ci/run starts one), or one started here.
func pubsubEmulator(t *testing.T) { storetest.PubSubEmulator(t) }

// TestIngestFromPubSubEmulator publishes traffic with duplicates and
// malformed messages to the real Pub/Sub emulator, forces redeliveries by
// nacking part of it once, runs ingest on prism until the subscription is
// idle, then hourly, and checks the invariants: every message acked, every
// message's output present (published, dead-lettered or a duplicate
// dropped), no event id twice, no plaintext anywhere.
func TestIngestFromPubSubEmulator(t *testing.T) {
	pubsubEmulator(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	project := fmt.Sprintf("lockstream-it-%d", time.Now().UnixNano())
	client, err := pubsub.NewClient(ctx, project)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	topic := "projects/" + project + "/topics/events"
	sub := "projects/" + project + "/subscriptions/ingest"
	if _, err := client.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: topic}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.SubscriptionAdminClient.CreateSubscription(ctx, &pubsubpb.Subscription{Name: sub, Topic: topic, AckDeadlineSeconds: 30}); err != nil {
		t.Fatal(err)
	}
	tr := synth.Generate(synth.Config{Events: 1500, Users: 50, Hours: 1, Seed: 21})
	pub := client.Publisher(topic)
	var results []*pubsub.PublishResult
	for _, m := range tr.Messages {
		results = append(results, pub.Publish(ctx, &pubsub.Message{Data: m.Data, Attributes: m.Attributes}))
	}
	for _, r := range results {
		if _, err := r.Get(ctx); err != nil {
			t.Fatal(err)
		}
	}
	pub.Stop()
	published := len(tr.Messages)

	// Force redeliveries: pull a batch and nack it once.
	pulled, err := client.SubscriptionAdminClient.Pull(ctx, &pubsubpb.PullRequest{Subscription: sub, MaxMessages: 200})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range pulled.ReceivedMessages {
		ids = append(ids, m.AckId)
	}
	if len(ids) == 0 {
		t.Fatal("nothing pulled to nack")
	}
	if err := client.SubscriptionAdminClient.ModifyAckDeadline(ctx, &pubsubpb.ModifyAckDeadlineRequest{Subscription: sub, AckIds: ids, AckDeadlineSeconds: 0}); err != nil {
		t.Fatal(err)
	}

	root := t.TempDir()
	keys := transforms.RegisterKeys("pubsub-it", keyclient.NewFake())
	res, err := pipelines.Ingest(ctx, pipelines.IngestConfig{Subscription: sub, Out: root, KeysURL: keys, IdleTimeout: 5 * time.Second, BatchSize: 200})
	if err != nil {
		t.Fatal(err)
	}
	tot := res.Totals()
	t.Logf("ingest: in %d, written %d, dead %d, late %d (published %d, nacked %d)", tot.In, tot.Written, tot.DeadTotal(), tot.Late, published, len(ids))
	if tot.In < int64(published) || tot.In != tot.Written+tot.DeadTotal()+tot.Late {
		t.Fatalf("accounting: %+v for %d published", tot, published)
	}
	if got := tot.DeadTotal(); got != int64(tr.Malformed) {
		t.Fatalf("dead-lettered %d, want the %d malformed", got, tr.Malformed)
	}

	// Every message was acked: nothing is left to pull.
	pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
	left, err := client.SubscriptionAdminClient.Pull(pctx, &pubsubpb.PullRequest{Subscription: sub, MaxMessages: 100})
	pcancel()
	if err != nil && !errors.Is(err, context.DeadlineExceeded) && !strings.Contains(err.Error(), "DeadlineExceeded") {
		t.Fatal(err)
	}
	if left != nil && len(left.ReceivedMessages) > 0 {
		t.Fatalf("%d messages were never acked", len(left.ReceivedMessages))
	}

	// Publish every hour ingest closed; every valid event exactly once.
	b, err := blob.Open(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	hours := map[string]bool{}
	for _, row := range res.Rows {
		if row.Type == "" || hours[row.Type+layout.FormatHour(row.Hour)] {
			continue
		}
		hours[row.Type+layout.FormatHour(row.Hour)] = true
		h := layout.Hour{Type: row.Type, Version: row.Version, Hour: row.Hour}
		if _, err := pipelines.Hourly(ctx, pipelines.HourlyConfig{Root: root, Type: h.Type, Version: h.Version, Hour: h.Hour}); err != nil {
			t.Fatal(err)
		}
		if err := pipelines.ReadDatasetEventIDs(ctx, b, h, func(id string) { seen[h.Type+"/"+id]++ }); err != nil {
			t.Fatal(err)
		}
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("event %s published %d times", id, n)
		}
	}
	if len(seen) != tr.Unique {
		t.Fatalf("published %d distinct events, sent %d", len(seen), tr.Unique)
	}
	// No plaintext PII in any byte under the root.
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, c := range tr.Canaries {
			if bytes.Contains(data, []byte(c)) {
				return fmt.Errorf("plaintext %q in %s", c, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
