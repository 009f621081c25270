// Package packaging tests what ships besides the operator's code: the install bundle
// (make build-installer), the Helm chart, the Prometheus alerts and Grafana dashboard, the
// Argo CD health check and the troubleshooting guide.
//
// The tools come from Go modules pinned under hack/tools and are built into bin/tools by
// hack/packaging-tools.sh (hack/test.sh runs it); the API server is envtest's (KUBEBUILDER_ASSETS,
// hack/build-envtest.sh). When either is missing the tests fail, they do not skip.
package packaging

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

// repoRoot is the repository's top directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test source")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// tool returns the path of a tool built by hack/packaging-tools.sh, or fails the test.
func tool(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(repoRoot(t), "bin", "tools", name)
	if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("tool %s is missing (%v): run the tests with `make test`, or build it with hack/packaging-tools.sh", p, err)
	}
	return p
}

// run runs a command in the repository root and returns its standard output.
func run(t testing.TB, stdin []byte, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = repoRoot(t)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, errb.String())
	}
	return out.Bytes()
}

// decodeObjects splits a multi-document YAML stream into objects, dropping empty documents.
func decodeObjects(t testing.TB, data []byte) []*unstructured.Unstructured {
	t.Helper()
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("decoding YAML: %v", err)
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
	if len(objs) == 0 {
		t.Fatal("no objects in the manifest")
	}
	return objs
}

var (
	envOnce sync.Once
	env     *envtest.Environment
	k8s     client.Client
	envErr  error
)

func TestMain(m *testing.M) {
	// The operator runs in-process in TestArgoCDHealthOfLiveOperator; its logs are not under test here.
	ctrl.SetLogger(zap.New(zap.WriteTo(io.Discard)))
	code := m.Run()
	if env != nil {
		_ = env.Stop()
	}
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// apiServer starts envtest's etcd and kube-apiserver once per test binary (no CRDs installed:
// the manifests under test bring their own) and returns a client for it.
func apiServer(t testing.TB) client.Client {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: run the tests with `make test` (hack/build-envtest.sh builds etcd and kube-apiserver into bin/k8s)")
	}
	envOnce.Do(func() {
		env = &envtest.Environment{}
		cfg, err := env.Start()
		if err != nil {
			envErr = fmt.Errorf("starting the API server: %w", err)
			return
		}
		k8s, envErr = client.New(cfg, client.Options{})
	})
	if envErr != nil {
		t.Fatal(envErr)
	}
	return k8s
}

// ensureNamespace creates a namespace for real (dry-run objects need their namespace to exist).
func ensureNamespace(t testing.TB, c client.Client, name string, labels map[string]string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if err := c.Create(context.Background(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
}

// applyDryRun does what `kubectl apply --dry-run=server` does for objects that do not exist yet:
// a create with dryRun=All, so the API server validates and admits each object (schema, CEL
// rules, RBAC escalation checks, defaulting) without storing it. Namespaces in the manifest are
// created for real first, as are the namespaces the objects live in, since a dry-run create
// fails in a namespace that does not exist.
func applyDryRun(t testing.TB, objs []*unstructured.Unstructured) {
	t.Helper()
	c := apiServer(t)
	ctx := context.Background()
	for _, o := range objs {
		if o.GetKind() == "Namespace" {
			if err := c.Create(ctx, o.DeepCopy()); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatalf("creating Namespace %s: %v", o.GetName(), err)
			}
		}
	}
	for _, o := range objs {
		if ns := o.GetNamespace(); ns != "" {
			ensureNamespace(t, c, ns, nil)
		}
	}
	for _, o := range objs {
		if o.GetKind() == "Namespace" {
			continue
		}
		if err := c.Create(ctx, o.DeepCopy(), client.DryRunAll); err != nil {
			t.Errorf("server-side dry run of %s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
	}
}

// key names an object for comparisons.
func key(o *unstructured.Unstructured) string {
	return fmt.Sprintf("%s %s/%s", o.GetKind(), o.GetNamespace(), o.GetName())
}

// find returns the objects of a kind.
func find(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// managerRole is the operator's own ClusterRole (the others are the metrics reader and the roles
// aggregated into view and edit).
func managerRole(t testing.TB, objs []*unstructured.Unstructured) *unstructured.Unstructured {
	t.Helper()
	var found []*unstructured.Unstructured
	for _, o := range find(objs, "ClusterRole") {
		if strings.HasSuffix(o.GetName(), "-manager-role") {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want exactly one ClusterRole named *-manager-role, got %d", len(found))
	}
	return found[0]
}

// only returns the single object of a kind, or fails.
func only(t testing.TB, objs []*unstructured.Unstructured, kind string) *unstructured.Unstructured {
	t.Helper()
	found := find(objs, kind)
	if len(found) != 1 {
		t.Fatalf("want exactly one %s, got %d", kind, len(found))
	}
	return found[0]
}
