package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lockstream/lockstream/keyservice"
	"github.com/lockstream/lockstream/keyservice/api/keysv1/keysv1connect"
)

// Defaults of Config.
const (
	DefaultRequestTimeout = 2 * time.Second
	DefaultMaxConcurrent  = 256
	DefaultMaxRequestSize = 4 << 20
)

// Config configures a Server.
type Config struct {
	// Service is the key service core. Required.
	Service *keyservice.Service
	// Services are the calling services and their rights. Required.
	Services *Services
	// Audit receives the audit log as JSON lines (default os.Stderr).
	Audit io.Writer
	// Registry receives the metrics and is served on /metrics (default a
	// new registry with the Go and process collectors).
	Registry *prometheus.Registry
	// RequestTimeout bounds every RPC on the server side (a shorter client
	// deadline wins). Default 2 s.
	RequestTimeout time.Duration
	// MaxConcurrent RPCs are served at once; more are refused at once with
	// ResourceExhausted (load shedding; clients back off and retry).
	// Default 256.
	MaxConcurrent int
	// MaxRequestSize bounds one request message in bytes (default 4 MiB).
	MaxRequestSize int
	// Log receives operational messages (never user ids or keys); default
	// a text handler on stderr.
	Log *slog.Logger
	// Now is the clock of audit records (tests); default time.Now.
	Now func() time.Time
	// BuildVersion is the version of the build serving, exported as
	// lockstream_keys_build_info{version} and in the X-Lockstream-Version
	// header of /healthz and /readyz; default "unknown".
	BuildVersion string
}

// Server serves the key service API (gRPC, gRPC-Web and Connect on one
// net/http handler), /metrics, /healthz and /readyz.
type Server struct {
	cfg     Config
	svc     *keyservice.Service
	cats    []string
	audit   *auditLog
	metrics *metrics
	sem     chan struct{}
	handler http.Handler
}

// New builds a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Service == nil || cfg.Services == nil {
		return nil, errors.New("server: Config needs Service and Services")
	}
	if cfg.Audit == nil {
		cfg.Audit = os.Stderr
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
		registerRuntime(cfg.Registry)
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = DefaultMaxConcurrent
	}
	if cfg.MaxRequestSize <= 0 {
		cfg.MaxRequestSize = DefaultMaxRequestSize
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.BuildVersion == "" {
		cfg.BuildVersion = "unknown"
	}
	s := &Server{
		cfg: cfg, svc: cfg.Service, cats: cfg.Service.Options().Categories,
		audit:   &auditLog{w: cfg.Audit, now: cfg.Now},
		metrics: newMetrics(cfg.Registry),
		sem:     make(chan struct{}, cfg.MaxConcurrent),
	}
	if err := cfg.Registry.Register(newCacheCollector(cfg.Service)); err != nil {
		return nil, fmt.Errorf("server: registering cache metrics: %w", err)
	}
	registerBuildInfo(cfg.Registry, cfg.BuildVersion)
	mux := http.NewServeMux()
	path, h := keysv1connect.NewKeyServiceHandler(&handler{s: s},
		connect.WithInterceptors(s.interceptor()),
		connect.WithCodec(batchCodec{}), // binary protobuf, batch requests decoded with few allocations
		connect.WithReadMaxBytes(cfg.MaxRequestSize),
		// Answers are mostly random key bytes: compressing them costs CPU
		// (it was the largest cost in BenchmarkBatch100) and saves nothing.
		connect.WithCompressMinBytes(math.MaxInt32),
	)
	mux.Handle(path, recycle(h))
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{Registry: cfg.Registry}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Lockstream-Version", cfg.BuildVersion)
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", s.ready)
	s.handler = mux
	return s, nil
}

// Handler returns the HTTP handler of everything the server serves.
func (s *Server) Handler() http.Handler { return s.handler }

// ready checks that the store answers within a second.
func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Lockstream-Version", s.cfg.BuildVersion)
	ctx, cancel := context.WithTimeout(r.Context(), time.Second)
	defer cancel()
	if len(s.cats) > 0 {
		if _, _, err := s.svc.CategoryVersions(ctx, s.cats[0]); err != nil {
			http.Error(w, "store not ready", http.StatusServiceUnavailable)
			return
		}
	}
	_, _ = io.WriteString(w, "ready\n")
}

// TLSFiles names a certificate and key (PEM) to serve HTTPS with.
type TLSFiles struct{ CertFile, KeyFile string }

// Serve serves on ln until ctx is done, then shuts down gracefully (in-flight
// RPCs get up to 5 s). Without TLS it speaks HTTP/1.1 and cleartext HTTP/2
// (h2c, needed by gRPC clients); with TLS, HTTP/1.1 and HTTP/2.
func (s *Server) Serve(ctx context.Context, ln net.Listener, tlsFiles *TLSFiles) error {
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetHTTP2(true)
	protos.SetUnencryptedHTTP2(tlsFiles == nil)
	hs := &http.Server{
		Handler:           s.handler,
		Protocols:         &protos,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.cfg.Log.Handler(), slog.LevelWarn),
	}
	if tlsFiles != nil {
		cert, err := tls.LoadX509KeyPair(tlsFiles.CertFile, tlsFiles.KeyFile)
		if err != nil {
			return fmt.Errorf("server: TLS certificate: %w", err)
		}
		hs.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, hs.TLSConfig)
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

type callerKey struct{}

func callerFrom(ctx context.Context) *caller { c, _ := ctx.Value(callerKey{}).(*caller); return c }

// interceptor does, in order: metrics, load shedding, the request deadline
// and authentication. Authorization is per method (it depends on the
// request) and happens in the handlers before anything is looked up.
func (s *Server) interceptor() connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (resp connect.AnyResponse, err error) {
			method := req.Spec().Procedure[strings.LastIndexByte(req.Spec().Procedure, '/')+1:]
			start := time.Now()
			s.metrics.inflight.Inc()
			defer func() {
				s.metrics.inflight.Dec()
				code := "ok"
				if err != nil {
					code = connect.CodeOf(err).String()
					s.metrics.errors.WithLabelValues(errKind(err)).Inc()
				}
				s.metrics.requests.WithLabelValues(method, code).Inc()
				s.metrics.latency.WithLabelValues(method).Observe(time.Since(start).Seconds())
			}()

			select {
			case s.sem <- struct{}{}:
				defer func() { <-s.sem }()
			default:
				return nil, connect.NewError(connect.CodeResourceExhausted,
					fmt.Errorf("server overloaded (%d requests in flight); retry with backoff", s.cfg.MaxConcurrent))
			}

			ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
			defer cancel()

			auth := req.Header().Get("Authorization")
			secret, ok := strings.CutPrefix(auth, "Bearer ")
			var c *caller
			if ok && secret != "" {
				c = s.cfg.Services.authenticate(secret)
			}
			if c == nil {
				s.audit.write(AuditRecord{Op: method, Peer: req.Peer().Addr, Outcome: "denied", Code: connect.CodeUnauthenticated.String(),
					Reason: "missing or unknown service secret"})
				return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("missing or unknown service secret (Authorization: Bearer <secret>)"))
			}
			return next(context.WithValue(ctx, callerKey{}, c), req)
		}
	}
}

// errKind is the errors_total label of an RPC error.
func errKind(err error) string {
	switch connect.CodeOf(err) {
	case connect.CodeUnauthenticated:
		return "unauthenticated"
	case connect.CodePermissionDenied:
		return "permission_denied"
	case connect.CodeInvalidArgument:
		return "invalid_argument"
	case connect.CodeResourceExhausted:
		return "overloaded"
	case connect.CodeDeadlineExceeded, connect.CodeCanceled:
		return "deadline"
	case connect.CodeUnavailable:
		return "unavailable"
	case connect.CodeNotFound:
		return "not_found"
	case connect.CodeFailedPrecondition:
		return "failed_precondition"
	}
	return "internal"
}
