// Package provision creates, idempotently, what each event type of the
// schema registry needs on Google Cloud: its Pub/Sub topic, a dead-letter
// topic, the ingest subscription (dead-letter and retry policy), and with
// BigQuery the table of each version. Build reads the current state and
// returns a plan (create / update / unchanged per resource) without changing
// anything; Plan.Apply carries it out. Running it twice changes nothing the
// second time.
//
// Names, per type T (all versions share one topic: messages carry their
// schema_version attribute):
//
//	projects/P/topics/<prefix>T                  events of T
//	projects/P/topics/<prefix>T-deadletter       messages Pub/Sub gave up delivering
//	projects/P/subscriptions/<prefix>T-ingest    what `lockstream ingest --subscription` reads
//
// Topic schemas are not attached: Pub/Sub validates Avro in its JSON
// encoding, where a nullable field is {"string": "x"}, while the message
// contract (README.md, "Input") is the plain JSON object; a topic schema would reject
// valid producers. Ingest validates against the registry and dead-letters
// with a reason instead.
package provision

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/lockstream/lockstream/bq"
	"github.com/lockstream/lockstream/schemas"
)

// Config is what to provision.
type Config struct {
	Project  string
	Registry *schemas.Registry // nil: schemas.Embedded()
	Prefix   string            // of every resource name; default "lockstream-"

	// The ingest subscription: ack deadline (default 60 s), deliveries
	// before a message goes to the dead-letter topic (default 10), retry
	// backoff (default 10 s to 600 s), retention of unacked messages
	// (default 7 days).
	AckDeadline         time.Duration
	MaxDeliveryAttempts int
	MinBackoff          time.Duration
	MaxBackoff          time.Duration
	Retention           time.Duration

	// BigQuery, when set, also provisions the table of every version.
	BigQuery *bq.Loader
}

func (c *Config) defaults() error {
	if c.Project == "" {
		return errors.New("provision: no project")
	}
	if c.Registry == nil {
		reg, err := schemas.Embedded()
		if err != nil {
			return err
		}
		c.Registry = reg
	}
	if c.Prefix == "" {
		c.Prefix = "lockstream-"
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.AckDeadline, 60*time.Second)
	def(&c.MinBackoff, 10*time.Second)
	def(&c.MaxBackoff, 600*time.Second)
	def(&c.Retention, 7*24*time.Hour)
	if c.MaxDeliveryAttempts == 0 {
		c.MaxDeliveryAttempts = 10
	}
	return nil
}

// Actions of a Change.
const (
	Create    = "create"
	Update    = "update"
	Unchanged = "unchanged"
)

// Change is one resource of the plan.
type Change struct {
	Kind   string // "topic", "subscription", "bigquery table"
	Name   string
	Action string
	Detail string // what differs, for updates
	apply  func(ctx context.Context) error
}

// Plan is the changes Build found.
type Plan struct{ Changes []Change }

// Pending counts the changes that are not Unchanged.
func (p *Plan) Pending() int {
	n := 0
	for _, c := range p.Changes {
		if c.Action != Unchanged {
			n++
		}
	}
	return n
}

// Apply makes every pending change, in plan order (topics before the
// subscriptions that name them).
func (p *Plan) Apply(ctx context.Context) error {
	for _, c := range p.Changes {
		if c.apply == nil {
			continue
		}
		if err := c.apply(ctx); err != nil {
			return fmt.Errorf("provision: %s %s %s: %w", c.Action, c.Kind, c.Name, err)
		}
	}
	return nil
}

// TopicName and SubscriptionName are the resources of one event type.
func TopicName(project, prefix, eventType string) string {
	return "projects/" + project + "/topics/" + prefix + eventType
}

func DeadLetterTopicName(project, prefix, eventType string) string {
	return TopicName(project, prefix, eventType) + "-deadletter"
}

func SubscriptionName(project, prefix, eventType string) string {
	return "projects/" + project + "/subscriptions/" + prefix + eventType + "-ingest"
}

// Build reads what exists and plans what is missing or different. It makes
// only read calls.
func Build(ctx context.Context, client *pubsub.Client, cfg Config) (*Plan, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	p := &Plan{}
	for _, typ := range cfg.Registry.Types() {
		topic := TopicName(cfg.Project, cfg.Prefix, typ)
		dead := DeadLetterTopicName(cfg.Project, cfg.Prefix, typ)
		for _, name := range []string{topic, dead} {
			c, err := planTopic(ctx, client, name, typ)
			if err != nil {
				return nil, err
			}
			p.Changes = append(p.Changes, c)
		}
		c, err := planSubscription(ctx, client, cfg, typ, topic, dead)
		if err != nil {
			return nil, err
		}
		p.Changes = append(p.Changes, c)
		if cfg.BigQuery != nil {
			for _, v := range cfg.Registry.Versions(typ) {
				s, err := cfg.Registry.Lookup(typ, v)
				if err != nil {
					return nil, err
				}
				c, err := planTable(ctx, cfg.BigQuery, s)
				if err != nil {
					return nil, err
				}
				p.Changes = append(p.Changes, c)
			}
		}
	}
	return p, nil
}

func notFound(err error) bool { return status.Code(err) == codes.NotFound }

func planTopic(ctx context.Context, client *pubsub.Client, name, typ string) (Change, error) {
	c := Change{Kind: "topic", Name: name, Action: Unchanged}
	_, err := client.TopicAdminClient.GetTopic(ctx, &pubsubpb.GetTopicRequest{Topic: name})
	switch {
	case notFound(err):
		c.Action = Create
		c.apply = func(ctx context.Context) error {
			_, err := client.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: name, Labels: map[string]string{"lockstream": "events"}})
			if status.Code(err) == codes.AlreadyExists {
				return nil // created meanwhile: same result
			}
			return err
		}
	case err != nil:
		return c, fmt.Errorf("provision: get topic %s: %w", name, err)
	}
	return c, nil
}

// wantSubscription is the ingest subscription of one type.
func wantSubscription(cfg Config, name, topic, dead string) *pubsubpb.Subscription {
	return &pubsubpb.Subscription{
		Name: name, Topic: topic,
		AckDeadlineSeconds:       int32(cfg.AckDeadline / time.Second),
		MessageRetentionDuration: durationpb.New(cfg.Retention),
		DeadLetterPolicy:         &pubsubpb.DeadLetterPolicy{DeadLetterTopic: dead, MaxDeliveryAttempts: int32(cfg.MaxDeliveryAttempts)},
		RetryPolicy:              &pubsubpb.RetryPolicy{MinimumBackoff: durationpb.New(cfg.MinBackoff), MaximumBackoff: durationpb.New(cfg.MaxBackoff)},
		Labels:                   map[string]string{"lockstream": "ingest"},
	}
}

func planSubscription(ctx context.Context, client *pubsub.Client, cfg Config, typ, topic, dead string) (Change, error) {
	name := SubscriptionName(cfg.Project, cfg.Prefix, typ)
	want := wantSubscription(cfg, name, topic, dead)
	c := Change{Kind: "subscription", Name: name, Action: Unchanged}
	have, err := client.SubscriptionAdminClient.GetSubscription(ctx, &pubsubpb.GetSubscriptionRequest{Subscription: name})
	switch {
	case notFound(err):
		c.Action = Create
		c.apply = func(ctx context.Context) error {
			_, err := client.SubscriptionAdminClient.CreateSubscription(ctx, want)
			return err
		}
		return c, nil
	case err != nil:
		return c, fmt.Errorf("provision: get subscription %s: %w", name, err)
	}
	if have.Topic != topic {
		return c, fmt.Errorf("provision: subscription %s reads %s, not %s: a subscription's topic cannot change; delete it or use another --prefix", name, have.Topic, topic)
	}
	var paths, diffs []string
	diff := func(path, format string, a ...any) {
		paths = append(paths, path)
		diffs = append(diffs, path+": "+fmt.Sprintf(format, a...))
	}
	if have.AckDeadlineSeconds != want.AckDeadlineSeconds {
		diff("ack_deadline_seconds", "%d -> %d", have.AckDeadlineSeconds, want.AckDeadlineSeconds)
	}
	if have.GetMessageRetentionDuration().AsDuration() != cfg.Retention {
		diff("message_retention_duration", "%v -> %v", have.GetMessageRetentionDuration().AsDuration(), cfg.Retention)
	}
	hd := have.GetDeadLetterPolicy()
	if hd.GetDeadLetterTopic() != dead || hd.GetMaxDeliveryAttempts() != want.DeadLetterPolicy.MaxDeliveryAttempts {
		diff("dead_letter_policy", "%s after %d -> %s after %d", hd.GetDeadLetterTopic(), hd.GetMaxDeliveryAttempts(), dead, want.DeadLetterPolicy.MaxDeliveryAttempts)
	}
	hr := have.GetRetryPolicy()
	if hr.GetMinimumBackoff().AsDuration() != cfg.MinBackoff || hr.GetMaximumBackoff().AsDuration() != cfg.MaxBackoff {
		diff("retry_policy", "%v..%v -> %v..%v", hr.GetMinimumBackoff().AsDuration(), hr.GetMaximumBackoff().AsDuration(), cfg.MinBackoff, cfg.MaxBackoff)
	}
	if len(paths) > 0 {
		c.Action, c.Detail = Update, fmt.Sprint(diffs)
		c.apply = func(ctx context.Context) error {
			_, err := client.SubscriptionAdminClient.UpdateSubscription(ctx, &pubsubpb.UpdateSubscriptionRequest{
				Subscription: want, UpdateMask: &fieldmaskpb.FieldMask{Paths: slices.Clone(paths)}})
			return err
		}
	}
	return c, nil
}

func planTable(ctx context.Context, l *bq.Loader, s *schemas.Schema) (Change, error) {
	c := Change{Kind: "bigquery table", Name: l.Dataset + "." + bq.TableName(s.Type, s.Version), Action: Unchanged}
	exists, err := l.TableExists(ctx, s)
	if err != nil {
		return c, err
	}
	if !exists {
		c.Action = Create
		c.apply = func(ctx context.Context) error { return l.EnsureTable(ctx, s) }
	}
	return c, nil
}
