package keyclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/lockstream/lockstream/fieldcrypt"
	keysv1 "github.com/lockstream/lockstream/keyservice/api/keysv1"
	"github.com/lockstream/lockstream/keyservice/api/keysv1/keysv1connect"
)

// RemoteTransport is the Transport over the key service API (Connect
// protocol, binary protobuf, over HTTP/1.1 or HTTP/2).
type RemoteTransport struct {
	c    keysv1connect.KeyServiceClient
	base string // base URL, without a trailing slash
	http *http.Client
}

// Networked: a remote service's calls wait on the network
// (Client.Networked).
func (*RemoteTransport) Networked() bool { return true }

// NewRemoteTransport returns a transport to the key service at baseURL
// ("http://host:port" or "https://host:port") authenticating with secret.
// httpClient nil uses DefaultHTTPClient().
func NewRemoteTransport(baseURL, secret string, httpClient *http.Client) (*RemoteTransport, error) {
	if httpClient == nil {
		httpClient = DefaultHTTPClient()
	}
	c, err := newConnectClient(baseURL, secret, httpClient)
	if err != nil {
		return nil, err
	}
	return &RemoteTransport{c: c, base: strings.TrimRight(baseURL, "/"), http: httpClient}, nil
}

// Ready asks the server's /readyz (no credentials needed): nil when it
// answers 200, i.e. it serves and its store answers.
func (r *RemoteTransport) Ready(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.base+"/readyz", nil)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	resp, err := r.http.Do(req)
	if err != nil {
		if cerr := configCause(err); cerr != nil {
			return fmt.Errorf("%w: %w", ErrConfig, cerr)
		}
		return Unavailable(err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Unavailable(fmt.Errorf("/readyz: HTTP %d", resp.StatusCode))
	}
	return nil
}

// CheckAccess makes one lookup that creates nothing (GetKeysByUser of a
// made-up id): it fails, as a call would, when the secret is refused
// (ErrUnauthenticated) or the service may not use scope or a category
// (ErrPermissionDenied).
func (r *RemoteTransport) CheckAccess(ctx context.Context, scope string, categories []string) error {
	_, err := r.c.GetKeysByUser(ctx, connect.NewRequest(&keysv1.GetKeysByUserRequest{Scope: scope, UserIds: []string{accessCheckID}, Categories: categories}))
	return mapNil(err)
}

// accessCheckID is the user id CheckAccess looks up (it exists nowhere).
const accessCheckID = "lockstream-access-check"

// NewRemote returns a Client (cache, batching, retries) over a
// RemoteTransport built from opts.Secret and opts.HTTPClient.
func NewRemote(baseURL string, opts Options) (*Client, error) {
	t, err := NewRemoteTransport(baseURL, opts.Secret, opts.HTTPClient)
	if err != nil {
		return nil, err
	}
	return New(t, opts)
}

// CAFileEnv names a PEM file of extra CA certificates that DefaultHTTPClient
// trusts besides the system's, for a key service behind a private CA
// (`keys serve --tls-cert` with a certificate that CA signed).
const CAFileEnv = "LOCKSTREAM_KEYS_CA_FILE"

// DefaultHTTPClient returns an HTTP client with keep-alive connections sized
// for many concurrent batch RPCs; it also trusts the CAs in $CAFileEnv.
// Deadlines come from contexts, not from the client.
func DefaultHTTPClient() *http.Client {
	c, err := httpClient(os.Getenv(CAFileEnv))
	if err != nil {
		// Fail at the first call with a clear message rather than silently
		// falling back to the system roots.
		return &http.Client{Transport: failingTransport{err}}
	}
	return c
}

type failingTransport struct{ err error }

func (f failingTransport) RoundTrip(*http.Request) (*http.Response, error) { return nil, f.err }

func httpClient(caFile string) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("keyclient: $%s: %w", CAFileEnv, err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("keyclient: $%s: %s holds no PEM certificate", CAFileEnv, caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	tr.MaxIdleConns = 256
	tr.MaxIdleConnsPerHost = 128
	tr.IdleConnTimeout = 90 * time.Second
	tr.DialContext = (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	return &http.Client{Transport: tr}, nil
}

func newConnectClient(baseURL, secret string, httpClient *http.Client) (keysv1connect.KeyServiceClient, error) {
	if err := checkEndpoint(baseURL); err != nil {
		return nil, err
	}
	if httpClient == nil {
		httpClient = DefaultHTTPClient()
	}
	auth := "Bearer " + secret
	ic := connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if secret != "" {
				req.Header().Set("Authorization", auth)
			}
			return next(ctx, req)
		}
	})
	return keysv1connect.NewKeyServiceClient(httpClient, strings.TrimRight(baseURL, "/"), connect.WithInterceptors(ic),
		// Key bytes do not compress: do not ask the server to try.
		connect.WithAcceptCompression("gzip", nil, nil)), nil
}

// GetOrCreate implements Transport.
func (r *RemoteTransport) GetOrCreate(ctx context.Context, scope string, userIDs, categories []string) ([]UserKeys, error) {
	resp, err := r.c.GetOrCreateKeys(ctx, connect.NewRequest(&keysv1.GetOrCreateKeysRequest{Scope: scope, UserIds: userIDs, Categories: categories}))
	if err != nil {
		return nil, fromConnect(err)
	}
	return fromResults(resp.Msg.GetResults(), userIDs, false)
}

// GetBySubject implements Transport.
func (r *RemoteTransport) GetBySubject(ctx context.Context, scope string, subjects, categories []string) ([]UserKeys, error) {
	resp, err := r.c.GetKeysBySubject(ctx, connect.NewRequest(&keysv1.GetKeysBySubjectRequest{Scope: scope, Subjects: subjects, Categories: categories}))
	if err != nil {
		return nil, fromConnect(err)
	}
	return fromResults(resp.Msg.GetResults(), subjects, true)
}

func fromResults(rs []*keysv1.UserKeys, ids []string, bySubject bool) ([]UserKeys, error) {
	if len(rs) != len(ids) {
		return nil, fmt.Errorf("%w: %d answers for %d ids", ErrInternal, len(rs), len(ids))
	}
	out := make([]UserKeys, len(rs))
	for i, r := range rs {
		u := &out[i]
		u.Subject = r.GetSubject()
		if bySubject {
			u.Subject = ids[i]
		} else {
			u.UserID = ids[i]
		}
		switch r.GetStatus() {
		case keysv1.Status_STATUS_OK:
		case keysv1.Status_STATUS_DELETED:
			u.Err = ErrUserDeleted
			continue
		case keysv1.Status_STATUS_UNKNOWN:
			if bySubject {
				u.Err = ErrUnknownSubject
			} else {
				u.Err = ErrUnknownUser
			}
			continue
		default:
			return nil, fmt.Errorf("%w: status %v", ErrInternal, r.GetStatus())
		}
		u.Revoked = r.GetRevokedCategories()
		u.Keys = make([]fieldcrypt.CategoryKey, len(r.GetKeys()))
		for j, k := range r.GetKeys() {
			u.Keys[j] = fieldcrypt.CategoryKey{Subject: u.Subject, Category: k.GetCategory(), Version: int(k.GetVersion()), Secret: fieldcrypt.NewSecret(k.GetKey())}
			if err := u.Keys[j].Validate(); err != nil {
				return nil, fmt.Errorf("%w: %w", ErrInternal, err)
			}
		}
	}
	return out, nil
}

// fromConnect maps an RPC error to this package's sentinels. The server's
// messages carry no PII, so they are kept. A failure that no retry can
// pass (an address that does not parse, an unsupported scheme, an
// untrusted certificate) is ErrConfig; other failures to reach the server
// (refused or reset connections, timeouts, DNS) are transient.
func fromConnect(err error) error {
	if cerr := configCause(err); cerr != nil {
		return fmt.Errorf("%w: %w", ErrConfig, cerr)
	}
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return Unavailable(err)
	}
	msg := ce.Message()
	var sentinel error
	switch ce.Code() {
	case connect.CodeUnavailable, connect.CodeResourceExhausted, connect.CodeAborted, connect.CodeUnknown:
		return Unavailable(fmt.Errorf("%s: %s", ce.Code(), msg))
	case connect.CodeDeadlineExceeded, connect.CodeCanceled:
		return Unavailable(fmt.Errorf("%s: %w", ce.Code(), context.DeadlineExceeded))
	case connect.CodeUnauthenticated:
		sentinel = ErrUnauthenticated
	case connect.CodePermissionDenied:
		sentinel = ErrPermissionDenied
	case connect.CodeInvalidArgument, connect.CodeOutOfRange, connect.CodeFailedPrecondition:
		sentinel = ErrInvalidArgument
	case connect.CodeNotFound:
		sentinel = ErrUnknownUser
	default:
		sentinel = ErrInternal
	}
	if msg == "" {
		return sentinel
	}
	return fmt.Errorf("%w: %s", sentinel, msg)
}

// configCause returns the cause of err if it is a configuration error of
// the client (see ErrConfig), else nil. connect-go reports these as
// Unavailable; they are not.
func configCause(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) && ue.Op == "parse" {
		return ue
	}
	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
		header    tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &verify):
		return fmt.Errorf("TLS: %w", verify)
	case errors.As(err, &unknownCA):
		return fmt.Errorf("TLS: %w", unknownCA)
	case errors.As(err, &hostname):
		return fmt.Errorf("TLS: %w", hostname)
	case errors.As(err, &invalid):
		return fmt.Errorf("TLS: %w", invalid)
	case errors.As(err, &header):
		return fmt.Errorf("https to a server that does not speak TLS: %w", header)
	}
	msg := err.Error()
	for _, s := range []string{"unsupported protocol scheme", "server gave HTTP response to HTTPS client", "missing scheme", "no Host in request URL"} {
		if i := strings.Index(msg, s); i >= 0 {
			return errors.New(msg[i:])
		}
	}
	return nil
}

// Admin is the administrative client of the key service API (the calling
// service needs admin: true). Its answers never carry key bytes.
type Admin struct {
	cs    []keysv1connect.KeyServiceClient
	names []string
}

// NewAdmin returns an admin client for baseURL: "http(s)://host:port", or
// a comma-separated list of endpoints over one store (see ParseEndpoints).
// With several, an operation goes to the first, and to the next only when
// a connection to it could not be made (so that no operation, e.g. a
// rotation, is applied twice).
func NewAdmin(baseURL, secret string, httpClient *http.Client) (*Admin, error) {
	eps, err := ParseEndpoints(baseURL)
	if err != nil {
		return nil, err
	}
	if httpClient == nil {
		httpClient = DefaultHTTPClient()
	}
	a := &Admin{}
	for _, e := range eps {
		c, err := newConnectClient(e, secret, httpClient)
		if err != nil {
			return nil, err
		}
		a.cs, a.names = append(a.cs, c), append(a.names, endpointName(e))
	}
	return a, nil
}

// adminCall runs f on the admin's endpoints in order, moving on only when
// the request could not be sent (see NewAdmin).
func adminCall[T any](a *Admin, f func(c keysv1connect.KeyServiceClient) (T, error)) (T, error) {
	var zero T
	var errs []error
	for i, c := range a.cs {
		v, err := f(c)
		if err == nil {
			return v, nil
		}
		if len(a.cs) == 1 {
			return zero, fromConnect(err)
		}
		errs = append(errs, fmt.Errorf("%s: %w", a.names[i], fromConnect(err)))
		var op *net.OpError
		if !errors.As(err, &op) || op.Op != "dial" {
			break
		}
	}
	if len(errs) == 1 {
		return zero, errs[0]
	}
	return zero, errors.Join(errs...)
}

// Keychain describes a keychain without key material.
type Keychain struct {
	Subject    string
	State      string // "active" or "deleted"
	Created    time.Time
	Deleted    time.Time
	Categories []CategoryInfo
}

// CategoryInfo is one category of a keychain.
type CategoryInfo struct {
	Category string
	Versions []int // live versions, ascending
	Revoked  bool
}

// KeychainFromProto converts the API form (servers and the CLI share it).
func KeychainFromProto(k *keysv1.Keychain) Keychain {
	out := Keychain{Subject: k.GetSubject(), State: k.GetState()}
	if ms := k.GetCreatedUnixMs(); ms > 0 {
		out.Created = time.UnixMilli(ms).UTC()
	}
	if ms := k.GetDeletedUnixMs(); ms > 0 {
		out.Deleted = time.UnixMilli(ms).UTC()
	}
	for _, c := range k.GetCategories() {
		ci := CategoryInfo{Category: c.GetCategory(), Revoked: c.GetRevoked()}
		for _, v := range c.GetVersions() {
			ci.Versions = append(ci.Versions, int(v))
		}
		out.Categories = append(out.Categories, ci)
	}
	return out
}

// CreateKeychain creates a user's keychain if needed.
func (a *Admin) CreateKeychain(ctx context.Context, userID string) (Keychain, error) {
	return adminCall(a, func(c keysv1connect.KeyServiceClient) (Keychain, error) {
		r, err := c.CreateKeychain(ctx, connect.NewRequest(&keysv1.CreateKeychainRequest{UserId: userID}))
		if err != nil {
			return Keychain{}, err
		}
		return KeychainFromProto(r.Msg.GetKeychain()), nil
	})
}

// DeleteUser shreds a user's keychain.
func (a *Admin) DeleteUser(ctx context.Context, userID string) error {
	_, err := adminCall(a, func(c keysv1connect.KeyServiceClient) (*connect.Response[keysv1.DeleteUserResponse], error) {
		return c.DeleteUser(ctx, connect.NewRequest(&keysv1.DeleteUserRequest{Target: &keysv1.DeleteUserRequest_UserId{UserId: userID}}))
	})
	return err
}

// DeleteSubject shreds the keychain with this subject.
func (a *Admin) DeleteSubject(ctx context.Context, subject string) error {
	_, err := adminCall(a, func(c keysv1connect.KeyServiceClient) (*connect.Response[keysv1.DeleteUserResponse], error) {
		return c.DeleteUser(ctx, connect.NewRequest(&keysv1.DeleteUserRequest{Target: &keysv1.DeleteUserRequest_Subject{Subject: subject}}))
	})
	return err
}

// Revoke shreds one category of one user.
func (a *Admin) Revoke(ctx context.Context, userID, category string) error {
	_, err := adminCall(a, func(c keysv1connect.KeyServiceClient) (*connect.Response[keysv1.RevokeCategoryResponse], error) {
		return c.RevokeCategory(ctx, connect.NewRequest(&keysv1.RevokeCategoryRequest{UserId: userID, Category: category}))
	})
	return err
}

// Rotate starts a new version of a category; minVersion > 0 also retires
// versions below it.
func (a *Admin) Rotate(ctx context.Context, category string, minVersion int) (int, error) {
	return adminCall(a, func(c keysv1connect.KeyServiceClient) (int, error) {
		r, err := c.RotateCategory(ctx, connect.NewRequest(&keysv1.RotateCategoryRequest{Category: category, MinVersion: int32(minVersion)}))
		if err != nil {
			return 0, err
		}
		return int(r.Msg.GetNewVersion()), nil
	})
}

// Show describes a user's keychain.
func (a *Admin) Show(ctx context.Context, userID string) (Keychain, error) {
	return a.show(ctx, &keysv1.ShowKeychainRequest{Target: &keysv1.ShowKeychainRequest_UserId{UserId: userID}})
}

// ShowSubject describes the keychain with this subject.
func (a *Admin) ShowSubject(ctx context.Context, subject string) (Keychain, error) {
	return a.show(ctx, &keysv1.ShowKeychainRequest{Target: &keysv1.ShowKeychainRequest_Subject{Subject: subject}})
}

func (a *Admin) show(ctx context.Context, req *keysv1.ShowKeychainRequest) (Keychain, error) {
	return adminCall(a, func(c keysv1connect.KeyServiceClient) (Keychain, error) {
		r, err := c.ShowKeychain(ctx, connect.NewRequest(req))
		if err != nil {
			return Keychain{}, err
		}
		return KeychainFromProto(r.Msg.GetKeychain()), nil
	})
}

func mapNil(err error) error {
	if err == nil {
		return nil
	}
	return fromConnect(err)
}
