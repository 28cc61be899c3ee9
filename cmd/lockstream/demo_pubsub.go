package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/lockstream/lockstream/loadgen"
	"github.com/lockstream/lockstream/record"
)

// Ways the demo feeds ingest (demo --pubsub).
const (
	demoPubSubAuto     = "auto"     // the emulator when one is at hand, else files
	demoPubSubEmulator = "emulator" // the emulator, or fail
	demoPubSubFiles    = "files"    // replay files
)

// demoPubSub is the Pub/Sub emulator the demo publishes to.
type demoPubSub struct {
	host    string
	project string
	stop    func()
	created map[string]bool // topics (and their subscriptions) made
}

// openDemoPubSub finds an emulator: $PUBSUB_EMULATOR_HOST, or the gcloud
// SDK's, started on a free loopback port for the demo's lifetime. nil
// (and no error) when mode is auto and there is none.
func openDemoPubSub(mode string, log io.Writer) (*demoPubSub, error) {
	project := fmt.Sprintf("lockstream-demo-%d", time.Now().UnixNano())
	if mode == demoPubSubFiles {
		return nil, nil
	}
	if h := os.Getenv("PUBSUB_EMULATOR_HOST"); h != "" {
		return &demoPubSub{host: h, project: project, stop: func() {}}, nil
	}
	bin := pubsubEmulatorBinary()
	if bin == "" {
		if mode == demoPubSubEmulator {
			return nil, fmt.Errorf("--pubsub emulator: PUBSUB_EMULATOR_HOST is not set and the gcloud SDK's pubsub-emulator is not installed")
		}
		return nil, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	host := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(bin, "--host=127.0.0.1", "--port="+strconv.Itoa(port))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // the JVM's children stop with it
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the Pub/Sub emulator: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop := func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	}
	fmt.Fprintf(log, "demo: starting the Pub/Sub emulator of the gcloud SDK on %s\n", host)
	deadline := time.Now().Add(90 * time.Second) // a JVM
	for {
		c, err := net.DialTimeout("tcp", host, 200*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			return nil, fmt.Errorf("the Pub/Sub emulator (%s) exited before listening", bin)
		default:
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("the Pub/Sub emulator did not listen on %s within 90s", host)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The clients of this process (the publisher, the pipelines) find it
	// through PUBSUB_EMULATOR_HOST, until the demo stops it.
	if err := os.Setenv("PUBSUB_EMULATOR_HOST", host); err != nil {
		stop()
		return nil, err
	}
	return &demoPubSub{host: host, project: project, stop: func() {
		stop()
		os.Unsetenv("PUBSUB_EMULATOR_HOST")
	}}, nil
}

// pubsubEmulatorBinary finds the gcloud SDK's Pub/Sub emulator ("" if none).
func pubsubEmulatorBinary() string {
	var roots []string
	for _, env := range []string{"LOCKSTREAM_GCLOUD_SDK", "CLOUDSDK_ROOT"} {
		if r := os.Getenv(env); r != "" {
			roots = append(roots, r)
		}
	}
	if g, err := exec.LookPath("gcloud"); err == nil {
		if real, err := filepath.EvalSymlinks(g); err == nil {
			roots = append(roots, filepath.Dir(filepath.Dir(real))) // <sdk>/bin/gcloud
		}
	}
	roots = append(roots, "/usr/lib/google-cloud-sdk", "/usr/share/google-cloud-sdk", "/google-cloud-sdk", "/opt/google-cloud-sdk")
	for _, r := range roots {
		p := filepath.Join(r, "platform", "pubsub-emulator", "bin", "cloud-pubsub-emulator")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	return ""
}

// publish publishes msgs with the load generator to the topic name
// (created, with its subscription of the same name, at the first call) and
// returns the subscription.
func (p *demoPubSub) publish(ctx context.Context, out io.Writer, name string, msgs []record.Message) (string, error) {
	// The client honours PUBSUB_EMULATOR_HOST (and so do the pipelines).
	client, err := pubsub.NewClient(ctx, p.project)
	if err != nil {
		return "", err
	}
	defer client.Close()
	topic := "projects/" + p.project + "/topics/" + name
	sub := "projects/" + p.project + "/subscriptions/" + name
	if !p.created[name] {
		if _, err := client.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: topic}); err != nil {
			return "", fmt.Errorf("create %s: %w", topic, err)
		}
		if _, err := client.SubscriptionAdminClient.CreateSubscription(ctx, &pubsubpb.Subscription{Name: sub, Topic: topic, AckDeadlineSeconds: 60}); err != nil {
			return "", fmt.Errorf("create %s: %w", sub, err)
		}
		if p.created == nil {
			p.created = map[string]bool{}
		}
		p.created[name] = true
	}
	pub := client.Publisher(topic)
	pub.PublishSettings.CountThreshold = pubsub.MaxPublishRequestCount
	pub.PublishSettings.DelayThreshold = 20 * time.Millisecond
	defer pub.Stop()
	sum, err := loadgen.Run(ctx, pub, loadgen.Messages(msgs), loadgen.Config{})
	if err != nil {
		return "", err
	}
	if sum.Errors > 0 {
		return "", fmt.Errorf("publish to %s: %d of %d failed (first: %v)", topic, sum.Errors, sum.Messages(), sum.FirstError)
	}
	fmt.Fprintf(out, "lockstream publish → %s: %s\n", topic, sum)
	return sub, nil
}

func demoPubSubMode(s string) error {
	switch s {
	case demoPubSubAuto, demoPubSubEmulator, demoPubSubFiles:
		return nil
	}
	return fmt.Errorf("--pubsub %q: want %s", s, strings.Join([]string{demoPubSubAuto, demoPubSubEmulator, demoPubSubFiles}, ", "))
}
