package main

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestFlagAliases lists the deprecated spellings kept for one release: each
// exists on its command, is marked deprecated naming the new flag, and sets
// the new flag's value. No command spells a concept the old way anywhere
// else: --out never names a root, --dataset, --bigquery and --endpoint are
// only aliases, and every pipeline command takes --dry-run.
func TestFlagAliases(t *testing.T) {
	root := newRootCmd()
	for _, a := range flagAliases {
		cmd, _, err := root.Find(strings.Fields(a.command))
		if err != nil || cmd.Name() != strings.Fields(a.command)[len(strings.Fields(a.command))-1] {
			t.Fatalf("%s: no such command (%v)", a.command, err)
		}
		old, nw := cmd.Flags().Lookup(a.old), cmd.Flags().Lookup(a.new)
		if old == nil || nw == nil {
			t.Fatalf("%s: --%s or --%s missing", a.command, a.old, a.new)
		}
		if !strings.Contains(old.Deprecated, "--"+a.new) {
			t.Errorf("%s --%s: deprecation %q does not name --%s", a.command, a.old, old.Deprecated, a.new)
		}
		if err := cmd.Flags().Set(a.old, "x-"+a.old); err != nil {
			t.Fatalf("%s --%s: %v", a.command, a.old, err)
		}
		if got := nw.Value.String(); got != "x-"+a.old {
			t.Errorf("%s: --%s set --%s to %q", a.command, a.old, a.new, got)
		}
	}
	isAlias := map[string]bool{}
	for _, a := range flagAliases {
		isAlias[a.command+" "+a.old] = true
	}
	for _, c := range allCommands(root) {
		path := strings.TrimPrefix(c.CommandPath(), "lockstream ")
		for _, name := range []string{"dataset", "bigquery", "endpoint"} {
			if c.Flags().Lookup(name) != nil && !isAlias[path+" "+name] {
				t.Errorf("%s: --%s is not one of the spellings (--bigquery-dataset, --bigquery-endpoint)", path, name)
			}
		}
		if f := c.Flags().Lookup("out"); f != nil && !isAlias[path+" out"] && strings.Contains(strings.ToLower(f.Usage), "root") && !strings.Contains(f.Usage, "not a root") {
			t.Errorf("%s: --out names a root (%q): use --root", path, f.Usage)
		}
	}
	for _, name := range []string{"ingest", "hourly", "view"} {
		c, _, _ := root.Find([]string{name})
		if c.Flags().Lookup("dry-run") == nil {
			t.Errorf("%s has no --dry-run", name)
		}
	}
}

func allCommands(c *cobra.Command) []*cobra.Command {
	out := []*cobra.Command{c}
	for _, sub := range c.Commands() {
		out = append(out, allCommands(sub)...)
	}
	return out
}
