package integration

import (
	"context"
	"net"
	"os"
	"sync"
	"testing"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/emptypb"
)

// subscriberProxy is a gRPC server in front of the Pub/Sub emulator's
// Subscriber service (the calls ingest makes: Pull, Acknowledge,
// ModifyAckDeadline, GetSubscription), with a hook that can fail
// acknowledgements: the emulator has no fault injection, and lockstream's
// production code has no test hooks.
type subscriberProxy struct {
	pubsubpb.UnimplementedSubscriberServer
	up pubsubpb.SubscriberClient

	mu      sync.Mutex
	failAck func(ids []string) error // nil: forward every ack
}

// startSubscriberProxy starts a proxy to the emulator at
// $PUBSUB_EMULATOR_HOST and returns its address.
func startSubscriberProxy(t *testing.T) (*subscriberProxy, string) {
	t.Helper()
	conn, err := grpc.NewClient(os.Getenv("PUBSUB_EMULATOR_HOST"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	p := &subscriberProxy{up: pubsubpb.NewSubscriberClient(conn)}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	pubsubpb.RegisterSubscriberServer(srv, p)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return p, lis.Addr().String()
}

func (p *subscriberProxy) setFailAck(f func(ids []string) error) {
	p.mu.Lock()
	p.failAck = f
	p.mu.Unlock()
}

func (p *subscriberProxy) Pull(ctx context.Context, r *pubsubpb.PullRequest) (*pubsubpb.PullResponse, error) {
	return p.up.Pull(ctx, r)
}

func (p *subscriberProxy) Acknowledge(ctx context.Context, r *pubsubpb.AcknowledgeRequest) (*emptypb.Empty, error) {
	p.mu.Lock()
	f := p.failAck
	p.mu.Unlock()
	if f != nil {
		if err := f(r.AckIds); err != nil {
			return nil, err
		}
	}
	return p.up.Acknowledge(ctx, r)
}

func (p *subscriberProxy) ModifyAckDeadline(ctx context.Context, r *pubsubpb.ModifyAckDeadlineRequest) (*emptypb.Empty, error) {
	return p.up.ModifyAckDeadline(ctx, r)
}

func (p *subscriberProxy) GetSubscription(ctx context.Context, r *pubsubpb.GetSubscriptionRequest) (*pubsubpb.Subscription, error) {
	return p.up.GetSubscription(ctx, r)
}
