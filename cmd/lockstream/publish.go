package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"github.com/spf13/cobra"

	"github.com/lockstream/lockstream/loadgen"
	"github.com/lockstream/lockstream/schemas"
	"github.com/lockstream/lockstream/synth"
)

func init() { register(newPublishCmd) }

type publishFlags struct {
	topic, from           string
	rate                  rateFlag
	duration              time.Duration
	types                 []string
	duplicates, malformed shareFlag
	users                 int
	seed                  uint64
	quiet                 bool
}

func newPublishCmd() *cobra.Command {
	var f publishFlags
	c := &cobra.Command{
		Use:   "publish --topic projects/P/topics/T --rate N/s --duration D [--type T[:vN]]... [--duplicates 5%] [--malformed 1%] [--from FILE.ndjson]",
		Short: "Load generator: publish synthetic events of any registered type (or a replay file) to a Pub/Sub topic at a set rate",
		Long: `publish sends traffic to a Pub/Sub topic with the v2 client's batching, paced to --rate, until
--duration has passed (or the --from file ends). Synthetic events are made from the schemas alone
(package synth): every registered type at its latest version by default, or the --type list
(T, or T:vN for one version), in turn; users are drawn from --users; every personal value is a
recognizable canary ("pii-..."). --duplicates repeats that share of messages (the previous
payload again, as a client retry does: a new message id, the same event id), --malformed cuts
that share of payloads in half (not JSON: ingest dead-letters them). --from FILE.ndjson sends a
replay file's messages instead (attributes and payload; Pub/Sub assigns ids and publish times).

A line every 5 s says what was sent and at what rate, and a summary ends the run: events,
duplicates, malformed, publish errors, rate. Exit status 1 when any publish failed. SIGINT or
SIGTERM stops early (what was handed to the client is still published).

Pub/Sub honours $PUBSUB_EMULATOR_HOST.

Examples:
  lockstream publish --topic projects/p/topics/events --rate 1000/s --duration 1m
  lockstream publish --topic projects/p/topics/events --rate 200/s --duration 10m --type PlaybackEvent:v1 --duplicates 5% --malformed 1%
  lockstream publish --topic projects/p/topics/events --rate 0 --from events.ndjson`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runPublish(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), f)
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.topic, "topic", "", "Pub/Sub topic projects/P/topics/T (required)")
	fl.Var(&f.rate, "rate", "messages per second, e.g. 1000/s, 60000/m or 500 (0: as fast as Pub/Sub takes them)")
	fl.DurationVar(&f.duration, "duration", 0, "stop after this long (required for synthetic traffic; with --from, 0 sends the whole file)")
	fl.StringSliceVar(&f.types, "type", nil, "event types to generate, T or T:vN (default: every registered type, latest version)")
	fl.StringSliceVar(&f.types, "types", nil, "same as --type")
	_ = fl.MarkHidden("types")
	fl.Var(&f.duplicates, "duplicates", "share of messages that repeat the previous one, e.g. 5% or 0.05")
	fl.Var(&f.malformed, "malformed", "share of messages whose payload is cut in half, e.g. 1%")
	fl.StringVar(&f.from, "from", "", "replay file (NDJSON of the message shape) to send instead of synthetic events")
	fl.IntVar(&f.users, "users", 1000, "distinct synthetic users")
	fl.Uint64Var(&f.seed, "seed", 0, "seed of the synthetic traffic (0: from the clock; event ids start from the clock too)")
	fl.BoolVar(&f.quiet, "quiet", false, "no progress lines on stderr")
	return c
}

func runPublish(ctx context.Context, stdout, stderr io.Writer, f publishFlags) error {
	if ctx == nil {
		ctx = context.Background()
	}
	// Configuration errors fail here, before anything is sent.
	project, _, ok := parseTopic(f.topic)
	if !ok {
		return fmt.Errorf("--topic %q: want projects/P/topics/T", f.topic)
	}
	if f.from == "" && f.duration <= 0 {
		return errors.New("--duration is required for synthetic traffic (e.g. --duration 1m)")
	}
	if f.from != "" && len(f.types) > 0 {
		return errors.New("--type and --from exclude each other")
	}
	if f.users < 1 {
		return errors.New("--users must be at least 1")
	}
	cfg := loadgen.Config{Rate: float64(f.rate), Duration: f.duration, Duplicates: float64(f.duplicates), Malformed: float64(f.malformed), Seed: f.seed}
	if cfg.Seed == 0 {
		cfg.Seed = uint64(time.Now().UnixNano())
	}
	if err := cfg.Check(); err != nil {
		return err
	}
	if !f.quiet {
		cfg.Progress = stderr
	}
	var src loadgen.Source
	if f.from != "" {
		file, err := os.Open(f.from)
		if err != nil {
			return fmt.Errorf("--from: %w", err)
		}
		defer file.Close()
		src = loadgen.File(file)
	} else {
		scs, err := publishSchemas(f.types)
		if err != nil {
			return err
		}
		// Event numbers from the clock: two runs do not send the same events.
		first := int(time.Now().Unix()%100000) * 100000
		src = loadgen.Synthetic(synth.NewStream(synth.StreamConfig{Schemas: scs, Users: f.users, First: first, Seed: cfg.Seed}))
	}

	client, err := pubsub.NewClient(ctx, project)
	if err != nil {
		return fmt.Errorf("pubsub: %w", err)
	}
	defer client.Close()
	pub := client.Publisher(f.topic)
	pub.PublishSettings.CountThreshold = pubsub.MaxPublishRequestCount
	pub.PublishSettings.ByteThreshold = 4 << 20
	pub.PublishSettings.DelayThreshold = 20 * time.Millisecond
	pub.PublishSettings.FlowControlSettings = pubsub.FlowControlSettings{
		MaxOutstandingMessages: 20000, MaxOutstandingBytes: 64 << 20, LimitExceededBehavior: pubsub.FlowControlBlock,
	}
	defer pub.Stop()
	sum, err := loadgen.Run(ctx, pub, src, cfg)
	fmt.Fprintln(stdout, sum)
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	if sum.Errors > 0 {
		return fmt.Errorf("%d of %d publishes failed", sum.Errors, sum.Messages())
	}
	return nil
}

// publishSchemas resolves --type values: "T" (latest version) or "T:vN".
func publishSchemas(types []string) ([]*schemas.Schema, error) {
	reg, err := schemas.Embedded()
	if err != nil {
		return nil, err
	}
	if len(types) == 0 {
		types = reg.Types()
	}
	var out []*schemas.Schema
	for _, t := range types {
		name, ver, hasVer := strings.Cut(t, ":")
		var s *schemas.Schema
		if hasVer {
			v, err := strconv.Atoi(strings.TrimPrefix(ver, "v"))
			if err != nil {
				return nil, fmt.Errorf("--type %q: want T or T:vN", t)
			}
			s, err = reg.Lookup(name, v)
			if err != nil {
				return nil, fmt.Errorf("--type %q: %w", t, err)
			}
		} else if s, err = reg.Latest(name); err != nil {
			return nil, fmt.Errorf("--type %q: %w (known: %s)", t, err, strings.Join(reg.Types(), ", "))
		}
		out = append(out, s)
	}
	return out, nil
}

// parseTopic splits projects/P/topics/T.
func parseTopic(topic string) (project, name string, ok bool) {
	p := strings.Split(topic, "/")
	if len(p) != 4 || p[0] != "projects" || p[2] != "topics" || p[1] == "" || p[3] == "" {
		return "", "", false
	}
	return p[1], p[3], true
}

// rateFlag is messages per second: "1000/s", "60000/m", "500".
type rateFlag float64

func (r *rateFlag) String() string { return strconv.FormatFloat(float64(*r), 'g', -1, 64) + "/s" }
func (r *rateFlag) Type() string   { return "rate" }
func (r *rateFlag) Set(s string) error {
	num, unit, _ := strings.Cut(strings.TrimSpace(s), "/")
	per := 1.0
	switch unit {
	case "", "s":
	case "m", "min":
		per = 60
	case "h":
		per = 3600
	default:
		return fmt.Errorf("%q is not a rate like 1000/s or 60000/m", s)
	}
	n, err := strconv.ParseFloat(num, 64)
	if err != nil || n < 0 {
		return fmt.Errorf("%q is not a rate like 1000/s or 60000/m", s)
	}
	*r = rateFlag(n / per)
	return nil
}

// shareFlag is a share: "5%" or "0.05".
type shareFlag float64

func (p *shareFlag) String() string { return strconv.FormatFloat(float64(*p)*100, 'g', -1, 64) + "%" }
func (p *shareFlag) Type() string   { return "share" }
func (p *shareFlag) Set(s string) error {
	s = strings.TrimSpace(s)
	div := 1.0
	if t, ok := strings.CutSuffix(s, "%"); ok {
		s, div = t, 100
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 || v/div >= 1 {
		return fmt.Errorf("%q is not a share like 5%% or 0.05", s)
	}
	*p = shareFlag(v / div)
	return nil
}
