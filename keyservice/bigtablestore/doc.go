// Package bigtablestore is a [keyservice.Store] on Cloud Bigtable (store URL
// "bigtable://PROJECT/INSTANCE/TABLE" in package keyservice/stores), for
// key servers that share one store. The client honours
// BIGTABLE_EMULATOR_HOST, so the same code runs on the emulator.
//
// # Format (version 1)
//
// One Bigtable row per store row, keyed by the row key, in column family
// "k" (garbage collection: keep one version) with two cells:
//
//	k:v   the row value
//	k:r   the revision, in decimal ASCII
//
// A row without a revision cell is absent. A change of this layout is a
// new family or table, never an edit.
//
// # Behavior
//
//   - Get is one ReadRows call for the whole batch.
//   - Put is one CheckAndMutateRow: its predicate matches the expected
//     revision (for revision 0: any revision cell, and the write happens
//     only if there is none), and its mutation deletes the old cells before
//     writing the new ones. On a mismatch Put reads the current row and
//     returns it with keyservice.ErrConflict.
//   - Delete deletes the whole row.
//   - Options.CreateTable creates the table and the family with the admin
//     API if they are missing (tests, first deployment).
//
// # Guarantees
//
//   - Concurrent creates and updates of one row are decided by Bigtable:
//     exactly one writer of a given revision wins.
//   - No old value stays readable after Put or Delete.
//
// # Failure modes
//
//   - Transient gRPC codes (Unavailable, DeadlineExceeded,
//     ResourceExhausted, Aborted, Internal, Canceled) and the caller's
//     context errors are reported as keyservice.ErrUnavailable; others
//     (permissions, a missing table) are permanent.
//   - A revision cell that is not a decimal number fails the read
//     (permanent: the row was not written by this package).
//   - Shredding is logical at once and physical later: Bigtable purges
//     deleted and overwritten cells at its next compaction.
package bigtablestore
