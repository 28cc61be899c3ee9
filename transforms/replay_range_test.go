package transforms

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/lockstream/lockstream/record"
)

// Every line of a file is read by exactly one byte range, whatever the
// chunk size (down to one byte), including lines that straddle range ends,
// bad lines and a missing final newline.
func TestReplayRanges(t *testing.T) {
	var sb strings.Builder
	want := map[string]bool{}
	for i := range 120 {
		if i%17 == 5 {
			sb.WriteString("{not a message\n")
			continue
		}
		m := record.Message{ID: fmt.Sprintf("m%03d", i), PublishTime: time.Date(2026, 11, 23, 6, 0, i, 0, time.UTC),
			Attributes: map[string]string{"event_type": "PlaybackEvent"}, Data: []byte(strings.Repeat("x", i%13))}
		line, _ := m.MarshalLine()
		sb.Write(line)
		if i != 119 {
			sb.WriteByte('\n')
		}
		want[m.ID] = true
	}
	path := filepath.Join(t.TempDir(), "in.ndjson")
	if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, chunk := range []int64{2, 7, 100, 1000, 1 << 20} {
		got := map[string]int{}
		bad := 0
		fn := &replayFn{BatchSize: 10, RunID: "r", FallbackMillis: 0}
		for _, p := range splitReplay(0, path, chunk) {
			err := fn.ProcessElement(context.Background(), p.(ReplayFile), func(_ beam.EventTime, b Batch) {
				for _, m := range b.Messages {
					got[m.ID]++
				}
				bad += len(b.Bad)
			})
			if err != nil {
				t.Fatalf("chunk %d: %v", chunk, err)
			}
		}
		if len(got) != len(want) || bad != 7 {
			t.Fatalf("chunk %d: %d messages (want %d), %d bad lines (want 7)", chunk, len(got), len(want), bad)
		}
		for id, n := range got {
			if n != 1 || !want[id] {
				t.Fatalf("chunk %d: %s read %d times", chunk, id, n)
			}
		}
	}
}
