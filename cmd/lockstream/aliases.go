package main

import (
	"flag"
	"fmt"

	"github.com/spf13/pflag"
)

// One name per concept across commands: --root is a lockstream root,
// --out a file or directory that is not one, --bigquery-dataset and
// --bigquery-endpoint the BigQuery dataset and API endpoint, --dry-run a
// dry run. The spellings they replaced stay for one release as
// deprecated aliases (cobra prints "Flag --out has been deprecated, use
// --root instead"); flagAliases lists them, and TestFlagAliases checks
// that each still works.

// flagAlias is an old spelling of a command's flag.
type flagAlias struct {
	command  string // the command path after "lockstream"
	old, new string
}

var flagAliases = []flagAlias{
	{"ingest", "out", "root"},
	{"hourly", "bigquery", "bigquery-dataset"},
	{"provision", "bigquery", "bigquery-dataset"},
	{"provision", "endpoint", "bigquery-endpoint"},
	{"bq load", "dataset", "bigquery-dataset"},
	{"bq load", "endpoint", "bigquery-endpoint"},
	{"bq views", "dataset", "bigquery-dataset"},
	{"bq views", "endpoint", "bigquery-endpoint"},
	{"bq export-keys", "endpoint", "bigquery-endpoint"},
	{"keys export-bq", "endpoint", "bigquery-endpoint"},
}

// addAlias adds old to fl as a deprecated spelling of the flag new (which
// must be defined already): both set the same value.
func addAlias(fl *pflag.FlagSet, old, new string) {
	f := fl.Lookup(new)
	if f == nil {
		panic(fmt.Sprintf("alias --%s of an undefined flag --%s", old, new))
	}
	fl.AddFlag(&pflag.Flag{Name: old, Value: f.Value, DefValue: f.DefValue, NoOptDefVal: f.NoOptDefVal,
		Usage: "deprecated spelling of --" + new, Deprecated: "use --" + new + " instead"})
}

// addDryRunFlag adds --dry-run to a pipeline command: Beam's --dry_run
// (the Dataflow runner builds and prints the job without submitting it),
// spelt as every other lockstream command spells it.
func addDryRunFlag(fl *pflag.FlagSet, v *bool) {
	fl.BoolVar(v, "dry-run", false, "with --runner=dataflow: build and print the job, submit nothing (Beam's --dry_run)")
}

// applyDryRun passes --dry-run on to Beam's --dry_run.
func applyDryRun(dryRun bool) error {
	if !dryRun {
		return nil
	}
	if flag.CommandLine.Lookup("dry_run") == nil {
		return fmt.Errorf("--dry-run: this build has no Dataflow runner")
	}
	return flag.CommandLine.Set("dry_run", "true")
}
