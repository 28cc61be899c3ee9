#!/usr/bin/env bash
# Regenerates keyservice/api from proto/ with pinned tools (`make generate`).
# Tools are built with `go install` into a versioned cache directory, so the
# only requirement is Go and the Go module proxy. Output is committed.
set -euo pipefail
cd "$(dirname "$0")/.."

BUF_VERSION=v1.75.0                 # github.com/bufbuild/buf
PROTOC_GEN_GO_VERSION=v1.36.12      # google.golang.org/protobuf (= go.mod)
PROTOC_GEN_CONNECT_GO_VERSION=v1.21.1 # connectrpc.com/connect (= go.mod)

TOOLS="${LOCKSTREAM_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/lockstream/tools}/buf-$BUF_VERSION-go-$PROTOC_GEN_GO_VERSION-connect-$PROTOC_GEN_CONNECT_GO_VERSION"
if [ ! -x "$TOOLS/buf" ] || [ ! -x "$TOOLS/protoc-gen-go" ] || [ ! -x "$TOOLS/protoc-gen-connect-go" ]; then
  mkdir -p "$TOOLS"
  echo "generate: installing pinned tools into $TOOLS" >&2
  GOBIN="$TOOLS" GOFLAGS=-mod=mod go install "github.com/bufbuild/buf/cmd/buf@$BUF_VERSION"
  GOBIN="$TOOLS" GOFLAGS=-mod=mod go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
  GOBIN="$TOOLS" GOFLAGS=-mod=mod go install "connectrpc.com/connect/cmd/protoc-gen-connect-go@$PROTOC_GEN_CONNECT_GO_VERSION"
fi
export PATH="$TOOLS:$PATH"

rm -rf keyservice/api/keysv1
(cd proto && buf lint)
buf generate proto --template proto/buf.gen.yaml
gofmt -l keyservice/api | { ! grep .; }
echo "generate: wrote $(find keyservice/api -name '*.go' | wc -l) files under keyservice/api" >&2
