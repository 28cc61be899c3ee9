// Package memstore is the in-memory [keyservice.Store], for tests and
// demos (store URL "memory:" in package keyservice/stores).
//
// # Behavior
//
//   - Rows live in a map guarded by a mutex; every value is copied in and
//     out, so callers never share bytes with the store.
//   - Put is a compare-and-set on the row's revision, which starts at 1 and
//     grows by one per write; Delete forgets the row and its revision.
//   - SetFault installs a hook called before every operation with the
//     operation ("get", "put", "delete") and its first key; it may return
//     an error to fail the operation, or sleep to add latency. Len and Dump
//     let tests inspect what is stored.
//
// # Guarantees
//
//   - Safe for concurrent use; each operation is atomic.
//   - Close keeps the data: a Service opened again on the same Store sees
//     every row, as after a restart over a durable store.
//
// # Failure modes
//
//   - Nothing is durable: the rows are lost with the process.
//   - An operation fails only with the caller's context error, an error
//     from the fault hook, or keyservice.ErrConflict from Put.
package memstore
