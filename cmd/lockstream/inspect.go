package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/linkedin/goavro/v2"
	"github.com/spf13/cobra"

	"github.com/lockstream/lockstream/layout"
)

func init() { register(newInspectCmd) }

func newInspectCmd() *cobra.Command {
	var limit int
	c := &cobra.Command{
		Use:   "inspect PATH",
		Short: "Print an Avro file or a dataset hour directory as NDJSON, with its manifest summary",
		Long: `inspect prints every record of an Avro object container file (any schema) as one JSON line,
ciphertexts and other bytes as base64. Given a directory (a dataset or raw hour), it prints the
manifest summary (if any) on stderr and the records of every .avro file in it.

Examples:
  lockstream inspect ./out/datasets/PlaybackEvent/v1/2026-11-23/06
  lockstream inspect ./out/raw/AccountUpdate/v1/2026-11-23/06/part-x.avro --limit 5`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return inspect(cmd.OutOrStdout(), cmd.ErrOrStderr(), args[0], limit)
		},
	}
	c.Flags().IntVar(&limit, "limit", 0, "stop after this many records (0: all)")
	return c
}

func inspect(stdout, stderr io.Writer, path string, limit int) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	files := []string{path}
	if st.IsDir() {
		if data, err := os.ReadFile(filepath.Join(path, layout.Manifest)); err == nil {
			var m layout.ManifestDoc
			if err := json.Unmarshal(data, &m); err != nil {
				return fmt.Errorf("%s: %w", layout.Manifest, err)
			}
			_, ok := os.Stat(filepath.Join(path, layout.Success))
			fmt.Fprintf(stderr, "%s v%d %s: %d records in %d files, schema %s…, published=%v\n  input: raw files %d, raw records %d, late %d, duplicates dropped %d, lookback dropped %d\n  lineage: hours %s, code %s, key scope %q\n",
				m.EventType, m.SchemaVersion, m.Hour, m.Records, len(m.Files), short(m.SchemaFingerprint), ok == nil,
				m.Input.RawFiles, m.Input.RawRecords, m.Input.LateRecords, m.Input.DuplicatesDropped, m.Input.LookbackDropped,
				strings.Join(m.Lineage.InputHours, ","), m.Lineage.CodeVersion, m.Lineage.KeyScope)
		}
		ents, err := os.ReadDir(path)
		if err != nil {
			return err
		}
		files = files[:0]
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), ".avro") {
				files = append(files, filepath.Join(path, e.Name()))
			}
		}
		sort.Strings(files)
		if len(files) == 0 {
			return errors.New("no .avro files in " + path)
		}
	}
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	n := 0
	for _, f := range files {
		if err := inspectFile(w, f, &n, limit); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		if limit > 0 && n >= limit {
			break
		}
	}
	return nil
}

func inspectFile(w io.Writer, path string, n *int, limit int) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r, err := goavro.NewOCFReader(bufio.NewReader(f))
	if err != nil {
		return err
	}
	for r.Scan() {
		v, err := r.Read()
		if err != nil {
			return err
		}
		line, err := json.Marshal(plainJSON(v))
		if err != nil {
			return err
		}
		w.Write(line)
		io.WriteString(w, "\n")
		*n++
		if limit > 0 && *n >= limit {
			return nil
		}
	}
	return r.Err()
}

// plainJSON unwraps goavro unions ({"bytes": x} → x) and formats times.
func plainJSON(v any) any {
	switch x := v.(type) {
	case map[string]any:
		if len(x) == 1 {
			for k, inner := range x {
				if !strings.Contains(k, "_") && (k == "bytes" || k == "string" || k == "int" || k == "long" || k == "boolean" || k == "double" || k == "float" || strings.Contains(k, ".")) {
					return plainJSON(inner)
				}
			}
		}
		out := make(map[string]any, len(x))
		for k, inner := range x {
			out[k] = plainJSON(inner)
		}
		return out
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	}
	return v
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}
