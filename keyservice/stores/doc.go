// Package stores opens a [keyservice.Store] by URL, the way the CLI's
// --store flag names one, and optionally puts the memcached tier in front
// of it. It is the one package that knows every implementation; the
// implementations each live in their own package and import keyservice,
// not each other.
//
// # Store URLs
//
//	bolt:DIR                             keyservice/boltstore in DIR (created if missing); the default
//	memory: (or mem:)                    keyservice/memstore: in-memory, lost on exit (tests, demos)
//	bigtable://PROJECT/INSTANCE/TABLE    keyservice/bigtablestore (BIGTABLE_EMULATOR_HOST honoured);
//	                                     ?create=true creates the table and family if missing
//
// "bolt://DIR" is read as "bolt:DIR". [WithMemcached] wraps the store in a
// keyservice/memcachedstore tier; [WithMemcachedNamespace] and
// [WithBigtableClientOptions] configure the tier and the Bigtable clients.
//
// # Guarantees
//
//   - Open returns the implementation's own value (*boltstore.Store,
//     *memstore.Store, *bigtablestore.Store, or *memcachedstore.Store
//     around one of them), so callers may type-assert it.
//   - If the memcached tier cannot be set up, the store opened for it is
//     closed again before Open returns.
//
// # Failure modes
//
//   - A URL that does not parse, an unknown scheme, a bolt URL without a
//     directory, a bigtable URL without exactly PROJECT/INSTANCE/TABLE or
//     with a create value that is not a boolean: keyservice.ErrInvalidArgument
//     (permanent; the error names the URL and what to fix).
//   - Otherwise the errors of the implementation's opener (a bolt file held
//     by another process, Bigtable credentials, a memcached master key of
//     the wrong size), returned as they are.
package stores
