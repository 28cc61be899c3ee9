// Package monitoring holds lockstream's Grafana dashboard (dashboard.json)
// and Prometheus alert rules (alerts.yml, with promtool unit tests in
// alerts_test.yml). It has no code: its test runs `promtool check rules`
// and `promtool test rules`, and fails when the dashboard or a rule names a
// metric that no Go source of the repository exports.
//
// # Metrics
//
//   - The key service (lockstream keys serve) exports lockstream_keys_* on
//     its /metrics (package keyservice/server).
//   - `lockstream status --watch 1m --metrics-listen ADDR` exports
//     lockstream_status_* gauges over one root (package status): hours by
//     state, stuck hours, late parts pending, supplements, published
//     records, dead letters by reason, writer heartbeats. Labels are
//     bounded (type, version, reason, state, kind; never an hour).
//   - Beam jobs on Dataflow keep their Beam counters on the job page and in
//     Cloud Monitoring (namespace lockstream.ingest, names
//     "<kind>|<type>|<version>": a bounded set; see transforms.CounterName).
package monitoring
