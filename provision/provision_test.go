package provision

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/lockstream/lockstream/bq"
	"github.com/lockstream/lockstream/bq/bqtest"
	"github.com/lockstream/lockstream/keyservice/storetest"
	"github.com/lockstream/lockstream/schemas"
)

// rpcLog records the Pub/Sub RPCs a client makes.
type rpcLog struct {
	mu      sync.Mutex
	methods []string
}

func (l *rpcLog) interceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	l.mu.Lock()
	l.methods = append(l.methods, method[strings.LastIndex(method, "/")+1:])
	l.mu.Unlock()
	return invoker(ctx, method, req, reply, cc, opts...)
}

// mutating returns the recorded calls that change something, and resets.
func (l *rpcLog) mutating() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, m := range l.methods {
		if !strings.HasPrefix(m, "Get") && !strings.HasPrefix(m, "List") {
			out = append(out, m)
		}
	}
	l.methods = nil
	return out
}

func actions(p *Plan) map[string]int {
	n := map[string]int{}
	for _, c := range p.Changes {
		n[c.Kind+" "+c.Action]++
	}
	return n
}

// TestProvisionIdempotentOnEmulator: on the real Pub/Sub emulator (and
// BigQuery through the recording server), a dry run changes nothing, the
// first apply creates every resource of every registered type, the second
// plan is all unchanged and its apply makes no call; a drifted
// subscription is planned as an update and fixed.
func TestProvisionIdempotentOnEmulator(t *testing.T) {
	storetest.PubSubEmulator(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	project := fmt.Sprintf("lockstream-prov-%d", time.Now().UnixNano())
	log := &rpcLog{}
	client, err := pubsub.NewClient(ctx, project, option.WithGRPCDialOption(grpc.WithChainUnaryInterceptor(log.interceptor)))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	srv := bqtest.NewServer(t)
	bqc, err := srv.Client(ctx, project)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := schemas.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Project: project, BigQuery: &bq.Loader{Client: bqc, Dataset: "events"}}
	types, tables := len(reg.Types()), len(reg.All())

	dry, err := Build(ctx, client, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := actions(dry); got["topic create"] != 2*types || got["subscription create"] != types || got["bigquery table create"] != tables || dry.Pending() != 3*types+tables {
		t.Fatalf("first plan %v", got)
	}
	if m := log.mutating(); len(m) != 0 {
		t.Fatalf("planning made changing calls: %v", m)
	}
	for _, op := range srv.Ops() {
		if op != "tables.get" {
			t.Fatalf("planning made BigQuery call %s", op)
		}
	}
	if _, err := client.TopicAdminClient.GetTopic(ctx, &pubsubpb.GetTopicRequest{Topic: TopicName(project, "lockstream-", reg.Types()[0])}); err == nil {
		t.Fatal("a topic exists after the dry run")
	}

	if err := dry.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if m := log.mutating(); len(m) != 3*types {
		t.Fatalf("apply made %d changing calls, want %d: %v", len(m), 3*types, m)
	}
	for _, typ := range reg.Types() {
		sub, err := client.SubscriptionAdminClient.GetSubscription(ctx, &pubsubpb.GetSubscriptionRequest{Subscription: SubscriptionName(project, "lockstream-", typ)})
		if err != nil {
			t.Fatal(err)
		}
		if sub.Topic != TopicName(project, "lockstream-", typ) || sub.AckDeadlineSeconds != 60 || sub.GetDeadLetterPolicy().GetDeadLetterTopic() != DeadLetterTopicName(project, "lockstream-", typ) {
			t.Fatalf("subscription %+v", sub)
		}
		for _, v := range reg.Versions(typ) {
			if srv.Table(project+":events."+bq.TableName(typ, v)) == nil {
				t.Fatalf("table of %s v%d not created", typ, v)
			}
		}
	}

	srv.Reset()
	again, err := Build(ctx, client, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if again.Pending() != 0 {
		t.Fatalf("second plan not all unchanged: %v", actions(again))
	}
	if err := again.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if m := log.mutating(); len(m) != 0 {
		t.Fatalf("second run made changing calls: %v", m)
	}
	for _, op := range srv.Ops() {
		if op != "tables.get" {
			t.Fatalf("second run made BigQuery call %s", op)
		}
	}

	// Drift: someone shortened one subscription's ack deadline.
	drifted := SubscriptionName(project, "lockstream-", reg.Types()[0])
	if _, err := client.SubscriptionAdminClient.UpdateSubscription(ctx, &pubsubpb.UpdateSubscriptionRequest{
		Subscription: &pubsubpb.Subscription{Name: drifted, AckDeadlineSeconds: 15}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"ack_deadline_seconds"}}}); err != nil {
		t.Fatal(err)
	}
	log.mutating()
	fix, err := Build(ctx, client, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if fix.Pending() != 1 || actions(fix)["subscription update"] != 1 {
		t.Fatalf("drift plan %v", actions(fix))
	}
	for _, c := range fix.Changes {
		if c.Action == Update && (c.Name != drifted || !strings.Contains(c.Detail, "ack_deadline_seconds: 15 -> 60")) {
			t.Fatalf("update %+v", c)
		}
	}
	if err := fix.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if m := log.mutating(); len(m) != 1 || m[0] != "UpdateSubscription" {
		t.Fatalf("drift fix calls %v", m)
	}
	if final, err := Build(ctx, client, cfg); err != nil || final.Pending() != 0 {
		t.Fatalf("after the fix: %v, %v", actions(final), err)
	}
}
