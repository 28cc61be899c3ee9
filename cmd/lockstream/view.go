package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/spf13/cobra"

	"github.com/lockstream/lockstream/layout"
	"github.com/lockstream/lockstream/pipelines"
	"github.com/lockstream/lockstream/transforms"
)

func init() { register(newViewCmd) }

func newViewCmd() *cobra.Command {
	var (
		root, hour, typ, out, format, keys, scope string
		version                                   int
	)
	c := &cobra.Command{
		Use:   "view --root ROOT --hour H --type T --out PATH [--format ndjson|avro] --keys URL [beam runner flags]",
		Short: "Decrypt one published hour for an authorized service (Beam pipeline; prism runner locally)",
		Long: `view writes a decrypted copy of one published dataset hour to PATH (a file, or gs://bucket/path).
PII of deleted users and revoked categories comes out as null; a ciphertext that does not decrypt
(tampered, moved to another field or user) comes out as null and is counted as corrupt. Keep PATH
in a restricted location: it holds plaintext.

--keys local:DIR or http(s)://HOST:PORT of a service with decrypt rights
(secret in $` + transforms.KeysSecretEnv + `).

Example:
  lockstream view --root ./out --hour 2026-11-23T06 --type AccountUpdate --out /secure/au.ndjson --keys local:./keys`,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if help, err := parseWithBeamFlags(cmd, args); help {
				return cmd.Help()
			} else if err != nil {
				return err
			}
			beam.Init()
			if root == "" || hour == "" || typ == "" || out == "" || keys == "" {
				return errors.New("--root, --hour, --type, --out and --keys are required")
			}
			h, err := layout.ParseHour(hour)
			if err != nil {
				return err
			}
			res, err := pipelines.View(cmd.Context(), pipelines.ViewConfig{Root: root, Type: typ, Version: version, Hour: h,
				Out: out, Format: format, KeysURL: keys, KeyScope: scope})
			if errors.Is(err, pipelines.ErrDryRun) {
				return dryRunDone(cmd.ErrOrStderr())
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "view %s v%d %s → %s: %d records (%d with shredded fields: %d fields; %d corrupt: %d fields; %d unreadable) in %.1fs\n",
				typ, max(version, 1), layout.FormatHour(h), out, res.Records, res.ShreddedRecords, res.ShreddedFields,
				res.CorruptRecords, res.CorruptFields, res.Unreadable, res.Elapsed.Seconds())
			return nil
		},
	}
	fl := c.Flags()
	fl.StringVar(&root, "root", "", "dataset root: a directory or gs://bucket/prefix")
	fl.StringVar(&hour, "hour", "", "the published hour, e.g. 2026-11-23T06")
	fl.StringVar(&typ, "type", "", "event type")
	fl.IntVar(&version, "version", 1, "schema version")
	fl.StringVar(&out, "out", "", "output file (local path or gs://bucket/path)")
	fl.StringVar(&format, "format", transforms.FormatNDJSON, "ndjson or avro")
	fl.StringVar(&keys, "keys", os.Getenv("LOCKSTREAM_KEYS"), "key service: local:DIR or http(s)://HOST:PORT (default $LOCKSTREAM_KEYS)")
	fl.StringVar(&scope, "key-scope", transforms.DefaultKeyScope, "key scope the data was written with")
	return c
}
