package keyclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	neturl "net/url"
	"slices"
	"strconv"
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
// (the key service API; opts.Secret authenticates), a comma-separated list
// of such endpoints, each its own failure domain (a [MultiTransport]: health
// checks, failover, hedging), or "local:DIR" when package keyclient/local is
// linked in. A URL that does not parse, or names an unknown scheme, fails
// here with ErrConfig, before any call.
func Open(ctx context.Context, url string, opts Options) (*Client, error) {
	if IsRemoteURL(url) {
		eps, err := ParseEndpoints(url)
		if err != nil {
			return nil, err
		}
		if len(eps) == 1 {
			return NewRemote(eps[0], opts)
		}
		t, err := NewMultiRemote(eps, opts.Secret, opts.HTTPClient, MultiOptions{})
		if err != nil {
			return nil, err
		}
		c, err := newClient(t, t, opts)
		if err != nil {
			_ = t.Close()
		}
		return c, err
	}
	scheme, rest, ok := strings.Cut(url, ":")
	if !ok {
		return nil, fmt.Errorf("%w: key service URL %q: want http(s)://host:port[,http(s)://host:port…] or local:DIR", ErrConfig, url)
	}
	schemesMu.Lock()
	o := schemes[scheme]
	schemesMu.Unlock()
	if o == nil {
		if scheme == "local" {
			return nil, fmt.Errorf("%w: %q needs package keyclient/local linked in (import _ \"github.com/lockstream/lockstream/keyclient/local\")", ErrConfig, url)
		}
		return nil, fmt.Errorf("%w: unknown key service URL scheme %q (want http, https or local)", ErrConfig, scheme)
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

// IsRemoteURL reports whether keysURL names the key service API (one or
// more http(s) endpoints) rather than another scheme; it does not check
// the form (ParseEndpoints does).
func IsRemoteURL(keysURL string) bool {
	return strings.HasPrefix(keysURL, "http://") || strings.HasPrefix(keysURL, "https://")
}

// ParseEndpoints splits a remote keys URL, "http(s)://host:port" or a
// comma-separated list of them, and checks each: it must parse, use http
// or https, name a host (and a port from 1 to 65535, if any), and carry no
// credentials, query or fragment (the secret comes from Options.Secret).
// The error wraps ErrConfig and says what to fix.
func ParseEndpoints(keysURL string) ([]string, error) {
	var out []string
	for _, e := range strings.Split(keysURL, ",") {
		e = strings.TrimSpace(e)
		if err := checkEndpoint(e); err != nil {
			return nil, err
		}
		if slices.Contains(out, e) {
			return nil, fmt.Errorf("%w: key service endpoint %q is listed twice", ErrConfig, e)
		}
		out = append(out, e)
	}
	return out, nil
}

// checkEndpoint checks one endpoint URL (see ParseEndpoints).
func checkEndpoint(e string) error {
	if e == "" {
		return fmt.Errorf("%w: empty key service endpoint (a stray comma?)", ErrConfig)
	}
	u, err := neturl.Parse(e)
	if err != nil {
		var ue *neturl.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL again
		}
		return fmt.Errorf("%w: key service endpoint %q does not parse: %v", ErrConfig, e, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%w: key service endpoint %q: scheme %q, want http or https", ErrConfig, e, u.Scheme)
	case u.Opaque != "" || u.Hostname() == "":
		return fmt.Errorf("%w: key service endpoint %q names no host (want %s://HOST:PORT)", ErrConfig, e, u.Scheme)
	case u.User != nil:
		return fmt.Errorf("%w: key service endpoint %s://%s: no credentials in the URL (the secret comes from $LOCKSTREAM_KEYS_SECRET or --secret)", ErrConfig, u.Scheme, u.Host)
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return fmt.Errorf("%w: key service endpoint %q: no query or fragment allowed", ErrConfig, e)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%w: key service endpoint %q: port %q, want 1-65535", ErrConfig, e, p)
		}
	}
	return nil
}
