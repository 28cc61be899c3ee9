// Package dataset reads, checks and publishes what hourly publishes — an
// hour's main part and its numbered late supplements, each a set of Avro
// files with a _MANIFEST.json and a _SUCCESS — and guards publication with
// leases. It is the one manifest reader and writer: hourly, view, inspect,
// status, BigQuery loads and retention all read published hours through
// it (Read, ReadPublished, Verify), and read their records with
// ReadRecords. Hourly checks a part's stored files against what its shards
// wrote (CheckFiles, the one read-back of a publication) and makes the part
// visible with PublishPart. Object names are package layout's.
//
// # Behavior
//
// An hour's data is its main part (datasets/<type>/v<n>/<day>/<HH>/) plus
// its supplements (…/<HH>/late-0001/, late-0002/, …). A part exists for
// readers only once its _SUCCESS does; a directory without one is an
// unfinished attempt, invisible. Every manifest lists the raw and late
// part files it consumed (Parts), so the part files of an hour that no
// manifest lists yet are Pending: the input of the hour's next supplement.
//
// A publication lease (layout.LeaseName) guards one (type, version, hour):
// created if absent, holding the holder's run id and an expiry, renewed
// while the holder works, taken over by another run only once expired. A
// holder re-checks (and renews) it right before each step that makes a
// part visible, so a holder that lost its lease (paused past its expiry)
// cannot publish.
//
// # Guarantees
//
//   - Read returns only parts whose _SUCCESS exists, main part first, then
//     supplements in order.
//   - PublishPart writes _SUCCESS only after the manifest, and each only
//     while its lease holds; CheckFiles fails when a stored file's bytes
//     differ from those its writer hashed.
//   - Two holders of one lease never both pass Check; a lease changes hands
//     only through its generation (blob compare-and-swap).
//
// # Failure modes
//
// A holder paused longer than the lease's TTL between its last Check and a
// write can still make that one write; TTLs are chosen far above any
// plausible pause (DefaultLeaseTTL), as with any lease.
package dataset
