package integration

import (
	"context"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/dataset"
	"github.com/lockstream/lockstream/integration/invariants"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/pipelines"
	"github.com/lockstream/lockstream/synth"
	"github.com/lockstream/lockstream/transforms"
)

// TestScenario02_RedeliveryStormAndAckFailures: on the real Pub/Sub
// emulator, 30% of the messages are pulled and nacked once before ingest
// (a redelivery storm), and while ingest runs a third of its
// acknowledgements fail (every retry of them), so those messages come back
// after they were written. After hourly: 0 duplicates, nothing lost, the
// accounting balances.
func TestScenario02_RedeliveryStormAndAckFailures(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	sub, publish, ps := scenarioPubSub(t, ctx, "storm")
	tr := synth.Generate(synth.Config{Events: 2000, Users: 60, Hours: 2, Seed: 202})
	sent := publish(tr.Messages)

	// The storm: pull and nack 30% once.
	client := ps.SubscriptionAdminClient
	nacked := 0
	for nacked < len(sent)*3/10 {
		resp, err := client.Pull(ctx, &pubsubpb.PullRequest{Subscription: sub, MaxMessages: int32(min(500, len(sent)*3/10-nacked))})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, m := range resp.ReceivedMessages {
			ids = append(ids, m.AckId)
		}
		if err := client.ModifyAckDeadline(ctx, &pubsubpb.ModifyAckDeadlineRequest{Subscription: sub, AckIds: ids, AckDeadlineSeconds: 0}); err != nil {
			t.Fatal(err)
		}
		nacked += len(ids)
	}

	// Ack failures: ingest talks to the emulator through a proxy where
	// every third batch's acknowledgement fails on every attempt (decided
	// once per batch, by its first ack id; Internal, which the client does
	// not retry itself).
	proxy, addr := startSubscriberProxy(t)
	t.Setenv("PUBSUB_EMULATOR_HOST", addr)
	var mu sync.Mutex
	decided := map[string]bool{}
	batches, failed := 0, 0
	proxy.setFailAck(func(ids []string) error {
		mu.Lock()
		defer mu.Unlock()
		fail, ok := decided[ids[0]]
		if !ok {
			batches++
			fail = batches%3 == 0
			decided[ids[0]] = fail
			if fail {
				failed += len(ids)
			}
		}
		if fail {
			return status.Error(codes.Internal, "injected: acknowledge lost")
		}
		return nil
	})

	root := t.TempDir()
	keys := transforms.RegisterKeys("scenario02", keyclient.NewFake())
	logs := &lockedBuffer{}
	res, err := pipelines.Ingest(ctx, pipelines.IngestConfig{Subscription: sub, Out: root, KeysURL: keys, BatchSize: 200,
		IdleTimeout: 30 * time.Second, Progress: logs, ProgressEvery: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	proxy.setFailAck(nil)
	if failed == 0 {
		t.Fatal("no acknowledgement failed: the fault was not injected")
	}
	tot := res.Totals()
	t.Logf("nacked %d of %d before ingest; %d acknowledgements failed; ingest saw %d messages (redeliveries included)", nacked, len(sent), failed, tot.In)
	if tot.In <= int64(len(sent)) {
		t.Fatalf("ingest saw %d messages for %d sent: the failed acks caused no redelivery", tot.In, len(sent))
	}
	hours, err := invariants.PublishGated(ctx, pipelines.HourlyConfig{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	// The messages whose ack failed were written, then written again when
	// they came back (each failed delivery is one more copy in raw, but for
	// the few malformed ones, dead-lettered again): hourly drops those copies
	// with the generator's duplicates.
	b, err := blob.Open(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	var dropped int64
	for _, h := range hours {
		d, err := dataset.ReadPublished(ctx, b, h)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range d.Parts {
			dropped += p.Manifest.Input.DuplicatesDropped + p.Manifest.Input.LookbackDropped
		}
	}
	t.Logf("hourly dropped %d copies (%d duplicates sent by the generator, %d failed acknowledgements)", dropped, tr.Duplicates, failed)
	if want := int64(tr.Duplicates + failed - tr.Malformed); dropped < want {
		t.Fatalf("hourly dropped %d copies, want at least %d: the unacknowledged messages were not written twice", dropped, want)
	}
	invariants.Require(t, ctx, invariants.Input{Scenario: "02-redelivery-storm", Root: root, Sent: sent, Canaries: tr.Canaries,
		Logs: logs.Bytes(), Ingest: res.Rows, NoLate: true})
}
