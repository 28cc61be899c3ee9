package clock

import (
	"testing"
	"time"
)

func TestSystemClock(t *testing.T) {
	var c Clock
	if !c.IsSystem() {
		t.Fatal("zero clock is not the system clock")
	}
	if d := time.Since(c.Now()); d < -time.Second || d > time.Second {
		t.Fatalf("system clock off by %s", d)
	}
	if c.Real(time.Minute) != time.Minute {
		t.Fatal("system clock scales durations")
	}
}

func TestFastClock(t *testing.T) {
	start := time.Date(2026, 11, 23, 6, 59, 0, 0, time.UTC)
	c := Starting(start, 60)
	if got := c.Now(); got.Before(start) || got.After(start.Add(30*time.Second)) {
		t.Fatalf("fast clock reads %s at start, want about %s", got, start)
	}
	time.Sleep(200 * time.Millisecond)
	// 200 ms real at 60x is 12 s of clock time.
	if got := c.Since(start); got < 11*time.Second || got > 40*time.Second {
		t.Fatalf("after 200 ms real the clock advanced %s, want about 12 s", got)
	}
	if r := c.Real(time.Minute); r != time.Second {
		t.Fatalf("a clock minute is %s real, want 1s", r)
	}
}
