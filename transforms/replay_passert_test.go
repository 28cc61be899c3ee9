package transforms

import (
	"strings"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/passert"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/transforms/stats"
)

func init() {
	register.Function1x1(batchLines)
	register.Function1x1(batchWithinSize7)
	register.Function1x1(isRawPartName)
}

// batchLines is how many input lines a batch carries (messages and lines
// that are not messages).
func batchLines(b Batch) int { return len(b.Messages) + len(b.Bad) }

func batchWithinSize7(b Batch) bool {
	return batchLines(b) >= 1 && batchLines(b) <= 7 && strings.HasPrefix(b.ID, "run1-")
}

func isRawPartName(name string) bool { return IsPart(name) && strings.HasPrefix(name, "raw/") }

// TestReplayBatchesPassert asserts on the PCollections themselves (passert,
// run on prism): ReadReplay hands every line of the input to exactly one
// batch of at most BatchSize lines named after the run, and the write
// stage's output names only raw part files.
func TestReplayBatchesPassert(t *testing.T) {
	in := genInput(60)
	file := writeLines(t, in.lines)
	keysURL := registerTestKeys(&testKeys{})
	p, s := beam.NewPipelineWithRoot()
	batches, err := ReadReplay(s, ReplayConfig{Files: []string{file}, BatchSize: 7, RunID: "run1", Fallback: h6})
	if err != nil {
		t.Fatal(err)
	}
	lines := beam.ParDo(s, batchLines, batches)
	passert.Equals(s, stats.Sum(s, lines), len(in.lines))
	passert.True(s, batches, batchWithinSize7)
	files, err := AnonymizeAndWrite(s, batches, WriteConfig{Root: t.TempDir(), KeysURL: keysURL, RunID: "run1", KeyRetryBudget: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	passert.NonEmpty(s, files)
	passert.True(s, files, isRawPartName)
	if err := ptest.Run(p); err != nil {
		t.Fatal(err)
	}
}
