package transforms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/state"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/timers"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/log"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/layout"
)

func init() {
	register.DoFn5x1[context.Context, state.Provider, timers.Provider, string, Notice, error](&completeFn{})
}

// CompleteConfig configures CompleteHours.
type CompleteConfig struct {
	Root            string        // output root
	AllowedLateness time.Duration // the marker is written when the watermark passes hour end + this
	RunID           string        // recorded in the marker
}

// CompleteHours gathers the notices of each (type, version, hour) in state
// and, when the watermark passes the hour's end plus the allowed lateness
// (an event-time timer), writes the hour's _COMPLETE marker. Invalid
// configuration panics at construction.
func CompleteHours(s beam.Scope, notices beam.PCollection, cfg CompleteConfig) {
	if cfg.Root == "" {
		panic(errors.New("transforms.CompleteHours: Root is empty"))
	}
	if cfg.AllowedLateness < 0 {
		panic(fmt.Errorf("transforms.CompleteHours: AllowedLateness %s < 0", cfg.AllowedLateness))
	}
	if err := validRunID(cfg.RunID); err != nil {
		panic(fmt.Errorf("transforms.CompleteHours: %w", err))
	}
	s = s.Scope("transforms.CompleteHours")
	beam.ParDo0(s, &completeFn{
		Root: cfg.Root, AllowedLatenessMs: cfg.AllowedLateness.Milliseconds(), RunID: cfg.RunID,
		Close: timers.InEventTime("close"),
	}, notices)
}

type completeFn struct {
	Root              string
	AllowedLatenessMs int64
	RunID             string

	Notices state.Bag[Notice]
	Close   timers.EventTime

	bucket blob.Bucket
}

func (fn *completeFn) Setup(ctx context.Context) error {
	var err error
	fn.bucket, err = blob.Open(ctx, fn.Root)
	return err
}

func (fn *completeFn) ProcessElement(ctx context.Context, sp state.Provider, tp timers.Provider, key string, n Notice) error {
	if err := fn.Notices.Add(sp, n); err != nil {
		return err
	}
	end := n.Hour().Add(time.Hour + time.Duration(fn.AllowedLatenessMs)*time.Millisecond)
	fn.Close.Set(tp, end, timers.WithNoOutputTimestamp())
	return nil
}

func (fn *completeFn) OnTimer(ctx context.Context, sp state.Provider, tp timers.Provider, key string, t timers.Context) error {
	ns, ok, err := fn.Notices.Read(sp)
	if err != nil {
		return err
	}
	if !ok || len(ns) == 0 {
		return nil
	}
	m := CompleteMarker{
		FormatVersion: CompleteFormatVersion,
		EventType:     ns[0].Type, SchemaVersion: ns[0].Version, Hour: layout.FormatHour(ns[0].Hour()),
		Files: []string{}, DeadLettered: map[string]int64{}, RunID: fn.RunID, ClosedAt: time.Now().UTC(),
	}
	seen := map[string]bool{}
	for _, n := range ns {
		if n.File != "" && !seen[n.File] {
			// A retried batch may notify the same file twice; it is one file.
			seen[n.File] = true
			m.Files = append(m.Files, path.Base(n.File))
			m.Records += n.Records
		}
		for r, c := range n.Dead {
			m.DeadLettered[r] += c
		}
	}
	sort.Strings(m.Files)
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	name := CompleteName(m.EventType, m.SchemaVersion, ns[0].Hour())
	err = blob.WriteAll(ctx, fn.bucket, name, append(data, '\n'))
	switch {
	case errors.Is(err, blob.ErrExist):
		// Another run closed this hour while this one wrote to it (two
		// ingest jobs on one root, or a restart racing a close): the files
		// are in raw/ all the same; hourly reads the directory.
		log.Warnf(ctx, "lockstream: %s already exists; files of run %s for %s are in raw but not listed in it", name, fn.RunID, key)
	case err != nil:
		return fmt.Errorf("transforms: write %s: %w", name, err)
	default:
		progress.closed.Add(1)
	}
	closedHours(fn.Root).markClosed(m.EventType, m.SchemaVersion, ns[0].Hour())
	return fn.Notices.Clear(sp)
}
