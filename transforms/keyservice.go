package transforms

import (
	"context"
	"os"

	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/schemas"
)

// KeysSecretEnv holds the service secret for a remote key service. It is
// read by the workers when they open the client, so it is never part of the
// serialized pipeline.
const KeysSecretEnv = "LOCKSTREAM_KEYS_SECRET"

// DefaultKeyScope is the key-derivation scope ingest uses unless told
// otherwise; readers of the datasets (hourly's verification, view) must
// use the same scope to decrypt.
const DefaultKeyScope = "lockstream"

// openKeyService opens a key-service client for "local:DIR" (when package
// keyclient/local is linked in) or "http(s)://host:port" that caches the
// keys of up to cacheSize users, deriving AES-SIV keys for the categories
// of the schemas' deterministic fields only (KeyOptions).
func openKeyService(ctx context.Context, url, scope string, cacheSize int) (keyclient.Keys, error) {
	o, err := KeyOptions(scope)
	if err != nil {
		return nil, err
	}
	o.Secret, o.CacheSize = os.Getenv(KeysSecretEnv), cacheSize
	return keyclient.Open(ctx, url, o)
}

// KeyOptions are the key client options of the pipelines' workers for
// scope: an AES-SIV key is derived (HKDF) only for the keys of the
// categories that the embedded schemas have deterministic fields of
// (schemas.Registry.DeterministicCategories), which saves 5 of HKDF's 11
// SHA-256 blocks for every other key fetched. A key registered in
// process (RegisterKeys) should be made with them too.
func KeyOptions(scope string) (keyclient.Options, error) {
	reg, err := schemas.Embedded()
	if err != nil {
		return keyclient.Options{}, err
	}
	return keyclient.Options{Scope: scope, Deterministic: reg.DeterministicCategories()}, nil
}
