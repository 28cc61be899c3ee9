package keyclient

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
)

// Opener makes a transport for the part of a URL after "<scheme>:".
type Opener func(ctx context.Context, rest string, opts Options) (Transport, io.Closer, error)

var (
	schemesMu sync.Mutex
	schemes   = map[string]Opener{}
)

// RegisterScheme makes Open understand "<scheme>:…". Package
// keyclient/local registers "local" (in-process key service on a bolt
// directory); it lives apart so that pipelines that talk to a remote key
// service do not link the key service and its stores.
func RegisterScheme(scheme string, o Opener) {
	schemesMu.Lock()
	defer schemesMu.Unlock()
	schemes[scheme] = o
}

// Open returns a Client for url: "http://host:port" or "https://host:port"
// (the key service API; opts.Secret authenticates), or "local:DIR" when
// package keyclient/local is linked in.
func Open(ctx context.Context, url string, opts Options) (*Client, error) {
	if strings.HasPrefix(url, "http://") || strings.HasPrefix(url, "https://") {
		return NewRemote(url, opts)
	}
	scheme, rest, ok := strings.Cut(url, ":")
	if !ok {
		return nil, fmt.Errorf("keyclient: key service URL %q: want http(s)://host:port or local:DIR", url)
	}
	schemesMu.Lock()
	o := schemes[scheme]
	schemesMu.Unlock()
	if o == nil {
		if scheme == "local" {
			return nil, fmt.Errorf("keyclient: %q needs package keyclient/local linked in (import _ \"github.com/lockstream/lockstream/keyclient/local\")", url)
		}
		return nil, fmt.Errorf("keyclient: unknown key service URL scheme %q (want http, https or local)", scheme)
	}
	t, closer, err := o(ctx, rest, opts)
	if err != nil {
		return nil, err
	}
	c, err := newClient(t, closer, opts)
	if err != nil && closer != nil {
		_ = closer.Close()
	}
	return c, err
}
