// Package integration holds end-to-end tests of lockstream against real
// servers and emulators: fake-gcs-server, the recording BigQuery server,
// the Pub/Sub and Bigtable emulators of the gcloud SDK (started by the
// tests unless PUBSUB_EMULATOR_HOST / BIGTABLE_EMULATOR_HOST are set, as
// .ci/run does), and the built CLI.
//
// `make test-integration` runs the package as two `go test` processes side
// by side (run.sh): most tests wait on emulators, timers and child
// processes, so two processes halve the wall time on 2 cores. Each test
// works in a Pub/Sub project, topics, buckets and directories of its own,
// so which tests share a process never changes what they check.
package integration
