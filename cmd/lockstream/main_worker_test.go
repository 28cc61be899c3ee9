package main

import "testing"

func TestWorkerMode(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"--worker", "--id=1"}, true},
		{[]string{"--worker=true", "--control_endpoint=x:1"}, true},
		{[]string{"-worker"}, true},
		{[]string{"--worker=false"}, false},
		{[]string{"ingest", "--worker"}, false}, // a subcommand first: the CLI
		{[]string{"--help"}, false},
		{nil, false},
	} {
		if got := workerMode(tc.args); got != tc.want {
			t.Errorf("workerMode(%q) = %v", tc.args, got)
		}
	}
}
