package keyclient

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// CheckAccess asks every endpoint of a remote keys URL (see ParseEndpoints)
// whether opts.Secret may get keys of categories in opts.Scope, with one
// lookup each that creates nothing. It returns nil when every endpoint that
// answered accepted; the first permanent refusal (ErrUnauthenticated,
// ErrPermissionDenied, ErrInvalidArgument, ErrConfig), naming the endpoint;
// or, when no endpoint answered within timeout, an ErrUnavailable error
// (the service may come up later: callers that can wait should not fail on
// it).
//
// A launcher calls it before reading any input, so that a wrong secret or
// missing right fails the command at once instead of after retries.
func CheckAccess(ctx context.Context, keysURL string, opts Options, categories []string, timeout time.Duration) error {
	eps, err := ParseEndpoints(keysURL)
	if err != nil {
		return err
	}
	if opts.Scope == "" {
		return errors.New("keyclient: CheckAccess needs Options.Scope")
	}
	hc := opts.HTTPClient
	if hc == nil {
		hc = DefaultHTTPClient()
	}
	var unavailable error
	accepted := 0
	for _, e := range eps {
		t, err := NewRemoteTransport(e, opts.Secret, hc)
		if err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		err = t.CheckAccess(cctx, opts.Scope, categories)
		cancel()
		switch {
		case err == nil:
			accepted++
		case IsTransient(err):
			if unavailable == nil {
				unavailable = fmt.Errorf("%s: %w", endpointName(e), err)
			}
		default:
			return fmt.Errorf("%s: %w", endpointName(e), err)
		}
	}
	if accepted == 0 {
		return unavailable
	}
	return nil
}
