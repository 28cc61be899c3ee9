// Package loadgen publishes traffic to a Pub/Sub topic at a set rate: the
// load generator of `lockstream publish`, of the Pub/Sub ingest benchmark
// and of `lockstream demo` on the Pub/Sub emulator.
//
// # Behavior
//
// [Run] takes messages from a [Source] (synthetic events of any registered
// type, a replay file, or a list), paces them to Config.Rate, and
// publishes them with the v2 client's batching (the Publisher's
// PublishSettings; flow control blocks instead of buffering without
// bound). Of each slot, a share Config.Duplicates repeats the previous
// message (a client retry: the same payload and attributes, a new message
// id, which hourly deduplicates) and a share Config.Malformed sends the
// next message with its payload cut in half (not JSON: ingest
// dead-letters it). Pub/Sub assigns every message its id and publish time.
//
// Every Config.ProgressEvery a line says what was sent and at what rate;
// the [Summary] counts the events, duplicates and malformed messages sent,
// the publish errors, and the rate achieved.
//
// # Failure modes
//
// A failed publish is counted (Summary.Errors, the first one kept) and the
// run goes on; Run returns an error only when it could not go on (a
// source error) or ctx ended, and then still waits for what it published.
package loadgen
