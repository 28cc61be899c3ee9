package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/lockstream/lockstream/record"
	"github.com/lockstream/lockstream/schemas"
	"github.com/lockstream/lockstream/synth"
)

func fakeTopic(t *testing.T) (*pstest.Server, *pubsub.Publisher) {
	t.Helper()
	srv := pstest.NewServer()
	t.Cleanup(func() { srv.Close() })
	ctx := context.Background()
	const topic = "projects/p/topics/events"
	if _, err := srv.GServer.CreateTopic(ctx, &pubsubpb.Topic{Name: topic}); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	client, err := pubsub.NewClient(ctx, "p", option.WithGRPCConn(conn))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	pub := client.Publisher(topic)
	t.Cleanup(pub.Stop)
	return srv, pub
}

// TestRunSynthetic: a paced synthetic run sends about rate × duration
// messages; every one Pub/Sub accepted is on the topic; duplicates repeat
// an earlier payload; malformed payloads are not JSON; events of every
// type asked for are valid for their schema.
func TestRunSynthetic(t *testing.T) {
	srv, pub := fakeTopic(t)
	reg, err := schemas.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	var scs []*schemas.Schema
	for _, typ := range reg.Types() {
		s, err := reg.Latest(typ)
		if err != nil {
			t.Fatal(err)
		}
		scs = append(scs, s)
	}
	var progress bytes.Buffer
	cfg := Config{Rate: 400, Duration: 1500 * time.Millisecond, Duplicates: 0.1, Malformed: 0.05, Seed: 3,
		Progress: &progress, ProgressEvery: 500 * time.Millisecond}
	sum, err := Run(context.Background(), pub, Synthetic(synth.NewStream(synth.StreamConfig{Schemas: scs, Users: 20})), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(sum)
	if sum.Errors != 0 || sum.Sent != sum.Messages() {
		t.Fatalf("summary %+v: every message must be sent", sum)
	}
	if n := sum.Messages(); n < 450 || n > 620 {
		t.Fatalf("%d messages at 400/s for 1.5s", n)
	}
	if sum.Duplicates == 0 || sum.Malformed == 0 {
		t.Fatalf("summary %+v: want some duplicates and malformed messages", sum)
	}
	if !strings.Contains(progress.String(), "sent (") {
		t.Fatalf("no progress line: %q", progress.String())
	}
	msgs := srv.Messages()
	if int64(len(msgs)) != sum.Sent {
		t.Fatalf("the topic has %d messages, the summary says %d", len(msgs), sum.Sent)
	}
	seen := map[string]int{}
	types := map[string]bool{}
	var events, dups, bad int64
	for _, m := range msgs {
		if !json.Valid(m.Data) {
			bad++
			continue
		}
		seen[string(m.Data)]++
		if seen[string(m.Data)] > 1 {
			dups++
			continue
		}
		events++
		s, err := reg.Resolve(m.Attributes[record.AttrEventType], m.Attributes[record.AttrSchemaVersion])
		if err != nil {
			t.Fatal(err)
		}
		var ev schemas.Event
		if err := s.Decode(m.Data, &ev); err != nil {
			t.Fatalf("a synthetic %s event does not decode: %v", s.Type, err)
		}
		types[s.Type] = true
	}
	if events != sum.Events || dups != sum.Duplicates || bad != sum.Malformed {
		t.Fatalf("on the topic: %d events, %d duplicates, %d malformed; summary %+v", events, dups, bad, sum)
	}
	if len(types) != len(scs) {
		t.Fatalf("types sent %v, want all of %d", types, len(scs))
	}
}

// TestRunFile: a replay file is sent once, in order, unpaced; a line that
// is not a message fails the run with its line number.
func TestRunFile(t *testing.T) {
	srv, pub := fakeTopic(t)
	tr := synth.Generate(synth.Config{Events: 50, Users: 5, Seed: 1})
	var buf bytes.Buffer
	for _, m := range tr.Messages {
		line, err := m.MarshalLine()
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(append(line, '\n'))
	}
	sum, err := Run(context.Background(), pub, File(bytes.NewReader(buf.Bytes())), Config{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Sent != int64(len(tr.Messages)) || sum.Events != sum.Sent {
		t.Fatalf("summary %+v for %d lines", sum, len(tr.Messages))
	}
	got := srv.Messages()
	for i, m := range got {
		if !bytes.Equal(m.Data, tr.Messages[i].Data) {
			t.Fatalf("message %d differs from line %d", i, i+1)
		}
	}

	_, err = Run(context.Background(), pub, File(strings.NewReader(buf.String()+"pii-not-a-message\n")), Config{})
	if err == nil || !strings.Contains(err.Error(), "line ") || strings.Contains(err.Error(), "pii-") {
		t.Fatalf("a bad line: %v", err)
	}
}
