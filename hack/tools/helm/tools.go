//go:build tools

// Package tools pins Helm for the chart tests (test/packaging).
// Built into bin/ by hack/packaging-tools.sh; a separate module so `go test ./...` skips it.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
