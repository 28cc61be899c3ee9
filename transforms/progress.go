package transforms

import "sync/atomic"

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

var progress struct {
	messages, written, dead, late, acked, ackFailed, held, closed atomic.Int64
}

// ReadProgress returns the process-wide counters.
func ReadProgress() Progress {
	return Progress{
		Messages:    progress.messages.Load(),
		Written:     progress.written.Load(),
		DeadLetters: progress.dead.Load(),
		Late:        progress.late.Load(),
		Acked:       progress.acked.Load(),
		AckFailed:   progress.ackFailed.Load(),
		Held:        progress.held.Load(),
		HoursClosed: progress.closed.Load(),
	}
}
