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
manifest summary (if any) on stderr and the records of every .avro file in it. A dataset hour's
published late supplements (late-0001/, late-0002/, … with their own _MANIFEST.json and _SUCCESS) are
part of the hour: each gets its manifest summary, and its records follow the main part's.

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
		if files, err = inspectDir(stderr, path); err != nil {
			return err
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

// inspectDir prints the manifest summary of each part of the directory on
// stderr and returns the .avro files to print: the directory's own, then,
// for a dataset hour, those of each published late supplement
// (late-0001/, late-0002/, …) in order. A supplement without _SUCCESS is
// an unfinished attempt: named, not read.
func inspectDir(stderr io.Writer, dir string) ([]string, error) {
	type part struct {
		name, dir string
		n         int
	}
	parts := []part{{name: layout.MainPart, dir: dir}}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		if n, ok := layout.ParseSupplementPart(e.Name()); ok && e.IsDir() {
			parts = append(parts, part{name: e.Name(), dir: filepath.Join(dir, e.Name()), n: n})
		}
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i].n < parts[j].n })
	var files []string
	var records int64
	published := 0
	for i, p := range parts {
		m, err := readManifestFile(p.dir)
		if err != nil {
			return nil, err
		}
		_, serr := os.Stat(filepath.Join(p.dir, layout.Success))
		ok := serr == nil
		if i > 0 && !ok {
			fmt.Fprintf(stderr, "%s: not published (no %s), skipped\n", p.name, layout.Success)
			continue
		}
		if m != nil {
			printManifest(stderr, m.PartName(), m, ok) // a supplement's own directory says which it is
			records += m.Records
		}
		if ok {
			published++
		}
		pf, err := avroFiles(p.dir)
		if err != nil {
			return nil, err
		}
		files = append(files, pf...)
	}
	if len(parts) > 1 {
		fmt.Fprintf(stderr, "hour: %d published parts (main + %d supplements), %d records\n", published, max(published-1, 0), records)
	}
	if len(files) == 0 {
		return nil, errors.New("no .avro files in " + dir)
	}
	return files, nil
}

// readManifestFile reads dir's _MANIFEST.json (nil if there is none).
func readManifestFile(dir string) (*layout.ManifestDoc, error) {
	data, err := os.ReadFile(filepath.Join(dir, layout.Manifest))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var m layout.ManifestDoc
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, layout.Manifest), err)
	}
	return &m, nil
}

func printManifest(w io.Writer, part string, m *layout.ManifestDoc, published bool) {
	fmt.Fprintf(w, "%s v%d %s %s: %d records in %d files, schema %s…, published=%v\n  input: raw files %d, raw records %d, late %d, duplicates dropped %d, lookback dropped %d\n  lineage: hours %s, code %s, key scope %q\n",
		m.EventType, m.SchemaVersion, m.Hour, part, m.Records, len(m.Files), short(m.SchemaFingerprint), published,
		m.Input.RawFiles, m.Input.RawRecords, m.Input.LateRecords, m.Input.DuplicatesDropped, m.Input.LookbackDropped,
		strings.Join(m.Lineage.InputHours, ","), m.Lineage.CodeVersion, m.Lineage.KeyScope)
	if m.FormatVersion >= 2 {
		fmt.Fprintf(w, "  consumed %d part files; run %s, published at %s\n", len(m.Parts), m.RunID, m.PublishedAt.UTC().Format(time.RFC3339))
	}
}

func avroFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, e := range ents {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".avro") {
			files = append(files, filepath.Join(dir, e.Name()))
		}
	}
	sort.Strings(files)
	return files, nil
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
