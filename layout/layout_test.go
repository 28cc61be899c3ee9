package layout

import (
	"testing"
	"time"
)

func TestPaths(t *testing.T) {
	h := time.Date(2026, 11, 23, 6, 12, 0, 0, time.UTC).Truncate(time.Hour)
	if got := RawDir("PlaybackEvent", 1, h); got != "raw/PlaybackEvent/v1/2026-11-23/06/" {
		t.Fatal(got)
	}
	if got := DatasetDir("PlaybackEvent", 2, h); got != "datasets/PlaybackEvent/v2/2026-11-23/06/" {
		t.Fatal(got)
	}
	if got := DeadLetterDir("wrong_type", h); got != "deadletter/wrong_type/2026-11-23/06/" {
		t.Fatal(got)
	}
	area, hh, file, ok := ParseDir("raw/PlaybackEvent/v1/2026-11-23/06/part-0.avro")
	if !ok || area != RawArea || hh != (Hour{"PlaybackEvent", 1, h}) || file != "part-0.avro" {
		t.Fatal(area, hh, file, ok)
	}
	for _, bad := range []string{"raw/x", "raw/T/1/2026-11-23/06/f", "raw/T/v1/2026-13-23/06/f", "other/T/v1/2026-11-23/06/f"} {
		if _, _, _, ok := ParseDir(bad); ok {
			t.Fatalf("parsed %q", bad)
		}
	}
	p, err := ParseHour("2026-11-23T06")
	if err != nil || !p.Equal(h) || FormatHour(p) != "2026-11-23T06" {
		t.Fatal(p, err)
	}
	if _, err := ParseHour("06:00"); err == nil {
		t.Fatal("bad hour accepted")
	}
}
