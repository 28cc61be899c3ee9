package stores

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/api/option"

	"github.com/lockstream/lockstream/fieldcrypt"
	"github.com/lockstream/lockstream/keyservice"
	"github.com/lockstream/lockstream/keyservice/bigtablestore"
	"github.com/lockstream/lockstream/keyservice/boltstore"
	"github.com/lockstream/lockstream/keyservice/memcachedstore"
	"github.com/lockstream/lockstream/keyservice/memstore"
)

// An Option configures Open.
type Option func(*openConfig)

type openConfig struct {
	mcAddrs   []string
	mcWindow  time.Duration
	mcNS      string
	mcMaster  fieldcrypt.Secret
	btOptions []option.ClientOption
}

// WithMemcached puts a [memcachedstore.Store] tier on addrs in front of the
// store, with the given stale window (<= 0: keyservice.DefaultStaleWindow);
// its entries are authenticated under a key derived from masterKey (the
// service's). No addresses: no tier.
func WithMemcached(addrs []string, staleWindow time.Duration, masterKey fieldcrypt.Secret) Option {
	return func(c *openConfig) { c.mcAddrs, c.mcWindow, c.mcMaster = addrs, staleWindow, masterKey }
}

// WithMemcachedNamespace sets the memcached key namespace (see
// [memcachedstore.Store.SetNamespace]).
func WithMemcachedNamespace(ns string) Option {
	return func(c *openConfig) { c.mcNS = ns }
}

// WithBigtableClientOptions passes client options (credentials, endpoint)
// to the Bigtable clients.
func WithBigtableClientOptions(opts ...option.ClientOption) Option {
	return func(c *openConfig) { c.btOptions = append(c.btOptions, opts...) }
}

// Open opens a store by URL:
//
//	bolt:DIR                             embedded store in DIR (created if missing); the default
//	memory:                              in-memory, lost on exit (tests, demos)
//	bigtable://PROJECT/INSTANCE/TABLE    Cloud Bigtable (BIGTABLE_EMULATOR_HOST honoured);
//	                                     add ?create=true to create the table and family if missing
func Open(ctx context.Context, storeURL string, opts ...Option) (keyservice.Store, error) {
	var cfg openConfig
	for _, o := range opts {
		o(&cfg)
	}
	st, err := openBase(ctx, storeURL, cfg)
	if err != nil {
		return nil, err
	}
	if len(cfg.mcAddrs) > 0 {
		mc, err := memcachedstore.New(st, cfg.mcAddrs, cfg.mcWindow, cfg.mcMaster)
		if err != nil {
			st.Close()
			return nil, err
		}
		if cfg.mcNS != "" {
			mc.SetNamespace(cfg.mcNS)
		}
		return mc, nil
	}
	return st, nil
}

func openBase(ctx context.Context, storeURL string, cfg openConfig) (keyservice.Store, error) {
	scheme, rest, ok := strings.Cut(storeURL, ":")
	if !ok {
		return nil, fmt.Errorf("%w: store URL %q: want bolt:DIR, memory: or bigtable://PROJECT/INSTANCE/TABLE", keyservice.ErrInvalidArgument, storeURL)
	}
	switch scheme {
	case "bolt":
		dir := strings.TrimPrefix(rest, "//")
		if dir == "" {
			return nil, fmt.Errorf("%w: store URL %q: bolt needs a directory (bolt:DIR)", keyservice.ErrInvalidArgument, storeURL)
		}
		return boltstore.Open(dir)
	case "memory", "mem":
		return memstore.New(), nil
	case "bigtable":
		u, err := url.Parse(storeURL)
		if err != nil {
			return nil, fmt.Errorf("%w: store URL %q: %v", keyservice.ErrInvalidArgument, storeURL, err)
		}
		parts := strings.Split(strings.Trim(u.Path, "/"), "/")
		if u.Host == "" || len(parts) != 2 || parts[0] == "" || parts[1] == "" {
			return nil, fmt.Errorf("%w: store URL %q: want bigtable://PROJECT/INSTANCE/TABLE", keyservice.ErrInvalidArgument, storeURL)
		}
		create := false
		if v := u.Query().Get("create"); v != "" {
			if create, err = strconv.ParseBool(v); err != nil {
				return nil, fmt.Errorf("%w: store URL %q: create=%q is not a boolean", keyservice.ErrInvalidArgument, storeURL, v)
			}
		}
		return bigtablestore.Open(ctx, u.Host, parts[0], parts[1], bigtablestore.Options{CreateTable: create, ClientOptions: cfg.btOptions})
	}
	return nil, fmt.Errorf("%w: store URL %q: unknown scheme %q (want bolt, memory or bigtable)", keyservice.ErrInvalidArgument, storeURL, scheme)
}
