// Package integration holds end-to-end tests of lockstream against real
// servers and emulators: fake-gcs-server, the recording BigQuery server,
// the Pub/Sub and Bigtable emulators of the gcloud SDK (started by the
// tests unless PUBSUB_EMULATOR_HOST / BIGTABLE_EMULATOR_HOST are set, as
// .ci/run does), and the built CLI.
package integration
