package transforms

import (
	"context"
	"fmt"

	"github.com/lockstream/lockstream/keyclient"
)

// openKeyService opens a key-service client for "local:DIR" or
// "http(s)://host:port". It is the one call into keyclient's constructor,
// kept apart until keyclient.Open lands.
var openKeyService = func(ctx context.Context, url string) (keyclient.Keys, error) {
	return nil, fmt.Errorf("%w %q: this build has no key-service client (keyclient.Open is not linked yet)", ErrKeysURL, url)
}
