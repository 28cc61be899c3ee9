// Package completion decides when an hour of raw data is complete, as
// Spotify's Completionist does: every ingest writer records under the root
// how far it has got, and an hour is complete when the writers that could
// still add to it have all passed it. The visible result is the hour's
// _COMPLETE marker (layout.CompleteName), written by whoever observes the
// decision first: an ingest stream, the end of a replay run, or an hourly
// run (lockstream status shows decisions without writing them).
//
// # Writer records
//
// A writer is one part of an ingest run: a Pub/Sub pull stream
// ("stream-003") or a bounded replay run ("replay"). Its record,
// writers/<run>/<part>.json (layout.WriterRecord), holds its kind, state
// (running, stopped, drained, finished, failed), heartbeat, the allowed
// lateness it runs with, and its watermark: a time before which it will
// write no raw data (for a stream: the oldest publish time among the
// messages it holds, and at most the start of its last pull that left the
// subscription empty minus --max-delivery-delay). Before a writer writes
// its first raw file of an hour it creates writers/<run>/hours/<type>/v<n>/<hour>
// (layout.WriterHourMarker): the hours it wrote. A record is live while
// its state is running and its heartbeat is younger than its StaleAfter.
//
// # The rule
//
// Hour H of (type, version) ends at E = H+1h; a writer with lateness L has
// passed it when its watermark is at or after E+L. H is complete when
//
//   - some writer vouches for it: its watermark passed H, or it ended
//     (drained or finished) after writing H; and
//   - no live writer holds it: a live stream that has not passed H holds
//     every hour, a live bounded run holds only the hours it wrote.
//
// So a crashed writer (stale heartbeat) holds nothing (its unacked
// messages return to Pub/Sub and reach a live writer), a backfill never
// completes the hour a live stream is in, a planned stop (state stopped)
// leaves the hours past its watermark open until a later run passes them,
// and a drain completes the hours it wrote. An hour no writer vouches for
// waits (Decision.Reason says why) until a later run passes it.
//
// # Guarantees and limits
//
//   - A decision reads only records and markers under the root: it works
//     the same from any process, on any machine.
//   - A watermark is only as true as --max-delivery-delay: a message that
//     Pub/Sub delivers later than that after its publish time may find its
//     hour complete; it is then written to late/ and published in a
//     supplement (never lost).
package completion
