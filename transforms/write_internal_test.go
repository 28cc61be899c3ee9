package transforms

import (
	"context"
	"testing"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/lockstream/lockstream/blob"
	"github.com/lockstream/lockstream/layout"
)

// TestWriteFnRetriedBundleEmitsEachFileOnce drives writeFn as a runner
// would after a failure: a bundle writes its first batch and fails before
// FinishBundle (the batch's files still being written), and the bundle is
// retried on the same DoFn. The retry must not emit or count the failed
// bundle's pending write: every file name comes out once, and the names
// are exactly the part files on disk.
func TestWriteFnRetriedBundleEmitsEachFileOnce(t *testing.T) {
	ctx := context.Background()
	in := genInput(60)
	file := writeLines(t, in.lines)
	var batches []Batch
	rf := &replayFn{BatchSize: 7, RunID: "run1", FallbackMillis: h6.UnixMilli()}
	if err := rf.ProcessElement(ctx, ReplayFile{Path: file}, func(_ beam.EventTime, b Batch) { batches = append(batches, b) }); err != nil {
		t.Fatal(err)
	}
	if len(batches) < 3 {
		t.Fatalf("%d batches", len(batches))
	}
	root := t.TempDir()
	fn := &writeFn{Config: writeFnConfig{Root: root, KeysURL: registerTestKeys(&testKeys{}), RunID: "run1", KeyRetryBudgetMs: 1000}}
	if err := fn.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	names := map[string]int{}
	emit := func(n string) { names[n]++ }

	// The failed bundle: its first batch, then no FinishBundle.
	fn.StartBundle(ctx, emit)
	if err := fn.ProcessElement(ctx, batches[0], emit); err != nil {
		t.Fatal(err)
	}
	// The retry: every batch, on the same DoFn.
	fn.StartBundle(ctx, emit)
	for _, b := range batches {
		if err := fn.ProcessElement(ctx, b, emit); err != nil {
			t.Fatal(err)
		}
	}
	if err := fn.FinishBundle(ctx, emit); err != nil {
		t.Fatal(err)
	}

	b, err := blob.Open(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	all, err := b.List(ctx, layout.RawArea+"/")
	if err != nil {
		t.Fatal(err)
	}
	parts := 0
	for _, n := range all {
		if !IsPart(n) {
			continue
		}
		parts++
		if names[n] != 1 {
			t.Errorf("%s emitted %d times", n, names[n])
		}
	}
	if parts == 0 || len(names) != parts {
		t.Fatalf("%d names emitted for %d part files", len(names), parts)
	}
}
