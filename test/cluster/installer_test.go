package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
)

// TestInstallYAML installs the operator the other documented way: `make build-installer` renders
// dist/install.yaml for the image, which is applied as `kubectl apply --server-side` would
// (server-side apply of every object, CRDs first); the operator becomes Ready, issues a token
// and revokes it when the resource is deleted; deleting the manifest's objects leaves nothing.
func TestInstallYAML(t *testing.T) {
	ctx := context.Background()
	dist := t.TempDir()
	start := time.Now()
	cmd := exec.Command("make", "-s", "build-installer", "IMG="+operatorImage, "DIST="+dist)
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make build-installer: %v\n%s", err, out)
	}
	data, err := os.ReadFile(filepath.Join(dist, "install.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	times.Step("make build-installer", time.Since(start))

	start = time.Now()
	var deploy *unstructured.Unstructured
	// Namespaces and CRDs first, as kubectl orders them; then the rest once the CRDs serve.
	for _, phase := range []func(*unstructured.Unstructured) bool{
		func(o *unstructured.Unstructured) bool {
			return o.GetKind() == "Namespace" || o.GetKind() == "CustomResourceDefinition"
		},
		func(o *unstructured.Unstructured) bool {
			return o.GetKind() != "Namespace" && o.GetKind() != "CustomResourceDefinition"
		},
	} {
		for _, o := range objs {
			if !phase(o) {
				continue
			}
			if o.GetKind() == "Deployment" {
				deploy = o
			}
			if err := k8s.Apply(ctx, client.ApplyConfigurationFromUnstructured(o.DeepCopy()), client.FieldOwner("cluster-test"), client.ForceOwnership); err != nil {
				t.Fatalf("applying %s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
			}
		}
		waitCRDsEstablished(t, objs)
	}
	if deploy == nil {
		t.Fatal("install.yaml has no Deployment")
	}
	opNS := deploy.GetNamespace()
	tapCtx, stopTap := context.WithCancel(ctx)
	defer stopTap()
	tapLogs(tapCtx, opNS, filepath.Join(repoRoot, "bin", "cluster-logs", "pods"))
	pods := waitDeployment(t, opNS, deploy.GetName(), 1, 3*time.Minute)
	dumpOnFailure(t, opNS, pods[0].Name)
	times.Step("install.yaml applied -> operator pod Ready", time.Since(start))
	if img := pods[0].Spec.Containers[0].Image; img != operatorImage {
		t.Errorf("the operator runs %s, want %s", img, operatorImage)
	}

	const ns = "installer"
	if err := theNode.EnsureNamespace(ctx, ns, restricted); err != nil {
		t.Fatal(err)
	}
	createSecret(t, ns, "keycloak-client", map[string]string{"client-secret": strictClientSecret})
	start = time.Now()
	obj := createToken(t, ns, "token", authv1alpha1.MLflowAccessTokenSpec{
		Keycloak:    keycloakSpec(realmStrict, strictClientID, "keycloak-client"),
		Grant:       authv1alpha1.GrantSpec{Type: authv1alpha1.GrantClientCredentials},
		RenewBefore: &metav1.Duration{Duration: strictTokenLifespan - 10*time.Second},
	})
	obj = waitTokenReady(t, ns, obj.Name, 2*time.Minute)
	times.Step("install.yaml operator: token created -> Ready", time.Since(start))
	tok := tokenOf(t, obj)
	if active, err := introspect(realmStrict, strictClientID, strictClientSecret, tok, "access_token"); err != nil || !active {
		t.Fatalf("the Secret's token is not active at Keycloak (%v, %v)", active, err)
	}

	// Deleting the resource revokes its token (the finalizer) and removes its Secret.
	start = time.Now()
	if err := k8s.Delete(ctx, obj); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, 250*time.Millisecond, "the resource and its Secret to go", func() (bool, string) {
		if _, err := getToken(ns, obj.Name); !apierrors.IsNotFound(err) {
			return false, fmt.Sprintf("resource: %v", err)
		}
		d, err := secretData(ctx, ns, obj.SecretNameOrDefault())
		return d == nil && err == nil, fmt.Sprintf("Secret: %v", err)
	})
	times.Step("install.yaml operator: token deleted -> revoked, resource and Secret gone", time.Since(start))
	if !jwtExpiry(tok).After(time.Now()) {
		t.Fatal("the token expired before its revocation could be checked")
	}
	if active, err := introspect(realmStrict, strictClientID, strictClientSecret, tok, "access_token"); err != nil || active {
		t.Errorf("after the deletion Keycloak says the token is active=%v (%v), want revoked", active, err)
	}

	// Uninstall: the manifest's objects, in reverse order; the namespaces must go.
	start = time.Now()
	if err := cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := len(objs) - 1; i >= 0; i-- {
		if err := k8s.Delete(ctx, objs[i].DeepCopy(), client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil && !apierrors.IsNotFound(err) {
			t.Fatalf("deleting %s %s/%s: %v", objs[i].GetKind(), objs[i].GetNamespace(), objs[i].GetName(), err)
		}
	}
	eventually(t, 3*time.Minute, 250*time.Millisecond, "the namespaces and CRDs to disappear", func() (bool, string) {
		for _, n := range []string{ns, opNS} {
			if _, err := cs.CoreV1().Namespaces().Get(ctx, n, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return false, fmt.Sprintf("namespace %s: %v", n, err)
			}
		}
		for _, o := range objs {
			if o.GetKind() != "CustomResourceDefinition" {
				continue
			}
			if err := k8s.Get(ctx, types.NamespacedName{Name: o.GetName()}, &apiextensionsv1.CustomResourceDefinition{}); !apierrors.IsNotFound(err) {
				return false, fmt.Sprintf("CRD %s: %v", o.GetName(), err)
			}
		}
		return true, ""
	})
	times.Step("install.yaml objects deleted -> namespaces and CRDs gone", time.Since(start))
}

// waitCRDsEstablished waits until every CRD among objs serves.
func waitCRDsEstablished(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() != "CustomResourceDefinition" {
			continue
		}
		eventually(t, time.Minute, 200*time.Millisecond, "CRD "+o.GetName()+" Established", func() (bool, string) {
			crd := &apiextensionsv1.CustomResourceDefinition{}
			if err := k8s.Get(context.Background(), types.NamespacedName{Name: o.GetName()}, crd); err != nil {
				return false, err.Error()
			}
			for _, c := range crd.Status.Conditions {
				if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
					return true, ""
				}
			}
			return false, "not Established"
		})
	}
}

// decodeManifest splits a multi-document YAML manifest into objects.
func decodeManifest(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("decoding the manifest: %w", err)
		}
		if len(m) > 0 {
			objs = append(objs, &unstructured.Unstructured{Object: m})
		}
	}
	if len(objs) == 0 {
		return nil, errors.New("no objects in the manifest")
	}
	return objs, nil
}
