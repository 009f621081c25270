// Command node starts the test node of package test/node by hand, for a look around or a demo:
//
//	go -C test run ./node/cmd/node                                  # bin/images/pause.tar as sandbox image
//	go -C test run ./node/cmd/node -image bin/images/operator.tar=ghcr.io/mlflow-token-operator/mlflow-token-operator:v$(cat VERSION)
//	KUBECONFIG=/tmp/mtonode-0/pki/admin.kubeconfig kubectl get nodes   # the path it prints
//
// It runs until Ctrl-C (or -duration), then removes everything. Needs root, the Debian packages
// and bin/k8s (hack/build-envtest.sh && hack/build-envtest.sh node). `go -C test run ./node/cmd/node
// -clean` only removes what killed runs left behind.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/mlflow-token-operator/mlflow-token-operator/test/node"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

type images []node.Image

func (i *images) String() string { return fmt.Sprint(*i) }

func (i *images) Set(v string) error {
	path, ref, ok := strings.Cut(v, "=")
	if !ok {
		return fmt.Errorf("want PATH=REF, got %q", v)
	}
	*i = append(*i, node.Image{Path: path, Ref: ref})
	return nil
}

// toRepoRoot makes relative paths (bin/...) name the repository's: `go -C test run` runs this
// program in test/.
func toRepoRoot() {
	dir, err := os.Getwd()
	for err == nil {
		if _, e := os.Stat(filepath.Join(dir, "PROJECT")); e == nil {
			_ = os.Chdir(dir)
			return
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return
		}
		dir = parent
	}
}

func main() {
	toRepoRoot()
	var imgs images
	sandbox := flag.String("sandbox", "bin/images/pause.tar=localhost/mlflow-token-operator/pause:"+testenv.ImageTag(), "sandbox image, PATH=REF")
	flag.Var(&imgs, "image", "image to import, PATH=REF (repeatable)")
	binDir := flag.String("bin-dir", "bin/k8s", "directory with the Kubernetes binaries")
	logDir := flag.String("log-dir", "bin/node-logs/manual", "component logs (kept)")
	duration := flag.Duration("duration", 0, "stop after this long (0: at Ctrl-C)")
	clean := flag.Bool("clean", false, "only remove what killed runs left behind, then exit")
	flag.Parse()

	if *clean {
		if err := node.CleanLeftovers(os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	var sb images
	if err := sb.Set(*sandbox); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	abs, _ := filepath.Abs(*binDir)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	n, err := node.Start(ctx, node.Options{BinDir: abs, SandboxImage: sb[0], Images: imgs, LogDir: *logDir, KeepSignals: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("KUBECONFIG=%s\nHost address for pods: %s\nLogs: %s\nCtrl-C stops the node.\n", n.Kubeconfig(), n.HostIP(), n.LogDir())
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	<-ctx.Done()
	if err := n.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
