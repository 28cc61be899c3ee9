//go:build race

package fieldcrypt

// raceEnabled: under the race detector sync.Pool drops what is put back at
// random, so allocation counts mean nothing; make test runs this package
// without it too.
const raceEnabled = true
