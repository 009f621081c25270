// Command kubectl-mlflow_token is the kubectl plugin of the mlflow-token-operator:
// `kubectl mlflow-token list|inspect|renew|revoke|bootstrap|version|completion`.
//
// It is built on k8s.io/cli-runtime and cobra, so kubectl's own flags work (--kubeconfig,
// --context, -n, --request-timeout, …), and it links only the API types, the claims parser and
// the Secret key names, never the operator itself. See root.go for the exit codes.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/cli-runtime/pkg/genericiooptions"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr})
	stop()
	os.Exit(code)
}
