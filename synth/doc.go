// Package synth generates synthetic input traffic for the demo, tests and
// benchmarks: both event types over a span of hours, with the faults real
// traffic brings — duplicates (Pub/Sub redeliveries with the same message
// id, and client retries with a new message id, some crossing an hour
// boundary), malformed messages and late arrivals.
//
// # Behavior
//
// Generation is deterministic for a seed. Every personal value is a
// recognizable canary ("pii-<kind>-<n>"), so a test can scan every output
// byte for plaintext; [Traffic.Canaries] lists them.
package synth
