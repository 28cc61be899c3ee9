package main

import (
	"testing"

	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"
)

// Pipelines run on the prism runner in-process.
func TestMain(m *testing.M) { ptest.MainWithDefault(m, "prism") }
