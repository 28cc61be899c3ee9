package keyservice

// Test access to this package's internals, and the stores its in-package
// tests run on (compiled into this package's tests only).

// MasterCheckRow is the row that holds a value sealed under the master key.
const MasterCheckRow = keyCheck

// The store implementations (keyservice/memstore, keyservice/boltstore)
// import this package, so the in-package tests cannot import them: the
// external test package sets these in its init (store_test.go).
var (
	NewMemoryStoreForTest func() Store
	OpenBoltForTest       func(dir string) (LocalWriter, error)
)
