package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/lockstream/lockstream/fieldcrypt"
	"github.com/lockstream/lockstream/keyclient/local"
	"github.com/lockstream/lockstream/keyservice"
	"github.com/lockstream/lockstream/keyservice/server"
	"github.com/lockstream/lockstream/keyservice/stores"
)

func init() { register(newKeysCmd) }

// Environment variables the keys commands read.
const (
	envKeysURL    = "LOCKSTREAM_KEYS"        // default of --keys
	envKeysSecret = "LOCKSTREAM_KEYS_SECRET" // default of --secret
)

// onKeysServing, when set (tests), is told the address `keys serve` listens on.
var onKeysServing func(addr string)

// buildVersion is the version of this build, set when it is linked:
//
//	go build -ldflags "-X main.buildVersion=v1.4.0" ./cmd/lockstream
//
// `keys serve` exports it as lockstream_keys_build_info{version} (see
// deploy/keyservice/RUNBOOK.md). Unset, it is the VCS revision Go stamped
// into the binary, or "devel".
var buildVersion string

// version is buildVersion, or what the binary knows of its source.
func version() string {
	if buildVersion != "" {
		return buildVersion
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	switch {
	case rev != "":
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if dirty {
			rev += "-dirty"
		}
		return rev
	case bi.Main.Version != "" && bi.Main.Version != "(devel)":
		return bi.Main.Version
	}
	return "devel"
}

func newKeysCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "keys",
		Short: "Run and administer the key service (keychains, crypto-shredding)",
		Long: `Run the key service and administer keychains.

Admin commands reach the service with --keys:
  http(s)://HOST:PORT   a running "lockstream keys serve" (--secret or $LOCKSTREAM_KEYS_SECRET
                        must belong to a service with "admin": true)
  local:DIR             the embedded store in DIR, opened directly (no server may hold it);
                        master key from --master-key-file, $LOCKSTREAM_MASTER_KEY or DIR/master.key

User ids are personal data: they are never printed. Pass "-" instead of a user id to read it
from stdin (keeps it out of shell history and process lists).`,
	}
	c.AddCommand(newKeysServeCmd(), newKeysInitCmd(), newKeysCreateUserCmd(), newKeysDeleteUserCmd(),
		newKeysRevokeCmd(), newKeysRotateCmd(), newKeysShowCmd(), newKeysNewSecretCmd(), newKeysExportBQCmd())
	return c
}

// newKeysExportBQCmd is `bq export-keys` under the name the key service's
// operators look for: the same command, flags and behaviour.
func newKeysExportBQCmd() *cobra.Command {
	c := newBQExportKeysCmd()
	c.Use = strings.Replace(c.Use, "export-keys", "export-bq", 1)
	c.Example = strings.ReplaceAll(c.Example, "bq export-keys", "keys export-bq")
	c.Short += " (same as `lockstream bq export-keys`)"
	return c
}

// ---- serve ----

type serveFlags struct {
	listen, store, masterKeyFile, services, tlsCert, tlsKey, memcached, auditLog, afterDelete, debugListen string
	gcPercent, memoryLimit                                                                                 string
	categories                                                                                             []string
	staleWindow, requestTimeout                                                                            time.Duration
	maxConcurrent, maxBatch                                                                                int
}

// defaultServeGCPercent is the server's GC target (as GOGC). The server's
// live heap is small (caches of key rows), so Go's default of 100 collects
// it dozens of times a second under load; at 400 `make bench` measured
// 1.08M -> 1.33-1.62M keys/s at full load on 2 cores, and p99 at a fixed
// 521k keys/s 14-16 ms -> 4.5-5.3 ms, for a heap up to 5x the live one
// instead of 2x.
const defaultServeGCPercent = 400

func newKeysServeCmd() *cobra.Command {
	var f serveFlags
	c := &cobra.Command{
		Use:   "serve",
		Short: "Serve the key service API (gRPC, gRPC-Web, Connect), /metrics and /healthz on one port",
		Example: `  lockstream keys init --store bolt:/var/lib/lockstream/keys   # once: generates the master key
  lockstream keys serve --listen 127.0.0.1:7400 --store bolt:/var/lib/lockstream/keys \
      --master-key-file /var/lib/lockstream/keys/master.key --services services.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runServe(cmd, f) },
	}
	fl := c.Flags()
	fl.StringVar(&f.listen, "listen", "127.0.0.1:7400", "address to listen on")
	fl.StringVar(&f.store, "store", "", "key store: bolt:DIR | bigtable://PROJECT/INSTANCE/TABLE[?create=true] | memory: (required)")
	fl.StringVar(&f.masterKeyFile, "master-key-file", "", "master key file (base64 of 32 bytes); default $LOCKSTREAM_MASTER_KEY")
	fl.StringVar(&f.services, "services", "", "services file (JSON: who may call, with which rights; required)")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "TLS certificate (PEM); with --tls-key serves HTTPS")
	fl.StringVar(&f.tlsKey, "tls-key", "", "TLS private key (PEM)")
	fl.StringVar(&f.memcached, "memcached", "", "memcached tier in front of the store: host:port[,host:port…]")
	fl.DurationVar(&f.staleWindow, "stale-window", keyservice.DefaultStaleWindow, "longest a row read from the store is served from a cache (in process and memcached); bounds how long a delete takes to reach every server")
	fl.DurationVar(&f.requestTimeout, "request-timeout", server.DefaultRequestTimeout, "deadline of every RPC on the server side")
	fl.IntVar(&f.maxConcurrent, "max-concurrent", server.DefaultMaxConcurrent, "RPCs served at once; more are refused with ResourceExhausted")
	fl.IntVar(&f.maxBatch, "max-batch", keyservice.DefaultMaxBatch, "most ids in one request")
	fl.StringSliceVar(&f.categories, "categories", nil, "PII categories served (default: "+strings.Join(keyservice.DefaultCategories, ",")+")")
	fl.StringVar(&f.afterDelete, "after-delete", "deny", "what get-or-create does for a deleted user: deny (report deleted, forever) | new-keychain")
	fl.StringVar(&f.auditLog, "audit-log", "", "append the audit log (JSON lines) to this file; default stderr")
	fl.StringVar(&f.debugListen, "debug-listen", "", "also serve Go's profiler (/debug/pprof/: CPU, heap, execution trace) on this address, e.g. 127.0.0.1:7401; keep it off public interfaces (profiles can hold key bytes)")
	fl.StringVar(&f.gcPercent, "gc-percent", strconv.Itoa(defaultServeGCPercent), "Go GC target percentage, or off (as $GOGC, which wins when set and this flag is not): higher trades memory for throughput and tail latency; off needs --memory-limit")
	fl.StringVar(&f.memoryLimit, "memory-limit", "", "soft memory limit of the process, e.g. 1GiB (as $GOMEMLIMIT, which applies when this flag is not given): with --gc-percent off the GC runs only as the heap nears it (see keyservice/server/doc.go)")
	return c
}

func serveMasterKey(file string) (fieldcrypt.Secret, error) {
	if file != "" {
		return keyservice.LoadMasterKey(file)
	}
	if _, ok := os.LookupEnv(local.MasterKeyEnv); ok {
		return keyservice.MasterKeyFromEnv(local.MasterKeyEnv)
	}
	return fieldcrypt.Secret{}, fmt.Errorf("no master key: pass --master-key-file or set %s (create one with `lockstream keys init --store bolt:DIR`)", local.MasterKeyEnv)
}

// serveGC applies --gc-percent and --memory-limit ($GOGC and $GOMEMLIMIT
// win while the flags are not given).
func serveGC(cmd *cobra.Command, f serveFlags) error {
	pct := -1
	if f.gcPercent != "off" {
		n, err := strconv.Atoi(f.gcPercent)
		if err != nil || n < 10 {
			return fmt.Errorf("--gc-percent %s: want off or at least 10", f.gcPercent)
		}
		pct = n
	}
	var limit int64 = -1
	if f.memoryLimit != "" {
		n, err := parseByteSize(f.memoryLimit)
		if err != nil || n < 64<<20 {
			return fmt.Errorf("--memory-limit %s: want a size of at least 64MiB, e.g. 1GiB", f.memoryLimit)
		}
		limit = n
	}
	_, envLimit := os.LookupEnv("GOMEMLIMIT")
	if pct < 0 && limit < 0 && !envLimit {
		return errors.New("--gc-percent off needs --memory-limit (or $GOMEMLIMIT): without a limit the heap would grow without bound")
	}
	if limit > 0 {
		debug.SetMemoryLimit(limit)
	}
	if _, env := os.LookupEnv("GOGC"); !env || cmd.Flags().Changed("gc-percent") {
		debug.SetGCPercent(pct)
	}
	return nil
}

// parseByteSize reads a size as $GOMEMLIMIT does: a number with an
// optional B, KiB, MiB, GiB or TiB suffix.
func parseByteSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = rest, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q: want a number with an optional B, KiB, MiB, GiB or TiB suffix", s)
	}
	return n * mult, nil
}

func runServe(cmd *cobra.Command, f serveFlags) error {
	if err := serveGC(cmd, f); err != nil {
		return err
	}
	if f.store == "" {
		return errors.New("--store is required (e.g. --store bolt:/var/lib/lockstream/keys)")
	}
	if f.services == "" {
		return errors.New("--services is required (a JSON file listing the calling services; see keyservice/server/testdata/services.json)")
	}
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	var policy keyservice.DeletePolicy
	switch f.afterDelete {
	case "deny":
		policy = keyservice.DenyAfterDelete
	case "new-keychain":
		policy = keyservice.NewKeychainAfterDelete
	default:
		return fmt.Errorf("--after-delete %q: want deny or new-keychain", f.afterDelete)
	}
	services, err := server.LoadServices(f.services)
	if err != nil {
		return err
	}
	mk, err := serveMasterKey(f.masterKeyFile)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(cmdContext(cmd), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var opts []stores.Option
	if f.memcached != "" {
		opts = append(opts, stores.WithMemcached(strings.Split(f.memcached, ","), f.staleWindow, mk))
	}
	openCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	store, err := stores.Open(openCtx, f.store, opts...)
	cancel()
	if err != nil {
		return err
	}
	svc, err := keyservice.New(store, keyservice.Options{
		MasterKey: mk, Categories: f.categories, AfterDelete: policy, MaxBatch: f.maxBatch, StaleWindow: f.staleWindow,
	})
	if err != nil {
		store.Close()
		return err
	}
	defer svc.Close()

	audit := io.Writer(cmd.ErrOrStderr())
	if f.auditLog != "" {
		af, err := os.OpenFile(f.auditLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("--audit-log: %w", err)
		}
		defer af.Close()
		audit = af
	}
	srv, err := server.New(server.Config{
		Service: svc, Services: services, Audit: audit,
		RequestTimeout: f.requestTimeout, MaxConcurrent: f.maxConcurrent, BuildVersion: version(),
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	if f.debugListen != "" {
		dl, err := net.Listen("tcp", f.debugListen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("--debug-listen: %w", err)
		}
		go func() { _ = http.Serve(dl, pprofMux()) }()
		defer dl.Close()
		fmt.Fprintf(cmd.OutOrStdout(), "lockstream keys: profiler on http://%s/debug/pprof/\n", dl.Addr())
	}
	var tlsFiles *server.TLSFiles
	scheme := "http"
	if f.tlsCert != "" {
		tlsFiles, scheme = &server.TLSFiles{CertFile: f.tlsCert, KeyFile: f.tlsKey}, "https"
	}
	fmt.Fprintf(cmd.OutOrStdout(), "lockstream keys: version %s serving %s://%s (store %s, %d services, categories %s); /metrics /healthz /readyz on the same port\n",
		version(), scheme, ln.Addr(), redactStoreURL(f.store), len(services.Names()), strings.Join(svc.Options().Categories, ","))
	if onKeysServing != nil {
		onKeysServing(ln.Addr().String())
	}
	err = srv.Serve(ctx, ln, tlsFiles)
	fmt.Fprintln(cmd.OutOrStdout(), "lockstream keys: stopped")
	return err
}

// pprofMux serves net/http/pprof's handlers (registered on a mux of its
// own, not on http.DefaultServeMux).
func pprofMux() *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("/debug/pprof/", pprof.Index)
	m.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	m.HandleFunc("/debug/pprof/profile", pprof.Profile)
	m.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	m.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return m
}

// redactStoreURL drops any query (which could hold options) from a store URL
// before printing it.
func redactStoreURL(u string) string {
	if i := strings.IndexByte(u, '?'); i >= 0 {
		return u[:i]
	}
	return u
}

func cmdContext(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}

// ---- init ----

func newKeysInitCmd() *cobra.Command {
	var store, keysURL string
	c := &cobra.Command{
		Use:   "init",
		Short: "Create DIR/master.key and the key store in DIR (bolt:DIR, as keys serve --store), once",
		Long: `Creates DIR/master.key and initialises the bolt key store in DIR, once. The
same directory is then the store of "keys serve --store bolt:DIR" and the
in-process key service "--keys local:DIR" of the other commands.`,
		Example: `  lockstream keys init --store bolt:./keys`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := initDir(store, keysURL, cmd.Flags().Changed("keys"))
			if err != nil {
				return err
			}
			path, created, err := local.InitMasterKey(dir)
			if err != nil {
				return err
			}
			mk, err := keyservice.LoadMasterKey(path)
			if err != nil {
				return err
			}
			svc, err := local.OpenService(dir, mk, local.CategoriesFromEnv())
			if err != nil {
				return fmt.Errorf("open the store in %s with %s: %w", dir, path, err)
			}
			defer svc.Close()
			out := cmd.OutOrStdout()
			if !created {
				fmt.Fprintf(out, "master key %s already exists and opens the store in %s; nothing to do\n", path, dir)
				return nil
			}
			fmt.Fprintf(out, "wrote a new master key to %s (mode 0600) and initialised the store in %s\n", path, dir)
			fmt.Fprintln(out, "Without this file the keys in the store cannot be read; with it and the store, anyone can.")
			fmt.Fprintln(out, "In production keep it apart from the data (e.g. in a secret manager) and pass it with")
			fmt.Fprintln(out, "--master-key-file or $LOCKSTREAM_MASTER_KEY.")
			return nil
		},
	}
	c.Flags().StringVar(&store, "store", "", "the key store to create: bolt:DIR")
	c.Flags().StringVar(&keysURL, "keys", os.Getenv(envKeysURL), "local:DIR: the same directory")
	_ = c.Flags().MarkDeprecated("keys", "use --store bolt:DIR")
	return c
}

// initDir is the directory keys init works in: --store bolt:DIR, or the
// older spelling --keys local:DIR (also taken from $LOCKSTREAM_KEYS when
// neither flag is given).
func initDir(store, keysURL string, keysSet bool) (string, error) {
	if store != "" {
		if keysSet {
			return "", errors.New("init takes --store bolt:DIR or the deprecated --keys local:DIR, not both")
		}
		dir, ok := strings.CutPrefix(store, "bolt:")
		if !ok || dir == "" {
			return "", fmt.Errorf("init needs --store bolt:DIR (got %q); other stores are created by their operator (bigtable: provision)", store)
		}
		return dir, nil
	}
	dir, ok := strings.CutPrefix(keysURL, "local:")
	if !ok || dir == "" {
		return "", fmt.Errorf("init needs --store bolt:DIR (got --keys %q); a remote service is initialised by its operator", keysURL)
	}
	return dir, nil
}

// ---- new-secret ----

func newKeysNewSecretCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "new-secret",
		Short: "Print a new random service secret and the secret_sha256 to put in the services file",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b := make([]byte, 32)
			if _, err := rand.Read(b); err != nil {
				return err
			}
			s := base64.RawURLEncoding.EncodeToString(b)
			fmt.Fprintf(cmd.OutOrStdout(), "secret:        %s\nsecret_sha256: %s\n", s, server.HashSecret(s))
			return nil
		},
	}
}
