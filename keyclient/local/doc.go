// Package local is the in-process transport of package keyclient: a
// *keyservice.Service on an embedded bolt store, used for "local:DIR" URLs,
// single-machine runs and tests. Importing it registers the "local" scheme
// with keyclient.Open.
//
// # Behavior
//
// "local:DIR" opens the bolt store in DIR (one process at a time) with the
// master key from $LOCKSTREAM_MASTER_KEY, else from DIR/master.key (written
// by InitMasterKey / `lockstream keys init`). Categories are
// $LOCKSTREAM_KEY_CATEGORIES (comma-separated) or keyservice's defaults.
// The Client in front of it is the same as for remote services (cache,
// batching, singleflight, retries), so tests exercise the same code.
//
// # Guarantees
//
// The same keys as a server on the same store and master key would serve
// for the same scope. No authorization: whoever opens DIR has every right.
//
// # Failure modes
//
// A wrong master key fails Open (keyservice.ErrSealedRow); a directory held
// by another process fails after 5 s. Core errors map to keyclient's
// sentinels (transient store errors to keyclient.ErrUnavailable).
package local
