package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lockstream/lockstream/keyservice/storetest"
)

func TestProvisionCommand(t *testing.T) {
	storetest.PubSubEmulator(t)
	ctx := context.Background()
	project := fmt.Sprintf("lockstream-cli-%d", time.Now().UnixNano())
	out, err := runCLI(t, ctx, "", "provision", "--project", project, "--dry-run")
	if err != nil || !strings.Contains(out, "create     topic") || !strings.Contains(out, "none made") {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	out, err = runCLI(t, ctx, "", "provision", "--project", project)
	if err != nil || !strings.Contains(out, "applied") {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	out, err = runCLI(t, ctx, "", "provision", "--project", project)
	if err != nil || !strings.Contains(out, "nothing to do") || strings.Contains(out, "create") {
		t.Fatalf("second run: %v\n%s", err, out)
	}
}
