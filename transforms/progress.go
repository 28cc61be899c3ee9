package transforms

import (
	"sync"
)

// Progress counts what the write and completion stages of this process did,
// for progress lines of long runs (the runner's metrics are the accounting;
// these are process-wide and include retried bundles).
type Progress struct {
	Messages    int64 // input messages handled (incl. bad lines)
	Written     int64 // records written to raw
	DeadLetters int64 // messages dead-lettered
	Late        int64 // records written to late/
	Acked       int64 // Pub/Sub messages acknowledged
	AckFailed   int64 // Pub/Sub messages written whose acknowledgement failed (redelivered, deduplicated)
	Held        int64 // Pub/Sub messages handed back unwritten (key service unavailable): redelivered later
	HoursClosed int64 // _COMPLETE markers written
}

// ReadProgress returns the process-wide counters.
func ReadProgress() Progress {
	return Progress{
		Messages:    env.progress.messages.Load(),
		Written:     env.progress.written.Load(),
		DeadLetters: env.progress.dead.Load(),
		Late:        env.progress.late.Load(),
		Acked:       env.progress.acked.Load(),
		AckFailed:   env.progress.ackFailed.Load(),
		Held:        env.progress.held.Load(),
		HoursClosed: env.progress.closed.Load(),
	}
}

// env.runs holds the write stage's counters of each run, by root and run id, as
// the writers of this process reported them: the accounting of a run whose
// workers share the launching process (prism's loopback workers). Prism
// loses counter updates: when two bundles first report a counter before it
// has learnt the counter's short id, it keeps one payload of the two
// (jobservices/metrics.go, unprocessedPayloads), so a run whose pull
// streams all start with the same hours undercounts. Beam metrics remain
// the accounting of runs on remote workers (Dataflow).

// runKey names a run: its root and run id.
type runKey struct{ root, run string }

type runCounter struct {
	mu sync.Mutex
	m  map[string]int64
}

// runCounter returns the counters of a run (nil for a run without an id),
// made on first use: a writer takes them once, in Setup.
func (r *registry) runCounter(root, run string) *runCounter {
	if run == "" {
		return nil
	}
	v, _ := r.runs.LoadOrStore(runKey{root, run}, &runCounter{m: map[string]int64{}})
	return v.(*runCounter)
}

// add adds a batch's counters to the run's.
func (rc *runCounter) add(counts map[string]int64) {
	if rc == nil || len(counts) == 0 {
		return
	}
	rc.mu.Lock()
	for name, n := range counts {
		rc.m[name] += n
	}
	rc.mu.Unlock()
}

// TakeRunCounters returns the write stage's counters of the run as this
// process's writers reported them (name -> value; the namespace is
// MetricsNamespaceHours when the name has four fields, MetricsNamespace
// otherwise) and forgets them; ok is false when no writer of this process
// wrote for the run (its workers run elsewhere, or it had no input).
func TakeRunCounters(root, run string) (counts map[string]int64, ok bool) {
	v, ok := env.runs.LoadAndDelete(runKey{root, run})
	if !ok {
		return nil, false
	}
	rc := v.(*runCounter)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.m, len(rc.m) > 0
}
