package transforms

import (
	"context"
	"os"

	"github.com/lockstream/lockstream/keyclient"
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
// keys of up to cacheSize users.
func openKeyService(ctx context.Context, url, scope string, cacheSize int) (keyclient.Keys, error) {
	return keyclient.Open(ctx, url, keyclient.Options{Scope: scope, Secret: os.Getenv(KeysSecretEnv), CacheSize: cacheSize})
}
