package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
)

// TestPublishCommand: lockstream publish against pstest sends about
// rate × duration messages of the types asked for, prints progress and a
// summary; configuration errors fail before anything is sent.
func TestPublishCommand(t *testing.T) {
	srv := pstest.NewServer()
	defer srv.Close()
	t.Setenv("PUBSUB_EMULATOR_HOST", srv.Addr)
	const topic = "projects/p/topics/load"
	if _, err := srv.GServer.CreateTopic(context.Background(), &pubsubpb.Topic{Name: topic}); err != nil {
		t.Fatal(err)
	}
	var out, errw bytes.Buffer
	c := newPublishCmd()
	c.SetOut(&out)
	c.SetErr(&errw)
	c.SetArgs([]string{"--topic", topic, "--rate", "300/s", "--duration", "1s", "--type", "PlaybackEvent:v1", "--duplicates", "10%", "--malformed", "2%", "--seed", "7"})
	if err := c.Execute(); err != nil {
		t.Fatalf("publish: %v\n%s", err, errw.String())
	}
	msgs := srv.Messages()
	if len(msgs) < 250 || len(msgs) > 360 {
		t.Fatalf("%d messages at 300/s for 1s", len(msgs))
	}
	for _, m := range msgs {
		if m.Attributes["event_type"] != "PlaybackEvent" || m.Attributes["schema_version"] != "1" {
			t.Fatalf("attributes %v", m.Attributes)
		}
	}
	if !strings.Contains(out.String(), "published ") || !strings.Contains(out.String(), " duplicates, ") {
		t.Fatalf("summary: %q", out.String())
	}

	for _, args := range [][]string{
		{"--topic", "events", "--duration", "1s"},
		{"--topic", topic},
		{"--topic", topic, "--duration", "1s", "--rate", "fast"},
		{"--topic", topic, "--duration", "1s", "--duplicates", "150%"},
		{"--topic", topic, "--duration", "1s", "--type", "NoSuchType"},
		{"--topic", topic, "--from", "x.ndjson", "--type", "PlaybackEvent"},
	} {
		c := newPublishCmd()
		c.SetOut(&out)
		c.SetErr(&errw)
		c.SetArgs(args)
		n := len(srv.Messages())
		start := time.Now()
		if err := c.Execute(); err == nil {
			t.Fatalf("%v: no error", args)
		}
		if len(srv.Messages()) != n || time.Since(start) > 2*time.Second {
			t.Fatalf("%v: sent before failing", args)
		}
	}
}

func TestRateAndShareFlags(t *testing.T) {
	var r rateFlag
	for in, want := range map[string]float64{"1000/s": 1000, "60000/m": 1000, "500": 500, "0": 0, "7200/h": 2} {
		if err := r.Set(in); err != nil || float64(r) != want {
			t.Fatalf("rate %q: %v %v", in, float64(r), err)
		}
	}
	var p shareFlag
	for in, want := range map[string]float64{"5%": 0.05, "0.01": 0.01, "0": 0} {
		if err := p.Set(in); err != nil || float64(p) != want {
			t.Fatalf("share %q: %v %v", in, float64(p), err)
		}
	}
	for _, bad := range []string{"-1", "100%", "x%"} {
		if p.Set(bad) == nil {
			t.Fatalf("share %q accepted", bad)
		}
	}
}
