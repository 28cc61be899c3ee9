package pipelines

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/clock"
	"github.com/lockstream/lockstream/completion"
	"github.com/lockstream/lockstream/dataset"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/synth"
)

// The streaming tests run ingest on prism against pstest (Pub/Sub's
// in-process fake) with a clock that runs faster than real time: pstest
// stamps publish times and expires leases on the same clock the pipeline
// is given, so minutes of traffic take seconds.

// psHarness is a pstest server with one topic and subscription, on clk.
type psHarness struct {
	srv        *pstest.Server
	clk        clock.Clock
	topic, sub string

	mu   sync.Mutex
	sent []record.Message // with pstest's ids and publish times
}

func newPSHarness(t *testing.T, clk clock.Clock, opts ...pstest.ServerReactorOption) *psHarness {
	t.Helper()
	srv := pstest.NewServer(opts...)
	t.Cleanup(func() { srv.Close() })
	srv.SetTimeNowFunc(clk.Now)
	h := &psHarness{srv: srv, clk: clk, topic: "projects/p/topics/events", sub: "projects/p/subscriptions/ingest"}
	ctx := context.Background()
	if _, err := srv.GServer.CreateTopic(ctx, &pubsubpb.Topic{Name: h.topic}); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.GServer.CreateSubscription(ctx, &pubsubpb.Subscription{Name: h.sub, Topic: h.topic, AckDeadlineSeconds: 60}); err != nil {
		t.Fatal(err)
	}
	return h
}

// publish publishes msgs now (their publish time is pstest's clock).
func (h *psHarness) publish(msgs ...record.Message) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range msgs {
		m.ID = h.srv.Publish(h.topic, m.Data, m.Attributes)
		m.PublishTime = h.srv.Message(m.ID).PublishTime
		h.sent = append(h.sent, m)
	}
}

// publishOver publishes msgs evenly over d of clock time; it returns when
// all are published or ctx ends.
func (h *psHarness) publishOver(ctx context.Context, msgs []record.Message, d time.Duration) {
	every := d / time.Duration(max(1, len(msgs)))
	for _, m := range msgs {
		h.publish(m)
		if h.clk.Sleep(ctx, every) != nil {
			return
		}
	}
}

func (h *psHarness) sentMessages() []record.Message {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]record.Message(nil), h.sent...)
}

// outageKeys is a key source that is unavailable (a transient error) while
// its clock is in [from, to).
type outageKeys struct {
	keyclient.Keys
	clk      clock.Clock
	from, to time.Time
	refused  atomic.Int64
}

func (k *outageKeys) down() bool {
	now := k.clk.Now()
	return !now.Before(k.from) && now.Before(k.to)
}

func (k *outageKeys) ForEncrypt(ctx context.Context, users, cats []string) ([]keyclient.UserKeys, error) {
	if k.down() {
		k.refused.Add(1)
		return nil, fmt.Errorf("outage: %w", keyclient.ErrUnavailable)
	}
	return k.Keys.ForEncrypt(ctx, users, cats)
}

// failSomeAcks is a pstest reactor that fails, on every attempt, the
// acknowledgements whose first ack id hashes to 0 mod every: those
// messages come back when their lease expires (redeliveries).
type failSomeAcks struct {
	every  uint32
	failed atomic.Int64
}

func (f *failSomeAcks) React(req any) (bool, any, error) {
	r, ok := req.(*pubsubpb.AcknowledgeRequest)
	if !ok || len(r.AckIds) == 0 {
		return false, nil, nil
	}
	// Ack ids are "<message id>:<delivery>": a redelivered message's new
	// ack id hashes anew, so it is acknowledged in the end.
	h := fnv.New32a()
	h.Write([]byte(r.AckIds[0]))
	if h.Sum32()%f.every == 0 {
		f.failed.Add(int64(len(r.AckIds)))
		return true, nil, status.Error(codes.Internal, "injected: acknowledgement lost") // the client retries Unavailable itself
	}
	return false, nil, nil
}

// streamTraffic is synthetic valid traffic (no malformed or late messages,
// some duplicates) of n events of u users; payload times do not matter:
// the hour is the publish time pstest gives.
func streamTraffic(n, u int, seed uint64) []record.Message {
	tr := synth.Generate(synth.Config{Events: n, Users: u, Hours: 1, Seed: seed, MalformedRate: -1, LateRate: -1})
	return tr.Messages
}

// requireDeliveredOnce publishes every hour of root through the gated
// path (no force) and checks: no part file under late/, no supplement,
// every distinct event sent published exactly once.
func requireDeliveredOnce(t *testing.T, ctx context.Context, root string, sent []record.Message, clk clock.Clock) {
	t.Helper()
	b, err := blob.Open(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	names, err := b.List(ctx, layout.LateArea+"/")
	if err != nil {
		t.Fatal(err)
	}
	if len(names) > 0 {
		t.Errorf("%d part files in late/ (want 0 events late), e.g. %s", len(names), names[0])
	}
	var cfgs []HourlyConfig
	raw, err := b.List(ctx, layout.RawArea+"/")
	if err != nil {
		t.Fatal(err)
	}
	seenHour := map[layout.Hour]bool{}
	for _, n := range raw {
		if area, h, _, ok := layout.ParseDir(n); ok && area == layout.RawArea && dataset.IsPartFile(n) && !seenHour[h] {
			seenHour[h] = true
			cfgs = append(cfgs, HourlyConfig{Root: root, Type: h.Type, Version: h.Version, Hour: h.Hour, Clock: clk})
		}
	}
	if len(cfgs) == 0 {
		t.Fatal("no raw data")
	}
	for i, o := range HourlyMany(ctx, cfgs) {
		if o.Err != nil {
			t.Fatalf("hourly %s %s (gated): %v", cfgs[i].Type, layout.FormatHour(cfgs[i].Hour), o.Err)
		}
	}
	want := map[string]bool{}
	for _, m := range sent {
		var p struct {
			EventID string `json:"event_id"`
		}
		if json.Unmarshal(m.Data, &p) == nil && p.EventID != "" {
			want[m.EventType()+"/"+p.EventID] = true
		}
	}
	got := map[string]int{}
	for h := range seenHour {
		d, err := dataset.ReadPublished(ctx, b, h)
		if err != nil {
			t.Fatal(err)
		}
		if d.Supplements() > 0 {
			t.Errorf("%s has %d supplements, want none", h, d.Supplements())
		}
		if err := ReadDatasetEventIDs(ctx, b, h, func(id string) { got[h.Type+"/"+id]++ }); err != nil {
			t.Fatal(err)
		}
	}
	lost, dups := 0, 0
	for k := range want {
		switch got[k] {
		case 0:
			lost++
		case 1:
		default:
			dups++
		}
	}
	for k := range got {
		if !want[k] {
			t.Errorf("published %s, never sent", k)
		}
	}
	if lost > 0 || dups > 0 {
		t.Fatalf("%d of %d events lost, %d published more than once", lost, len(want), dups)
	}
	t.Logf("%d distinct events published once in %d hours; 0 late, 0 supplements", len(want), len(seenHour))
}

// TestStreamingAcrossHourOutageAndRedeliveries is the acceptance test of
// the streaming source: traffic is published continuously across the
// 06/07 boundary, pstest delivers it out of order, the key service is down
// for two minutes spanning the boundary, and one acknowledgement in five
// fails on every attempt (those messages are redelivered). Then every
// event is published exactly once through the gated hourly path, and no
// event was routed late.
func TestStreamingAcrossHourOutageAndRedeliveries(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	start := time.Date(2026, 11, 23, 6, 57, 0, 0, time.UTC)
	clk := clock.Starting(start, 20)
	acks := &failSomeAcks{every: 5}
	h := newPSHarness(t, clk, pstest.ServerReactorOption{FuncName: "Acknowledge", Reactor: acks})
	keys := &outageKeys{Keys: keyclient.NewFake(), clk: clk, from: start.Add(2 * time.Minute), to: start.Add(4 * time.Minute)}
	root := t.TempDir()

	msgs := streamTraffic(1500, 120, 61)
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		h.publishOver(ctx, msgs, 8*time.Minute) // 06:57 to 07:05
	}()
	res, err := Ingest(ctx, IngestConfig{Subscription: h.sub, PubSubEmulatorHost: h.srv.Addr, Out: root, KeysURL: registerKeys(keys), Clock: clk,
		BatchSize: 50, Streams: 2, MaxOutstandingMessages: 300, MaxDeliveryDelay: 20 * time.Second, AllowedLateness: time.Minute,
		IdleTimeout: 2 * time.Minute, KeyRetryBudget: 500 * time.Millisecond})
	<-pubDone
	if err != nil {
		t.Fatal(err)
	}
	tot := res.Totals()
	t.Logf("ingest: in %d, written %d, late %d, dead %d; %d key calls refused in the outage, %d acks failed", tot.In, tot.Written, tot.Late, tot.DeadTotal(), keys.refused.Load(), acks.failed.Load())
	if keys.refused.Load() == 0 {
		t.Fatal("the key service outage was never hit")
	}
	if acks.failed.Load() == 0 {
		t.Fatal("no acknowledgement failed: no redeliveries were tested")
	}
	if tot.Late != 0 || tot.DeadTotal() != 0 {
		t.Errorf("late %d, dead-lettered %d: want 0 and 0", tot.Late, tot.DeadTotal())
	}
	sent := h.sentMessages()
	redelivered := 0
	for _, m := range h.srv.Messages() {
		redelivered += max(0, m.Deliveries-1)
	}
	if redelivered == 0 {
		t.Error("pstest redelivered nothing")
	}
	t.Logf("%d messages sent over 06:57-07:05 (clock), %d redeliveries", len(sent), redelivered)
	requireDeliveredOnce(t, ctx, root, sent, clk)
}

// TestPlannedStopAndRestartInsideAnHour: a streaming job is stopped as on
// SIGTERM in the middle of hour 06 while traffic goes on, and a new job
// takes over: hour 06 is published once, with no supplement and nothing
// late. In between, the stopped writer leaves the hour open.
func TestPlannedStopAndRestartInsideAnHour(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	start := time.Date(2026, 11, 23, 6, 40, 0, 0, time.UTC)
	clk := clock.Starting(start, 30)
	h := newPSHarness(t, clk)
	root := t.TempDir()
	keys := registerKeys(keyclient.NewFake())
	msgs := streamTraffic(1200, 100, 62)
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		h.publishOver(ctx, msgs, 26*time.Minute) // 06:40 to 07:06
	}()
	cfg := IngestConfig{Subscription: h.sub, PubSubEmulatorHost: h.srv.Addr, Out: root, KeysURL: keys, Clock: clk, BatchSize: 50, Streams: 2,
		MaxDeliveryDelay: 20 * time.Second, AllowedLateness: time.Minute}

	first := cfg
	first.RunID = "first"
	firstDone := make(chan error, 1)
	go func() { _, err := Ingest(ctx, first); firstDone <- err }()
	for clk.Now().Before(start.Add(10 * time.Minute)) { // 06:50
		if clk.Sleep(ctx, 10*time.Second) != nil {
			t.Fatal(ctx.Err())
		}
	}
	if err := RequestStop(ctx, root, "first"); err != nil {
		t.Fatal(err)
	}
	if err := <-firstDone; err != nil {
		t.Fatalf("first job: %v", err)
	}
	b, _ := blob.Open(ctx, root)
	recs, err := completion.Load(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.State != completion.StateStopped {
			t.Errorf("after the planned stop %s is %s, want stopped", r.ID(), r.State)
		}
	}
	h6 := layout.Hour{Type: "PlaybackEvent", Version: 1, Hour: start.Truncate(time.Hour)}
	if d := completion.Decide(h6, recs, clk.Now()); d.Complete {
		t.Fatal("the planned stop completed the hour it stopped in")
	}
	stoppedAt := clk.Now()

	second := cfg
	second.RunID = "second"
	second.IdleTimeout = 2 * time.Minute
	if _, err := Ingest(ctx, second); err != nil {
		t.Fatalf("second job: %v", err)
	}
	<-pubDone
	t.Logf("first job stopped at %s (clock); second job drained at %s", stoppedAt.Format("15:04:05"), clk.Now().Format("15:04:05"))
	requireDeliveredOnce(t, ctx, root, h.sentMessages(), clk)
	if ok, _ := completion.IsComplete(ctx, b, h6); !ok {
		t.Error("hour 06 has no _COMPLETE after the second job")
	}
}

// TestBackfillDoesNotCompleteALiveHour: a replay backfill of events of
// hour 06 finishes while a streaming job is in the middle of hour 06: the
// hour stays open (the live stream holds it) until the stream passes it.
func TestBackfillDoesNotCompleteALiveHour(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	start := time.Date(2026, 11, 23, 6, 30, 0, 0, time.UTC)
	clk := clock.Starting(start, 60)
	h := newPSHarness(t, clk)
	root := t.TempDir()
	keys := keyclient.NewFake()
	msgs := streamTraffic(600, 50, 63)
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		h.publishOver(ctx, msgs[:300], 5*time.Minute) // 06:30-06:35
	}()
	streamDone := make(chan error, 1)
	go func() {
		_, err := Ingest(ctx, IngestConfig{Subscription: h.sub, PubSubEmulatorHost: h.srv.Addr, Out: root, KeysURL: registerKeys(keys), Clock: clk, RunID: "stream",
			BatchSize: 50, Streams: 1, MaxDeliveryDelay: 20 * time.Second, AllowedLateness: time.Minute,
			IdleTimeout: 35 * time.Minute, StaleAfter: 10 * time.Minute})
		streamDone <- err
	}()
	<-pubDone
	b, _ := blob.Open(ctx, root)
	// Wait until the stream recorded a watermark in hour 06.
	for {
		recs, err := completion.Load(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) > 0 && recs[0].Watermark != nil && recs[0].Watermark.After(start) {
			break
		}
		if clk.Sleep(ctx, 10*time.Second) != nil {
			t.Fatal("the stream recorded no watermark")
		}
	}

	// The backfill: events published (by their replay lines) in hour 06.
	backfill := streamTraffic(200, 30, 64)
	for i := range backfill {
		backfill[i].PublishTime = start.Add(time.Duration(i) * time.Second)
		backfill[i].Data = []byte(strings.ReplaceAll(string(backfill[i].Data), `"event_id":"ev-`, `"event_id":"bf-`))
	}
	in := t.TempDir() + "/backfill.ndjson"
	writeReplay(t, in, backfill)
	res, err := Ingest(ctx, IngestConfig{Inputs: []string{in}, Out: root, KeysURL: registerKeys(keys), Clock: clk, RunID: "backfill"})
	if err != nil {
		t.Fatal(err)
	}
	h6 := layout.Hour{Type: "PlaybackEvent", Version: 1, Hour: start.Truncate(time.Hour)}
	if ok, _ := completion.IsComplete(ctx, b, h6); ok {
		t.Fatal("the backfill completed the hour a live stream is in")
	}
	var why string
	for _, d := range res.Hours {
		if d.Hour == h6 {
			why = d.Reason
		}
	}
	if !strings.Contains(why, "stream/stream-000") {
		t.Errorf("the backfill's end says hour 06 waits because %q, want the live stream named", why)
	}
	// The stream goes on, idle, past 07:00 + lateness + delivery delay: it
	// completes hour 06, then drains.
	if err := <-streamDone; err != nil {
		t.Fatal(err)
	}
	m, err := completion.ReadMarker(ctx, b, h6)
	if err != nil {
		t.Fatalf("hour 06 did not complete once the stream passed it: %v", err)
	}
	if !strings.HasPrefix(m.ObservedBy, "stream/") || len(m.Vouchers) < 2 {
		t.Errorf("marker observed by %q with vouchers %v, want the stream and both writers", m.ObservedBy, m.Vouchers)
	}
	requireDeliveredOnce(t, ctx, root, append(h.sentMessages(), backfill...), clk)
}
