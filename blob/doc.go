// Package blob is the storage every writer and reader of lockstream goes
// through: a local directory or a GCS bucket, one code path.
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
// # GCS
//
// [GCS] ([OpenGCS], or [Open] with a gs:// root) uses cloud.google.com/go/storage.
// Without [WithGCSClient] it shares one process-wide client from
// storage.NewClient, which honours STORAGE_EMULATOR_HOST and Application
// Default Credentials (a changed STORAGE_EMULATOR_HOST gets a new client). The root's prefix is prepended to every name; List
// returns names relative to the root.
//
// Immutability: every object is created with the precondition
// DoesNotExist (ifGenerationMatch=0). GCS refuses the create with 412 if
// any live object has the name, and Close reports that as [ErrExist]; two
// racing writers of one name cannot both win, and nothing overwrites a
// published object. Each writer also stores a random token in the object's
// metadata ("lockstream-writer"): when a create is refused or fails after
// an earlier attempt of the same upload succeeded (response lost, client
// retried), Close finds its own token and reports success instead of a
// false ErrExist — if the object is whole; a damaged one it deletes.
//
// Writing: a writer buffers the object (in memory up to
// [DefaultGCSMemoryLimit] or [WithGCSMemoryLimit], then in a temporary file
// in [WithGCSTempDir]) and computes its CRC32C. Close uploads it with
// Writer.CRC32C + SendCRC32C, so GCS rejects data that does not match the
// checksum (a corrupted or truncated upload); small objects go in one
// multipart request, larger ones as a resumable upload in 16 MiB chunks.
// After the upload Close checks the size and CRC32C the server reports and
// deletes (that generation) and fails on a mismatch — a second line of
// defence for servers that do not validate (fake-gcs-server v1.56 skips the
// check for multi-chunk uploads and appends re-sent chunks).
//
// Retries: the client's default policy (RetryIdempotent, exponential
// backoff, retrying 408, 429, 5xx and connection resets). Every call we
// make is idempotent and so retried: reads (Open, Exists, List), the
// conditional create (upload start, each chunk, or the one-request upload),
// and Delete, which reads the generation and deletes with
// ifGenerationMatch. Nothing uses RetryAlways: an unconditional write or
// delete is never retried. Left alone, the client retries a failing call
// until its context ends, and a pipeline's context has no deadline, so
// both are bounded: the shared client tries a call at most
// [DefaultGCSMaxAttempts] times, and each upload (which the client does not
// count attempts of) has a deadline of [DefaultGCSUploadTimeout] (or
// [WithGCSUploadTimeout]) plus a second per MiB. An unreachable GCS thus
// fails the operation, and with it the bundle, in minutes with the last
// error. Tests shorten the backoff with storage.Client.SetRetry.
//
// Crashed writers: nothing is sent before Close, so a writer that is
// aborted, whose process dies, or whose Close fails leaves no object (an
// interrupted resumable session is never finalised and expires on the
// server after a week, invisible to Open and List). Abort cancels the
// writer's context and closes its temporary file, which is unlinked as
// soon as it is created: a spilled writer whose process dies leaves
// nothing in the temporary directory either.
//
// Composing: [Bucket.Compose] makes one object of others, in order, as
// Create would (DoesNotExist; the writer token after a lost response),
// without the bytes passing through the process: GCS composes on the
// server, 32 sources per request (more in rounds through temporary
// objects it deletes), a directory copies in the kernel (copy_file_range).
//
// [FaultyTransport] (faults.go) injects 503s, lost responses, torn and
// corrupted uploads in front of a server, for tests of everything that
// writes through this package; [NewFaultProxy] does the same as a reverse
// proxy for other processes.
//
// # Failure modes
//
// Errors wrap the underlying I/O error with the object name (names are paths
// chosen by lockstream, never user data). On GCS, an error from Close means
// no object of this writer is visible — unless the check for its own object
// failed too (the server unreachable until the context ended), in which
// case a complete object may exist; never a partial one.
package blob
