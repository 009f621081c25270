//go:build tools

// Package tools pins kustomize for `make build-installer` and test/packaging.
// Built into bin/ by hack/packaging-tools.sh; a separate module so `go test ./...` skips it.
package tools

import _ "sigs.k8s.io/kustomize/kustomize/v5"
