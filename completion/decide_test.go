package completion

import (
	"strings"
	"testing"
	"time"

	"github.com/lockstream/lockstream/layout"
)

func TestDecide(t *testing.T) {
	h6 := time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC)
	now := time.Date(2026, 11, 23, 7, 30, 0, 0, time.UTC)
	hour := layout.Hour{Type: "PlaybackEvent", Version: 1, Hour: h6}
	other := layout.Hour{Type: "AccountUpdate", Version: 1, Hour: h6}
	wm := func(s string) *time.Time {
		t, err := time.Parse("15:04", s)
		if err != nil {
			panic(err)
		}
		w := time.Date(2026, 11, 23, t.Hour(), t.Minute(), 0, 0, time.UTC)
		return &w
	}
	stream := func(part, state string, w *time.Time, beat time.Duration, hours ...layout.Hour) *Record {
		return &Record{RunID: "run-" + part, Part: part, Kind: KindStream, State: state, Watermark: w,
			Lateness: Duration(2 * time.Minute), StaleAfter: Duration(2 * time.Minute), HeartbeatAt: now.Add(-beat), Hours: hours}
	}
	bounded := func(part, state string, beat time.Duration, hours ...layout.Hour) *Record {
		return &Record{RunID: "run-" + part, Part: part, Kind: KindBounded, State: state,
			StaleAfter: Duration(2 * time.Minute), HeartbeatAt: now.Add(-beat), Hours: hours}
	}
	for _, tc := range []struct {
		name     string
		recs     []*Record
		complete bool
		reason   string // part of the reason when not complete
	}{
		{"no writers", nil, false, "no writer has passed"},
		{"live stream passed end plus lateness", []*Record{stream("a", StateRunning, wm("07:02"), time.Second)}, true, ""},
		{"live stream within lateness", []*Record{stream("a", StateRunning, wm("07:01"), time.Second, hour)}, false, "waiting for live writer run-a/a"},
		{"live stream without a watermark holds", []*Record{stream("a", StateRunning, nil, time.Second), stream("b", StateRunning, wm("07:10"), time.Second)}, false, "no watermark yet"},
		{"crashed writer holds nothing; a later run vouches", []*Record{stream("a", StateRunning, wm("06:59"), 10*time.Minute, hour), stream("b", StateRunning, wm("07:05"), time.Second)}, true, ""},
		{"crashed writer alone: nobody vouches", []*Record{stream("a", StateRunning, wm("06:59"), 10*time.Minute, hour)}, false, "no writer has passed 2026-11-23T07"},
		{"planned stop leaves the hour open", []*Record{stream("a", StateStopped, wm("06:40"), time.Second, hour)}, false, "no writer has passed"},
		{"drain completes the hours it wrote", []*Record{stream("a", StateDrained, wm("06:40"), time.Second, hour)}, true, ""},
		{"drain does not complete hours it did not write", []*Record{stream("a", StateDrained, wm("06:40"), time.Second, other)}, false, "no writer has passed"},
		{"finished backfill vouches for its hours", []*Record{bounded("r", StateFinished, time.Second, hour)}, true, ""},
		{"backfill does not complete a live stream's hour", []*Record{bounded("r", StateFinished, time.Second, hour), stream("a", StateRunning, wm("06:50"), time.Second)}, false, "waiting for live writer run-a/a"},
		{"running backfill holds the hours it wrote", []*Record{bounded("r", StateRunning, time.Second, hour), stream("a", StateRunning, wm("07:10"), time.Second)}, false, "waiting for live writer run-r/r"},
		{"running backfill does not hold other hours", []*Record{bounded("r", StateRunning, time.Second, other), stream("a", StateRunning, wm("07:10"), time.Second)}, true, ""},
		{"failed backfill holds nothing and vouches for nothing", []*Record{bounded("r", StateFailed, time.Second, hour)}, false, "no writer has passed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(hour, tc.recs, now)
			if d.Complete != tc.complete {
				t.Fatalf("complete = %v (%s), want %v", d.Complete, d.Reason, tc.complete)
			}
			if !tc.complete && !strings.Contains(d.Reason, tc.reason) {
				t.Fatalf("reason %q does not say %q", d.Reason, tc.reason)
			}
		})
	}
}
