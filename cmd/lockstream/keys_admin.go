package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/lockstream/lockstream/keyclient"
	"github.com/lockstream/lockstream/keyclient/local"
	"github.com/lockstream/lockstream/keyservice"
)

// keysAdmin is what the admin commands need; keyclient.Admin (remote) and
// localAdmin (local:DIR) implement it.
type keysAdmin interface {
	CreateKeychain(ctx context.Context, userID string) (keyclient.Keychain, error)
	DeleteUser(ctx context.Context, userID string) error
	DeleteSubject(ctx context.Context, subject string) error
	Revoke(ctx context.Context, userID, category string) error
	Rotate(ctx context.Context, category string, minVersion int) (int, error)
	Show(ctx context.Context, userID string) (keyclient.Keychain, error)
	ShowSubject(ctx context.Context, subject string) (keyclient.Keychain, error)
}

type adminFlags struct {
	keys, secret, masterKeyFile string
	categories                  []string
	timeout                     time.Duration
}

func addAdminFlags(c *cobra.Command, f *adminFlags) {
	fl := c.Flags()
	fl.StringVar(&f.keys, "keys", os.Getenv(envKeysURL), "key service: http(s)://HOST:PORT or local:DIR (default $"+envKeysURL+")")
	fl.StringVar(&f.secret, "secret", "", "admin service secret for http(s) (default $"+envKeysSecret+")")
	fl.StringVar(&f.masterKeyFile, "master-key-file", "", "local:DIR only: master key file (default $"+local.MasterKeyEnv+", then DIR/master.key)")
	fl.StringSliceVar(&f.categories, "categories", nil, "local:DIR only: PII categories (default $"+local.CategoriesEnv+" or the service defaults)")
	fl.DurationVar(&f.timeout, "timeout", 30*time.Second, "deadline of the operation")
}

// openAdmin opens the admin interface named by --keys; close releases it.
func openAdmin(f *adminFlags) (a keysAdmin, closeFn func(), err error) {
	switch {
	case f.keys == "":
		return nil, nil, fmt.Errorf("--keys is required (http(s)://HOST:PORT or local:DIR; or set $%s)", envKeysURL)
	case strings.HasPrefix(f.keys, "http://"), strings.HasPrefix(f.keys, "https://"):
		secret := f.secret
		if secret == "" {
			secret = os.Getenv(envKeysSecret)
		}
		if secret == "" {
			return nil, nil, fmt.Errorf("--secret or $%s is required for %s", envKeysSecret, f.keys)
		}
		ad, err := keyclient.NewAdmin(f.keys, secret, nil)
		if err != nil {
			return nil, nil, err
		}
		return ad, func() {}, nil
	case strings.HasPrefix(f.keys, "local:"):
		dir := strings.TrimPrefix(f.keys, "local:")
		if dir == "" {
			return nil, nil, errors.New("--keys local:DIR needs a directory")
		}
		mk, err := local.MasterKey(dir, f.masterKeyFile)
		if err != nil {
			return nil, nil, err
		}
		cats := f.categories
		if len(cats) == 0 {
			cats = local.CategoriesFromEnv()
		}
		svc, err := local.OpenService(dir, mk, cats)
		if err != nil {
			return nil, nil, err
		}
		return &localAdmin{svc: svc}, func() { svc.Close() }, nil
	}
	return nil, nil, fmt.Errorf("--keys %q: want http(s)://HOST:PORT or local:DIR", f.keys)
}

// localAdmin runs admin operations on an in-process service.
type localAdmin struct{ svc *keyservice.Service }

func (l *localAdmin) CreateKeychain(ctx context.Context, userID string) (keyclient.Keychain, error) {
	res, err := l.svc.GetOrCreate(ctx, "lockstream.admin", []string{userID}, nil)
	if err != nil {
		return keyclient.Keychain{}, local.MapError(err)
	}
	if res[0].Err != nil {
		return keyclient.Keychain{}, local.MapError(res[0].Err)
	}
	return l.ShowSubject(ctx, res[0].Subject)
}
func (l *localAdmin) DeleteUser(ctx context.Context, userID string) error {
	return local.MapError(l.svc.DeleteUser(ctx, userID))
}
func (l *localAdmin) DeleteSubject(ctx context.Context, subject string) error {
	return local.MapError(l.svc.DeleteSubject(ctx, subject))
}
func (l *localAdmin) Revoke(ctx context.Context, userID, category string) error {
	return local.MapError(l.svc.Revoke(ctx, userID, category))
}
func (l *localAdmin) Rotate(ctx context.Context, category string, minVersion int) (int, error) {
	v, err := l.svc.Rotate(ctx, category)
	if err == nil && minVersion > 0 {
		err = l.svc.SetMinVersion(ctx, category, minVersion)
	}
	return v, local.MapError(err)
}
func (l *localAdmin) Show(ctx context.Context, userID string) (keyclient.Keychain, error) {
	info, err := l.svc.Show(ctx, userID)
	return keychainOf(info), local.MapError(err)
}
func (l *localAdmin) ShowSubject(ctx context.Context, subject string) (keyclient.Keychain, error) {
	info, err := l.svc.ShowSubject(ctx, subject)
	return keychainOf(info), local.MapError(err)
}

func keychainOf(k keyservice.KeychainInfo) keyclient.Keychain {
	out := keyclient.Keychain{Subject: k.Subject, State: "active", Created: k.Created}
	if k.Deleted {
		out.State, out.Deleted = "deleted", k.DeletedAt
	}
	for _, c := range k.Categories {
		out.Categories = append(out.Categories, keyclient.CategoryInfo{Category: c.Category, Versions: c.Versions, Revoked: c.Revoked})
	}
	return out
}

// userIDArg returns the user id argument, reading it from stdin for "-".
func userIDArg(cmd *cobra.Command, arg string) (string, error) {
	if arg != "-" {
		return arg, nil
	}
	line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read the user id from stdin: %w", err)
	}
	id := strings.TrimRight(line, "\r\n")
	if id == "" {
		return "", errors.New("no user id on stdin")
	}
	return id, nil
}

// userOrSubjectArg reads the one keychain a command acts on: the USER_ID
// argument (- reads it from stdin) or --subject, exactly one of them. The
// id is "" when --subject names the keychain.
func userOrSubjectArg(cmd *cobra.Command, args []string, subject string) (string, error) {
	if (len(args) == 1) == (subject != "") {
		return "", errors.New("give a USER_ID (or - for stdin) or --subject, not both")
	}
	if subject != "" {
		return "", nil
	}
	return userIDArg(cmd, args[0])
}

// adminRun opens the admin interface, runs fn with a deadline, and turns
// errors into clear messages (never naming the user).
func adminRun(cmd *cobra.Command, f *adminFlags, fn func(ctx context.Context, a keysAdmin) error) error {
	a, closeFn, err := openAdmin(f)
	if err != nil {
		return err
	}
	defer closeFn()
	ctx, cancel := context.WithTimeout(cmdContext(cmd), f.timeout)
	defer cancel()
	err = fn(ctx, a)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, keyclient.ErrUnknownUser), errors.Is(err, keyclient.ErrUnknownSubject):
		return fmt.Errorf("no such keychain: %w", err)
	case errors.Is(err, keyclient.ErrUnauthenticated):
		return fmt.Errorf("the key service refused the secret: %w", err)
	case errors.Is(err, keyclient.ErrPermissionDenied):
		return fmt.Errorf("this service may not do that (admin: true needed): %w", err)
	case keyclient.IsTransient(err):
		return fmt.Errorf("the key service did not answer (try again): %w", err)
	}
	return err
}

func newKeysCreateUserCmd() *cobra.Command {
	var f adminFlags
	c := &cobra.Command{
		Use:   "create-user USER_ID|-",
		Short: "Create a user's keychain (idempotent) and print its subject",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := userIDArg(cmd, args[0])
			if err != nil {
				return err
			}
			return adminRun(cmd, &f, func(ctx context.Context, a keysAdmin) error {
				kc, err := a.CreateKeychain(ctx, id)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "keychain %s is active\n", kc.Subject)
				return nil
			})
		},
	}
	addAdminFlags(c, &f)
	return c
}

func newKeysDeleteUserCmd() *cobra.Command {
	var f adminFlags
	var subject string
	c := &cobra.Command{
		Use:   "delete-user [USER_ID|-] [--subject S]",
		Short: "Shred a user's keychain: all their data becomes unreadable everywhere (irreversible)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := userOrSubjectArg(cmd, args, subject)
			if err != nil {
				return err
			}
			return adminRun(cmd, &f, func(ctx context.Context, a keysAdmin) error {
				if subject != "" {
					if err := a.DeleteSubject(ctx, subject); err != nil {
						return err
					}
					fmt.Fprintf(cmd.OutOrStdout(), "deleted keychain %s: its data can no longer be decrypted\n", subject)
					return nil
				}
				if err := a.DeleteUser(ctx, id); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), "deleted the user's keychain: their data can no longer be decrypted, and the user stays deleted")
				return nil
			})
		},
	}
	c.Flags().StringVar(&subject, "subject", "", "delete the keychain with this _subject instead of a user id")
	addAdminFlags(c, &f)
	return c
}

func newKeysRevokeCmd() *cobra.Command {
	var f adminFlags
	c := &cobra.Command{
		Use:   "revoke USER_ID|- CATEGORY",
		Short: "Shred one category of a user's keychain (opt-out; irreversible)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := userIDArg(cmd, args[0])
			if err != nil {
				return err
			}
			return adminRun(cmd, &f, func(ctx context.Context, a keysAdmin) error {
				if err := a.Revoke(ctx, id, args[1]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "revoked category %s for the user: its fields can no longer be decrypted\n", args[1])
				return nil
			})
		},
	}
	addAdminFlags(c, &f)
	return c
}

func newKeysRotateCmd() *cobra.Command {
	var f adminFlags
	var minVersion int
	c := &cobra.Command{
		Use:   "rotate CATEGORY",
		Short: "Start a new key version of a category for every user",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return adminRun(cmd, &f, func(ctx context.Context, a keysAdmin) error {
				v, err := a.Rotate(ctx, args[0], minVersion)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "category %s: version %d is now current for new data", args[0], v)
				if minVersion > 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "; versions below %d are no longer served", minVersion)
				}
				fmt.Fprintln(cmd.OutOrStdout())
				return nil
			})
		},
	}
	c.Flags().IntVar(&minVersion, "min-version", 0, "also retire versions below this one (data under them becomes unreadable)")
	addAdminFlags(c, &f)
	return c
}

func newKeysShowCmd() *cobra.Command {
	var f adminFlags
	var subject string
	c := &cobra.Command{
		Use:   "show [USER_ID|-] [--subject S]",
		Short: "Describe a keychain: subject, state, categories, versions (never key bytes)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := userOrSubjectArg(cmd, args, subject)
			if err != nil {
				return err
			}
			return adminRun(cmd, &f, func(ctx context.Context, a keysAdmin) error {
				var kc keyclient.Keychain
				var err error
				if subject != "" {
					kc, err = a.ShowSubject(ctx, subject)
				} else {
					kc, err = a.Show(ctx, id)
				}
				if err != nil {
					return err
				}
				printKeychain(cmd.OutOrStdout(), kc)
				return nil
			})
		},
	}
	c.Flags().StringVar(&subject, "subject", "", "show the keychain with this _subject instead of a user id")
	addAdminFlags(c, &f)
	return c
}

func printKeychain(w io.Writer, kc keyclient.Keychain) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	subject := kc.Subject
	if subject == "" {
		subject = "(gone)"
	}
	fmt.Fprintf(tw, "subject\t%s\n", subject)
	fmt.Fprintf(tw, "state\t%s\n", kc.State)
	if !kc.Created.IsZero() {
		fmt.Fprintf(tw, "created\t%s\n", kc.Created.UTC().Format(time.RFC3339))
	}
	if !kc.Deleted.IsZero() {
		fmt.Fprintf(tw, "deleted\t%s\n", kc.Deleted.UTC().Format(time.RFC3339))
	}
	if len(kc.Categories) > 0 {
		fmt.Fprintln(tw, "\ncategory\tversions\tstate")
		for _, c := range kc.Categories {
			vs := make([]string, len(c.Versions))
			for i, v := range c.Versions {
				vs[i] = strconv.Itoa(v)
			}
			state := "active"
			if c.Revoked {
				state = "revoked"
			}
			if len(vs) == 0 {
				vs = []string{"-"}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Category, strings.Join(vs, ","), state)
		}
	}
	tw.Flush()
}
