package controllers

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/keycloak/keycloaktest"
)

// issuerEnv checks one issuer with the issuer controller.
func (e *env) checkIssuer(cluster bool, name string) (ctrl.Result, authv1alpha1.KeycloakIssuerStatus) {
	e.t.Helper()
	r := &IssuerReconciler{Client: e.c, APIReader: uncached{e}, Recorder: e.rec, Keycloak: e.kc, Watched: watchedStore{e.c},
		Clock: e.clk, Cluster: cluster, RecheckInterval: 5 * time.Minute, Config: e.r.Config}
	key := types.NamespacedName{Name: name}
	if !cluster {
		key.Namespace = testNS
	}
	res, err := r.Reconcile(e.ctx, ctrl.Request{NamespacedName: key})
	if err != nil {
		e.t.Fatalf("issuer Reconcile: %v", err)
	}
	if cluster {
		o := &authv1alpha1.ClusterKeycloakIssuer{}
		if err := e.c.Get(e.ctx, key, o); err != nil {
			e.t.Fatal(err)
		}
		return res, o.Status
	}
	o := &authv1alpha1.KeycloakIssuer{}
	if err := e.c.Get(e.ctx, key, o); err != nil {
		e.t.Fatal(err)
	}
	return res, o.Status
}

func issuerCond(s authv1alpha1.KeycloakIssuerStatus, typ string) string {
	for _, c := range s.Conditions {
		if c.Type == typ {
			return string(c.Status) + "/" + c.Reason
		}
	}
	return ""
}

var issuerControllerScenarios = []scenario{
	{"issuer controller: the realm answers, Ready, checked again in about five minutes", func(t *testing.T) {
		e := newEnv(t, nil, namespacedIssuer("team", secretAuth(), false), userSecret("platform-client", map[string]string{"client-secret": testSecret}))
		res, st := e.checkIssuer(false, "team")
		if got := issuerCond(st, authv1alpha1.ConditionReady); got != "True/"+authv1alpha1.ReasonIssuerReady {
			t.Fatalf("Ready = %s", got)
		}
		if st.Issuer != "https://keycloak.example.com/realms/mlflow" || st.ObservedGeneration != 1 || st.LastCheckTime == nil {
			t.Fatalf("status %+v", st)
		}
		if res.RequeueAfter < 4*time.Minute || res.RequeueAfter > 5*time.Minute {
			t.Fatalf("checked again after %s", res.RequeueAfter)
		}
	}},
	{"issuer controller: a missing client secret is the platform's to fix", func(t *testing.T) {
		e := newEnv(t, nil, namespacedIssuer("team", secretAuth(), false))
		_, st := e.checkIssuer(false, "team")
		if issuerCond(st, authv1alpha1.ConditionReady) != "False/ClientSecretNotFound" || issuerCond(st, authv1alpha1.ConditionStalled) != "True/ClientSecretNotFound" {
			t.Fatalf("conditions %+v", st.Conditions)
		}
		e.wantCalls("discovery", 0)
	}},
	{"issuer controller: a realm stating another issuer is refused, with the URL to use", func(t *testing.T) {
		e := newEnv(t, nil, namespacedIssuer("team", secretAuth(), false), userSecret("platform-client", map[string]string{"client-secret": testSecret}))
		e.kc.DiscoveredIssuer = "https://sso.example.com/realms/mlflow"
		_, st := e.checkIssuer(false, "team")
		if issuerCond(st, authv1alpha1.ConditionReady) != "False/IssuerMismatch" {
			t.Fatalf("conditions %+v", st.Conditions)
		}
		e.wantEvent("Warning", "IssuerMismatch", "https://sso.example.com/realms/mlflow")
	}},
	{"issuer controller: Keycloak down is transient: Reconciling, checked again soon", func(t *testing.T) {
		e := newEnv(t, nil, namespacedIssuer("team", secretAuth(), false), userSecret("platform-client", map[string]string{"client-secret": testSecret}))
		e.kc.Fail = keycloaktest.Unreachable
		res, st := e.checkIssuer(false, "team")
		if issuerCond(st, authv1alpha1.ConditionReconciling) != "True/KeycloakUnreachable" || issuerCond(st, authv1alpha1.ConditionStalled) != "" {
			t.Fatalf("conditions %+v", st.Conditions)
		}
		if res.RequeueAfter > time.Minute {
			t.Fatalf("checked again after %s, want soon", res.RequeueAfter)
		}
	}},
	{"issuer controller: plain http only on a cluster issuer that allows it", func(t *testing.T) {
		ni := namespacedIssuer("team", secretAuth(), false)
		ni.Spec.URL = "http://keycloak.example.com"
		ci := clusterIssuer("dev", secretAuth(), nil)
		ci.Spec.URL, ci.Spec.AllowInsecureHTTP, ci.Status = "http://keycloak.example.com", true, authv1alpha1.KeycloakIssuerStatus{}
		e := newEnv(t, nil, ni, ci, userSecret("platform-client", map[string]string{"client-secret": testSecret}),
			&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: platformNS, Name: "platform-client"}, Data: map[string][]byte{"client-secret": []byte(testSecret)}})
		if _, st := e.checkIssuer(false, "team"); issuerCond(st, authv1alpha1.ConditionStalled) != "True/InsecureURL" {
			t.Fatalf("namespaced issuer over http: %+v", st.Conditions)
		}
		if _, st := e.checkIssuer(true, "dev"); issuerCond(st, authv1alpha1.ConditionReady) != "True/"+authv1alpha1.ReasonIssuerReady {
			t.Fatalf("cluster issuer that allows http: %+v", st.Conditions)
		}
	}},
}
