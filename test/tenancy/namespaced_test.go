package tenancy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

// TestNamespacedModeStaysInItsNamespaces installs the chart's RBAC for `watchNamespaces:
// [team-n]` (Roles in team-n and in the operator's namespace, a ClusterRole for what is
// cluster-scoped), runs the operator with --namespaces=team-n under exactly that, and reads the
// API server's audit log: every request of the operator's identity stays in team-n and its own
// namespace, or touches only the cluster-scoped objects it is granted. A resource in another
// namespace is left alone.
func TestNamespacedModeStaysInItsNamespaces(t *testing.T) {
	ctx := context.Background()
	const watched, other, user = "team-n", "team-x", "mto-namespaced"
	for _, ns := range []string{watched, other} {
		mustCreate(t, admin, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}
	for _, o := range chartRBAC(t, watched, user) {
		if err := admin.Create(ctx, o); err != nil {
			t.Fatalf("creating %s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
	}
	u, err := servers.Env.AddUser(envtest.User{Name: user}, servers.Config)
	if err != nil {
		t.Fatal(err)
	}

	// One operator at a time: the cluster-wide one of the other tests stops meanwhile.
	stopOperator()
	defer func() {
		if err := startMain(); err != nil {
			t.Fatalf("restarting the cluster-wide operator: %v", err)
		}
	}()
	since := time.Now()
	o := operatorOptions()
	o.Namespaces = []string{watched}
	stop, err := testenv.StartOperator(ctx, u.Config(), o)
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, admin, viaIssuer(watched, "n-cc", authv1alpha1.GrantSpec{Type: authv1alpha1.GrantClientCredentials}))
	mustCreate(t, admin, viaIssuer(other, "x-cc", authv1alpha1.GrantSpec{Type: authv1alpha1.GrantClientCredentials}))
	n := waitReady(t, watched, "n-cc")
	waitRotations(t, watched, "n-cc", n.Status.Rotations, 1)
	stop()

	x := getToken(t, other, "x-cc")
	if len(x.Finalizers) != 0 || x.Status.ObservedGeneration > 0 || len(x.Status.Conditions) != 0 {
		t.Errorf("the resource in %s was touched: finalizers %v, status %+v", other, x.Finalizers, x.Status)
	}
	if err := admin.Get(ctx, types.NamespacedName{Namespace: other, Name: "x-cc"}, &corev1.Secret{}); err == nil {
		t.Errorf("a Secret was written in %s", other)
	}

	// Cluster-scoped resources the operator may touch in this mode.
	allowedCluster := []string{"namespaces", "clusterkeycloakissuers", "tokenreviews", "subjectaccessreviews"}
	var requests, outside int
	for _, e := range auditEvents(t, user, since) {
		requests++
		ref := e.ObjectRef
		switch {
		case ref == nil: // discovery (/api, /apis, /version)
		case ref.Namespace == watched || ref.Namespace == platformNS:
		case ref.Namespace == "" && slices.Contains(allowedCluster, ref.Resource):
		default:
			outside++
			t.Errorf("the namespaced operator %s %s %s/%s (answered %d)", e.Verb, ref.Resource, ref.Namespace, ref.Name, e.ResponseStatus.Code)
		}
	}
	if requests == 0 {
		t.Fatal("no request of the namespaced operator in the audit log")
	}
	t.Logf("%d requests of the namespaced operator in the audit log, %d outside %s, %s and %v", requests, outside, watched, platformNS, allowedCluster)
}

// chartRBAC renders the chart's RBAC for watchNamespaces=[ns] in the operator's namespace and
// binds it to user instead of the chart's ServiceAccount.
func chartRBAC(t *testing.T, ns, user string) []*unstructured.Unstructured {
	t.Helper()
	helm := filepath.Join(testenv.RepoRoot(), "bin", "tools", "helm")
	if _, err := os.Stat(helm); err != nil {
		t.Fatalf("%s is missing: run the tests with `make test` (hack/packaging-tools.sh builds it)", helm)
	}
	out, err := exec.Command(helm, "template", "ns", filepath.Join(testenv.RepoRoot(), "charts", "mlflow-token-operator"),
		"--namespace", platformNS, "--set", "watchNamespaces={"+ns+"}", "--set", "crds.enabled=false",
		"--set", "uninstall.enabled=false", "--set", "tests.enabled=false", "--set", "admissionPolicies.enabled=false",
		"--set", "rbac.aggregateToDefaultRoles=false", "--set", "leaderElection.enabled=false").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("helm template: %v\n%s", err, ee.Stderr)
		}
		t.Fatal(err)
	}
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatal(err)
		}
		o := &unstructured.Unstructured{Object: m}
		switch o.GetKind() {
		case "Role", "ClusterRole":
			objs = append(objs, o)
		case "RoleBinding", "ClusterRoleBinding":
			b := &rbacv1.RoleBinding{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(m, b); err != nil {
				t.Fatal(err)
			}
			b.Subjects = []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}}
			b.Name = "ns-" + b.Name
			conv, err := runtime.DefaultUnstructuredConverter.ToUnstructured(b)
			if err != nil {
				t.Fatal(err)
			}
			u := &unstructured.Unstructured{Object: conv}
			u.SetAPIVersion("rbac.authorization.k8s.io/v1")
			u.SetKind(o.GetKind())
			objs = append(objs, u)
		}
	}
	if len(objs) == 0 {
		t.Fatal("the chart rendered no RBAC")
	}
	return objs
}

// auditEvent is what the audit log says of one request.
type auditEvent struct {
	Stage string `json:"stage"`
	Verb  string `json:"verb"`
	User  struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef *struct {
		Resource  string `json:"resource"`
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"objectRef"`
	ResponseStatus struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
	RequestReceivedTimestamp time.Time `json:"requestReceivedTimestamp"`
}

// auditEvents returns the completed requests of user since a time.
func auditEvents(t *testing.T, user string, since time.Time) []auditEvent {
	t.Helper()
	f, err := os.Open(auditLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []auditEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e auditEvent
		if json.Unmarshal(sc.Bytes(), &e) != nil || e.User.Username != user || e.Stage != "ResponseComplete" || e.RequestReceivedTimestamp.Before(since) {
			continue
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
