package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Required flags of the Flex Templates: a template must mark exactly these
// as not optional (the command checks them itself at run time).
var templateRequired = map[string][]string{
	"ingest": {"subscription", "root", "keys"}, // a template streams from Pub/Sub
	"hourly": {"root"},
	"view":   {"root", "hour", "type", "out", "keys"},
}

// TestFlexTemplateMetadataMatchesFlags: every parameter of
// deploy/dataflow/<command>.metadata.json is a flag of that command with a
// label and help text, the required ones are exactly the command's required
// flags, and the Dockerfile and entry script start that binary with its
// subcommand.
func TestFlexTemplateMetadataMatchesFlags(t *testing.T) {
	dir := filepath.Join("..", "..", "deploy", "dataflow")
	root := newRootCmd()
	for command, required := range templateRequired {
		data, err := os.ReadFile(filepath.Join(dir, command+".metadata.json"))
		if err != nil {
			t.Fatal(err)
		}
		var md struct {
			Name, Description string
			Parameters        []struct {
				Name, Label, HelpText string
				IsOptional            bool
				Regexes               []string
			}
		}
		if err := json.Unmarshal(data, &md); err != nil {
			t.Fatalf("%s: %v", command, err)
		}
		cmd, _, err := root.Find([]string{command})
		if err != nil || cmd.Name() != command {
			t.Fatalf("%s: no such command", command)
		}
		var mandatory []string
		for _, p := range md.Parameters {
			if cmd.Flags().Lookup(p.Name) == nil {
				t.Errorf("%s template: parameter %q is not a flag of lockstream %s", command, p.Name, command)
			}
			if p.Label == "" || p.HelpText == "" {
				t.Errorf("%s template: parameter %q lacks a label or help text", command, p.Name)
			}
			if !p.IsOptional {
				mandatory = append(mandatory, p.Name)
			}
		}
		slices.Sort(mandatory)
		want := slices.Sorted(slices.Values(required))
		if !slices.Equal(mandatory, want) {
			t.Errorf("%s template: required parameters %v, the command requires %v", command, mandatory, want)
		}
		if md.Name == "" || md.Description == "" {
			t.Errorf("%s template: no name or description", command)
		}
	}
	docker, err := os.ReadFile(filepath.Join(dir, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	entry, err := os.ReadFile(filepath.Join(dir, "entry.sh"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"./cmd/lockstream", "/usr/local/bin/lockstream", "FLEX_TEMPLATE_GO_BINARY=/template/entry.sh",
		"COPY deploy/dataflow/entry.sh /template/entry.sh", "LOCKSTREAM_COMMAND=${COMMAND}", "go-template-launcher-base"} {
		if !strings.Contains(string(docker), want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	if !strings.Contains(string(entry), `exec /usr/local/bin/lockstream "${LOCKSTREAM_COMMAND`) || !strings.Contains(string(entry), "--runner=dataflow") {
		t.Errorf("entry.sh does not exec the binary with the subcommand and the Dataflow runner:\n%s", entry)
	}
	if st, err := os.Stat(filepath.Join(dir, "entry.sh")); err != nil || st.Mode()&0o111 == 0 {
		t.Errorf("entry.sh is not executable")
	}
}
