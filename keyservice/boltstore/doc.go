// Package boltstore is the embedded [keyservice.Store], the default (store
// URL "bolt:DIR" in package keyservice/stores): one bbolt file, pure Go, no
// setup.
//
// # Format (version 1)
//
// DIR/keyservice.db ([File]) holds one bucket, "keyservice/v1", with one
// entry per row: the row key, and the value
//
//	revision (8 bytes, big-endian) | row value
//
// A change of this layout is a new bucket name, never an edit.
//
// # Behavior
//
//   - Put is a compare-and-set on the revision inside one bbolt
//     transaction; concurrent writes are coalesced into one transaction
//     (bbolt's Batch, up to 2 ms apart) and fsynced once.
//   - The Store is a [keyservice.LocalWriter]: the file is locked to one
//     process and every write goes through one Store, which counts its
//     completed writes in 4096 groups of keys. A Service uses the counts to
//     serve a cached row it knows is unchanged without reading it again.
//
// # Guarantees
//
//   - A write is durable when Put or Delete returns.
//   - Writes(key) never goes down and moves after every completed write of
//     key (and of the other keys of its group), so an unchanged count means
//     an unchanged row.
//
// # Failure modes
//
//   - Open fails if another process holds the file for more than 5 s, or
//     if DIR cannot be created or the file is not a bbolt database.
//   - Operations fail with the caller's context error, or with a bbolt
//     error (disk full, I/O) wrapped as "keyservice: bolt get|put|delete";
//     these are not keyservice.ErrUnavailable.
//   - Shredding is logical at once and physical later: bbolt may keep
//     freed pages (with sealed, i.e. still master-key-encrypted, root keys)
//     until they are reused or the file is compacted.
package boltstore
