package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	beamlog "github.com/apache/beam/sdks/v2/go/pkg/beam/log"
	beamreg "github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/x/beamx"
)

func init() { beamreg.Function2x0(warnOnce) }

// logLevelMarker is what warnOnce logs at warn level from inside a pipeline.
const logLevelMarker = "lockstream-test: a warning from a DoFn"

func warnOnce(ctx context.Context, _ int) { beamlog.Warn(ctx, logLevelMarker) }

// runLogged runs a one-element pipeline on prism after initBeam(level) and
// returns what went to stderr (where Beam's logger writes) once it holds
// every one of want, or after 30 s.
func runLogged(t *testing.T, level string, want ...string) string {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	stderr := os.Stderr
	os.Stderr = f // Beam's logger takes os.Stderr when initBeam sets it up
	err = initBeam(level)
	os.Stderr = stderr
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := initBeam(""); err != nil { // the logger back on the real stderr
			t.Error(err)
		}
	}()
	p, s := beam.NewPipelineWithRoot()
	beam.ParDo0(s, warnOnce, beam.Create(s, 1))
	if _, err := beamx.RunWithMetrics(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	// The DoFn's line reaches prism over the SDK's logging stream, and
	// prism logs some of a job's lines from goroutines of its own: either
	// can come after the job has ended (seen under -race on a loaded
	// machine). Wait for them before the deferred initBeam points the
	// logger back at stderr.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		data, err := os.ReadFile(f.Name())
		if err != nil {
			t.Fatal(err)
		}
		out := string(data)
		missing := slices.ContainsFunc(want, func(w string) bool { return !strings.Contains(out, w) })
		if !missing || time.Now().After(deadline) {
			return out
		}
	}
}

// TestLogLevel: at the default level on prism, prism's lines for every job
// are gone and a pipeline's own warning still shows; at info, prism's lines
// show. Other runners default to info.
func TestLogLevel(t *testing.T) {
	for runner, want := range map[string]slog.Level{"": slog.LevelWarn, "prism": slog.LevelWarn, "dataflow": slog.LevelInfo, "flink": slog.LevelInfo} {
		if got := logLevelFor(runner); got != want {
			t.Errorf("logLevelFor(%q) = %s, want %s", runner, got, want)
		}
	}
	quiet := runLogged(t, "", logLevelMarker)
	if strings.Contains(quiet, "level=INFO") {
		t.Errorf("info lines at the default level:\n%s", quiet)
	}
	if !strings.Contains(quiet, "level=WARN") || !strings.Contains(quiet, logLevelMarker) {
		t.Errorf("the DoFn's warning is missing at the default level:\n%s", quiet)
	}
	loud := runLogged(t, "info", logLevelMarker, "level=INFO")
	if !strings.Contains(loud, "level=INFO") || !strings.Contains(loud, logLevelMarker) {
		t.Errorf("no info lines (or no warning) at --log-level=info:\n%s", loud)
	}
	if err := initBeam("loud"); err == nil || !strings.Contains(err.Error(), "--log-level") {
		t.Errorf(`initBeam("loud") = %v, want an error naming --log-level`, err)
	}
}

// TestLogLevelFlag: every command that runs a pipeline takes --log-level,
// and a bad value is refused before anything runs.
func TestLogLevelFlag(t *testing.T) {
	root := newRootCmd()
	for _, name := range []string{"ingest", "hourly", "view", "demo"} {
		c, _, err := root.Find([]string{name})
		if err != nil || c.Flags().Lookup("log-level") == nil {
			t.Errorf("lockstream %s has no --log-level", name)
		}
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "in.ndjson")
	if err := os.WriteFile(in, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	root.SetArgs([]string{"ingest", "--input", in, "--root", filepath.Join(dir, "out"), "--keys", "local:" + filepath.Join(dir, "keys"), "--log-level=loud"})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "--log-level") {
		t.Errorf("ingest --log-level=loud: %v, want an error naming --log-level", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "out")); !os.IsNotExist(err) {
		t.Errorf("ingest with a bad --log-level wrote its output root (stat: %v)", err)
	}
}
