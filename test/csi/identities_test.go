package csi

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/csinode"
)

// claimsScript prints the token's claims that say whose it is (never the token), then waits.
const claimsScript = `import base64, json, time
t = open("/var/run/secrets/mlflow/token").read().strip()
p = t.split(".")[1]
c = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
print("CLAIMS " + json.dumps({k: c.get(k) for k in ("sub", "azp", "preferred_username", "aud")}), flush=True)
time.sleep(3600)
`

// testIdentities: tokens per ServiceAccount; refusals that name their cause and ask Keycloak
// nothing when the scope rules say no.
func testIdentities(t *testing.T) {
	ctx := context.Background()
	start := time.Now()
	subs := map[string]map[string]any{}
	for _, f := range []federated{alpha, beta} {
		p := podWith(f.Namespace, "claims-"+f.ServiceAccount, f.ServiceAccount, f.ClientID, trainingImage)
		p.Spec.Containers[0].Command = []string{"python3", "-c", claimsScript}
		createPod(t, p)
		waitRunning(t, p.Namespace, p.Name, 2*time.Minute)
		eventually(t, time.Minute, 250*time.Millisecond, "the claims of "+p.Name, func() (bool, string) {
			for _, line := range strings.Split(podLog(t, p.Namespace, p.Name), "\n") {
				if rest, ok := strings.CutPrefix(line, "CLAIMS "); ok {
					var c map[string]any
					if json.Unmarshal([]byte(rest), &c) == nil {
						subs[f.ClientID] = c
						return true, ""
					}
				}
			}
			return false, "no CLAIMS line"
		})
		_ = deletePod(p.Namespace, p.Name)
	}
	a, b := subs[alpha.ClientID], subs[beta.ClientID]
	if a["sub"] == nil || a["sub"] == b["sub"] {
		t.Errorf("the two pods' tokens have the subjects %v and %v, want two distinct ones", a["sub"], b["sub"])
	}
	for _, f := range []federated{alpha, beta} {
		c := subs[f.ClientID]
		if c["azp"] != f.ClientID || c["preferred_username"] != "service-account-"+f.ClientID {
			t.Errorf("pod of %s: azp %v, preferred_username %v; want the client bound to it, %s", f.subject(), c["azp"], c["preferred_username"], f.ClientID)
		}
	}
	figures.Figure("identities: %s -> sub %v (%v), %s -> sub %v (%v)", alpha.subject(), a["sub"], a["preferred_username"], beta.subject(), b["sub"], b["preferred_username"])

	// A ServiceAccount without a Keycloak client: the mount fails with Keycloak's refusal.
	if err := ensureServiceAccount(ctx, alpha.Namespace, "nobody"); err != nil {
		t.Fatal(err)
	}
	nobody := createPod(t, podWith(alpha.Namespace, "nobody", "nobody", alpha.ClientID, tokenwatchImage, "/var/run/secrets/mlflow/token"))
	wantNobody := "Keycloak refused system:serviceaccount:" + alpha.Namespace + ":nobody"
	eventually(t, 2*time.Minute, 500*time.Millisecond, "the mount failure of "+nobody.Name, func() (bool, string) {
		ev := podEvents(nobody.Namespace, nobody.Name)
		return strings.Contains(ev, "FailedMount") && strings.Contains(ev, wantNobody), ev
	})
	t.Logf("pod without a client: %s", firstEvent(nobody.Namespace, nobody.Name, "FailedMount"))

	// A namespace the issuer does not admit: the mount fails, and Keycloak hears nothing of it.
	const deniedNS = "csi-denied"
	if err := ensureNamespace(ctx, deniedNS, false); err != nil {
		t.Fatal(err)
	}
	if err := ensureServiceAccount(ctx, deniedNS, "trainer"); err != nil {
		t.Fatal(err)
	}
	denied := createPod(t, podWith(deniedNS, "denied", "trainer", trainer.ClientID, tokenwatchImage, "/var/run/secrets/mlflow/token"))
	eventually(t, 2*time.Minute, 500*time.Millisecond, "the mount failure of "+denied.Name, func() (bool, string) {
		ev := podEvents(deniedNS, denied.Name)
		return strings.Contains(ev, "FailedMount") && strings.Contains(ev, "does not admit namespace "+deniedNS), ev
	})
	t.Logf("pod in a namespace not admitted: %s", firstEvent(deniedNS, denied.Name, "FailedMount"))
	time.Sleep(2 * time.Second) // the kubelet retries meanwhile: still nothing may reach Keycloak
	evs, err := kcEvents(ctx, start)
	if err != nil {
		t.Fatal(err)
	}
	sawNobody := false
	for _, e := range evs {
		sub := e.Details["client_assertion_sub"]
		if strings.Contains(sub, ":"+deniedNS+":") {
			t.Errorf("Keycloak saw a request for the namespace the issuer does not admit: %s %s", e.Type, sub)
		}
		sawNobody = sawNobody || strings.HasSuffix(sub, ":nobody")
	}
	if !sawNobody {
		t.Error("Keycloak's events do not show the refused request of the pod without a client: the check for no request proves nothing")
	}
	testMissingAudience(t)
	for _, p := range [][2]string{{nobody.Namespace, nobody.Name}, {deniedNS, denied.Name}} {
		_ = deletePod(p[0], p[1])
	}
	if pods, _ := cs.CoreV1().Pods(deniedNS).List(ctx, metav1ListAll()); pods != nil {
		for _, p := range pods.Items {
			for _, v := range p.Spec.Volumes {
				if v.CSI != nil {
					if tok, err := hostToken(&p, v.Name); err == nil && tok != "" {
						t.Errorf("pod %s/%s of a namespace not admitted has a token file", p.Namespace, p.Name)
					}
				}
			}
		}
	}
}

// firstEvent is the message of the pod's first event with reason.
func firstEvent(ns, name, reason string) string {
	for _, m := range strings.Split(podEvents(ns, name), " | ") {
		if strings.HasPrefix(m, reason+": ") {
			return m
		}
	}
	return ""
}

// testMissingAudience: an issuer of another realm, whose issuer URL the CSIDriver does not
// request tokens for: the mount fails naming the audience to add; once `helm upgrade` adds it, the
// kubelet's next retry carries the pod's token for it (here Keycloak then refuses it: the realm
// has no client bound to the ServiceAccount, which proves the token got there).
func testMissingAudience(t *testing.T) {
	ctx := context.Background()
	other := &authv1alpha1.ClusterKeycloakIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: "other-realm"},
		Spec: authv1alpha1.ClusterKeycloakIssuerSpec{
			KeycloakIssuerSpec: authv1alpha1.KeycloakIssuerSpec{URL: kcURL, Realm: "master",
				ClientAuth: authv1alpha1.IssuerClientAuth{ServiceAccount: &authv1alpha1.ServiceAccountAuth{Name: "unused"}}},
			AllowInsecureHTTP: true,
		},
	}
	if err := k8s.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, 250*time.Millisecond, "issuer other-realm Ready", func() (bool, string) {
		cur := &authv1alpha1.ClusterKeycloakIssuer{}
		if err := k8s.Get(ctx, client.ObjectKey{Name: other.Name}, cur); err != nil {
			return false, err.Error()
		}
		return len(cur.Status.Conditions) > 0 && cur.Status.Conditions[0].Status == metav1.ConditionTrue, fmt.Sprint(cur.Status.Conditions)
	})
	p := podWith(alpha.Namespace, "other-realm", alpha.ServiceAccount, alpha.ClientID, tokenwatchImage, "/var/run/secrets/mlflow/token")
	p.Spec.Volumes[0].CSI.VolumeAttributes[csinode.AttrIssuerRef] = authv1alpha1.KindClusterKeycloakIssuer + "/" + other.Name
	createPod(t, p)
	audience := kcURL + "/realms/master"
	eventually(t, 2*time.Minute, 500*time.Millisecond, "the mount failure naming the missing audience", func() (bool, string) {
		ev := podEvents(p.Namespace, p.Name)
		return strings.Contains(ev, "no service-account token for the audience "+audience), ev
	})
	t.Logf("audience missing: %s", firstEvent(p.Namespace, p.Name, "FailedMount"))
	start := time.Now()
	if out, err := helm("upgrade", "mto", filepath.Join(repoRoot, "charts", "mlflow-token-operator"), "--namespace", releaseNS, "--reuse-values",
		"--set", "csiDriver.tokenAudiences={"+realmIssuer()+","+audience+"}"); err != nil {
		t.Fatalf("helm upgrade: %v\n%s", err, out)
	}
	eventually(t, 3*time.Minute, 500*time.Millisecond, "the kubelet passing the new audience's token", func() (bool, string) {
		ev := podEvents(p.Namespace, p.Name)
		return strings.Contains(ev, "Keycloak refused "+alpha.subject()+" as client \""+alpha.ClientID+"\" of realm master"), ev
	})
	figures.Figure("a missing audience added with helm upgrade: the waiting pod's next mount attempt carried its token %.1fs later", time.Since(start).Seconds())
	_ = deletePod(p.Namespace, p.Name)
}
