// Package blob is the storage every writer and reader of lockstream goes
// through: a local directory or (later) a GCS bucket, one code path.
//
// # Behavior
//
// A [Bucket] is addressed by a root: a local directory ("/data/ls", "./out",
// "file:///data/ls") or "gs://bucket/prefix". Names are slash-separated paths
// below the root. [Bucket.Create] writes an object atomically and only if it
// does not exist yet (local: write to a temporary file, fsync, link into
// place; GCS: ifGenerationMatch=0), so a published object is never
// overwritten and a crashed writer leaves no partial object under its name.
//
// # Guarantees
//
//   - After Close returns nil, the object is durable and complete.
//   - Create of an existing name fails with [ErrExist]; Open of a missing one
//     with [ErrNotExist].
//   - List returns names in lexical order.
//
// # Failure modes
//
// Errors wrap the underlying I/O error with the object name (names are paths
// chosen by lockstream, never user data).
package blob
