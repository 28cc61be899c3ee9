package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/lockstream/lockstream/fieldcrypt"
	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/keyservice"
	"github.com/lockstream/lockstream/keyservice/boltstore"
)

const (
	// MasterKeyFile is the name of the generated master key file in DIR.
	MasterKeyFile = "master.key"
	// MasterKeyEnv holds a master key (base64 of 32 bytes).
	MasterKeyEnv = "LOCKSTREAM_MASTER_KEY"
	// CategoriesEnv lists the categories of a "local:" service.
	CategoriesEnv = "LOCKSTREAM_KEY_CATEGORIES"
)

func init() {
	keyclient.RegisterScheme("local", func(ctx context.Context, dir string, opts keyclient.Options) (keyclient.Transport, io.Closer, error) {
		mk, err := MasterKey(dir, "")
		if err != nil {
			return nil, nil, err
		}
		svc, err := OpenService(dir, mk, CategoriesFromEnv())
		if err != nil {
			return nil, nil, err
		}
		return NewTransport(svc), svc, nil
	})
}

// CategoriesFromEnv returns $LOCKSTREAM_KEY_CATEGORIES split on commas (nil
// when unset: the service's defaults).
func CategoriesFromEnv() []string {
	v := strings.TrimSpace(os.Getenv(CategoriesEnv))
	if v == "" {
		return nil
	}
	var out []string
	for _, c := range strings.Split(v, ",") {
		if c = strings.TrimSpace(c); c != "" {
			out = append(out, c)
		}
	}
	return out
}

// MasterKey finds the master key of a local directory: file if not empty,
// else $LOCKSTREAM_MASTER_KEY, else DIR/master.key.
func MasterKey(dir, file string) (fieldcrypt.Secret, error) {
	if file != "" {
		return keyservice.LoadMasterKey(file)
	}
	if v, ok := os.LookupEnv(MasterKeyEnv); ok && strings.TrimSpace(v) != "" {
		return keyservice.MasterKeyFromEnv(MasterKeyEnv)
	}
	p := filepath.Join(dir, MasterKeyFile)
	if _, err := os.Stat(p); err != nil {
		return fieldcrypt.Secret{}, fmt.Errorf("keyclient/local: no master key: pass --master-key-file, set %s, or create %s with `lockstream keys init --store bolt:%s`", MasterKeyEnv, p, dir)
	}
	return keyservice.LoadMasterKey(p)
}

// InitMasterKey writes a new master key to DIR/master.key (mode 0600) unless
// one exists. It reports the path and whether it created the file.
func InitMasterKey(dir string) (path string, created bool, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", false, fmt.Errorf("keyclient/local: %w", err)
	}
	path = filepath.Join(dir, MasterKeyFile)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return path, false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("keyclient/local: %w", err)
	}
	if _, err := io.WriteString(f, keyservice.GenerateMasterKey()+"\n"); err != nil {
		f.Close()
		return "", false, fmt.Errorf("keyclient/local: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", false, fmt.Errorf("keyclient/local: write %s: %w", path, err)
	}
	return path, true, f.Close()
}

// OpenService opens the key service on the bolt store in dir.
func OpenService(dir string, master fieldcrypt.Secret, categories []string) (*keyservice.Service, error) {
	st, err := boltstore.Open(dir)
	if err != nil {
		return nil, err
	}
	svc, err := keyservice.New(st, keyservice.Options{MasterKey: master, Categories: categories})
	if err != nil {
		st.Close()
		return nil, err
	}
	return svc, nil
}

// Transport is keyclient.Transport over a *keyservice.Service in process.
type Transport struct {
	svc *keyservice.Service
}

var _ keyclient.Transport = (*Transport)(nil)

// NewTransport wraps svc.
func NewTransport(svc *keyservice.Service) *Transport { return &Transport{svc: svc} }

// New returns a keyclient.Client over svc (the same cache and batching as a
// remote client).
func New(svc *keyservice.Service, opts keyclient.Options) (*keyclient.Client, error) {
	return keyclient.New(NewTransport(svc), opts)
}

// Purge drops what the service caches in process (keyclient.Client.Purge
// calls it after emptying its own cache).
func (t *Transport) Purge() { t.svc.PurgeCache() }

// GetOrCreate implements keyclient.Transport.
func (t *Transport) GetOrCreate(ctx context.Context, scope string, userIDs, categories []string) ([]keyclient.UserKeys, error) {
	res, err := t.svc.GetOrCreate(ctx, scope, userIDs, categories)
	if err != nil {
		return nil, mapErr(err)
	}
	return convert(res, false), nil
}

// GetBySubject implements keyclient.Transport.
func (t *Transport) GetBySubject(ctx context.Context, scope string, subjects, categories []string) ([]keyclient.UserKeys, error) {
	res, err := t.svc.GetBySubject(ctx, scope, subjects, categories)
	if err != nil {
		return nil, mapErr(err)
	}
	out := convert(res, true)
	for i := range out {
		out[i].Subject = subjects[i]
	}
	return out, nil
}

func convert(res []keyservice.UserKeys, bySubject bool) []keyclient.UserKeys {
	out := make([]keyclient.UserKeys, len(res))
	for i, r := range res {
		u := keyclient.UserKeys{Subject: r.Subject, Keys: r.Keys, Revoked: r.Revoked, Err: mapUserErr(r.Err)}
		if !bySubject {
			u.UserID = r.UserID
		}
		if u.Err != nil {
			u.Keys, u.Revoked = nil, nil
			if !bySubject {
				u.Subject = ""
			}
		}
		out[i] = u
	}
	return out
}

func mapUserErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, keyservice.ErrUserDeleted):
		return keyclient.ErrUserDeleted
	case errors.Is(err, keyservice.ErrUnknownSubject):
		return keyclient.ErrUnknownSubject
	case errors.Is(err, keyservice.ErrUnknownUser):
		return keyclient.ErrUnknownUser
	}
	return fmt.Errorf("%w: %w", keyclient.ErrInternal, err)
}

// MapError maps a core error to keyclient's sentinels (core errors carry no
// PII, so their text is kept).
func MapError(err error) error { return mapErr(err) }

func mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, keyservice.ErrInvalidArgument):
		return fmt.Errorf("%w: %w", keyclient.ErrInvalidArgument, err)
	case errors.Is(err, keyservice.ErrUnavailable), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return keyclient.Unavailable(err)
	case errors.Is(err, keyservice.ErrUnknownUser):
		return keyclient.ErrUnknownUser
	case errors.Is(err, keyservice.ErrUnknownSubject):
		return keyclient.ErrUnknownSubject
	case errors.Is(err, keyservice.ErrUserDeleted):
		return keyclient.ErrUserDeleted
	}
	return fmt.Errorf("%w: %w", keyclient.ErrInternal, err)
}
