package controllers

import (
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
)

const platformNS = "mto-system"

func readyStatus() authv1alpha1.KeycloakIssuerStatus {
	return authv1alpha1.KeycloakIssuerStatus{ObservedGeneration: 1, Conditions: []metav1.Condition{{
		Type: authv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: authv1alpha1.ReasonIssuerReady, Message: "ok",
		LastTransitionTime: metav1.Now(), ObservedGeneration: 1}}}
}

func issuerSpec(auth authv1alpha1.IssuerClientAuth) authv1alpha1.KeycloakIssuerSpec {
	return authv1alpha1.KeycloakIssuerSpec{URL: "https://keycloak.example.com", Realm: "mlflow", ClientAuth: auth}
}

func secretAuth() authv1alpha1.IssuerClientAuth {
	return authv1alpha1.IssuerClientAuth{ClientID: testClient, ClientSecretRef: &authv1alpha1.SecretKeyRef{Name: "platform-client", Key: "client-secret"}}
}

func useIssuer(kind, name string) func(*authv1alpha1.MLflowAccessToken) {
	return func(o *authv1alpha1.MLflowAccessToken) {
		o.Spec.Keycloak = nil
		o.Spec.IssuerRef = &authv1alpha1.IssuerRef{Kind: kind, Name: name}
	}
}

func namespacedIssuer(name string, auth authv1alpha1.IssuerClientAuth, ready bool) *authv1alpha1.KeycloakIssuer {
	i := &authv1alpha1.KeycloakIssuer{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: name, Generation: 1}, Spec: issuerSpec(auth)}
	if ready {
		i.Status = readyStatus()
	}
	return i
}

func clusterIssuer(name string, auth authv1alpha1.IssuerClientAuth, sel *metav1.LabelSelector) *authv1alpha1.ClusterKeycloakIssuer {
	return &authv1alpha1.ClusterKeycloakIssuer{ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 1},
		Spec:   authv1alpha1.ClusterKeycloakIssuerSpec{KeycloakIssuerSpec: issuerSpec(auth), NamespaceSelector: sel},
		Status: readyStatus()}
}

func namespace(name string, labels map[string]string, terminating bool) *corev1.Namespace {
	n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if terminating {
		n.Finalizers = []string{"kubernetes"}
	}
	return n
}

var issuerScenarios = []scenario{
	{"namespaced issuer: issued with the issuer's secret, no API read of it per rotation", func(t *testing.T) {
		e := newEnv(t, useIssuer(authv1alpha1.KindKeycloakIssuer, "team"),
			namespacedIssuer("team", secretAuth(), true), userSecret("platform-client", map[string]string{"client-secret": testSecret}))
		e.reconcile()
		e.wantCond(authv1alpha1.ConditionReady, "True/TokenValid")
		before := e.uncachedReads
		for range 5 {
			e.next()
		}
		e.wantCalls("client_credentials", 6)
		// Per rotation: the uncached read of the consumer Secret before spending a token is
		// skipped (the cache shows this process's last write), and the client secret comes from
		// its watch.
		if n := e.uncachedReads - before; n != 0 {
			t.Fatalf("%d uncached reads in 5 rotations, want 0", n)
		}
	}},
	{"issuer not ready: the token says so and asks Keycloak nothing, until it is", func(t *testing.T) {
		e := newEnv(t, useIssuer(authv1alpha1.KindKeycloakIssuer, "team"),
			namespacedIssuer("team", secretAuth(), false), userSecret("platform-client", map[string]string{"client-secret": testSecret}))
		e.reconcile()
		e.wantCalls("client_credentials", 0)
		e.wantCond(authv1alpha1.ConditionReady, "False/IssuerNotReady")
		e.wantCond(authv1alpha1.ConditionReconciling, "True/IssuerNotReady")
		iss := &authv1alpha1.KeycloakIssuer{}
		if err := e.c.Get(e.ctx, types.NamespacedName{Namespace: testNS, Name: "team"}, iss); err != nil {
			t.Fatal(err)
		}
		iss.Status = readyStatus()
		if err := e.c.Status().Update(e.ctx, iss); err != nil {
			t.Fatal(err)
		}
		e.reconcile() // the issuer's watch brings it back at once
		e.wantCond(authv1alpha1.ConditionReady, "True/TokenValid")
	}},
	{"missing issuer is the user's to fix", func(t *testing.T) {
		e := newEnv(t, useIssuer(authv1alpha1.KindClusterKeycloakIssuer, "nope"))
		e.reconcile()
		e.wantCond(authv1alpha1.ConditionStalled, "True/IssuerNotFound")
	}},
	{"cluster issuer admits namespaces by its selector; its secret stays in the platform's namespace", func(t *testing.T) {
		sel := &metav1.LabelSelector{MatchLabels: map[string]string{"mlflow-tokens": "allowed"}}
		e := newEnv(t, useIssuer(authv1alpha1.KindClusterKeycloakIssuer, "platform"),
			clusterIssuer("platform", secretAuth(), sel), namespace(testNS, nil, false),
			&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: platformNS, Name: "platform-client"}, Data: map[string][]byte{"client-secret": []byte(testSecret)}})
		e.reconcile()
		e.wantCalls("client_credentials", 0)
		e.wantCond(authv1alpha1.ConditionStalled, "True/IssuerNotAllowed")
		ns := &corev1.Namespace{}
		if err := e.c.Get(e.ctx, types.NamespacedName{Name: testNS}, ns); err != nil {
			t.Fatal(err)
		}
		ns.Labels = map[string]string{"mlflow-tokens": "allowed"}
		if err := e.c.Update(e.ctx, ns); err != nil {
			t.Fatal(err)
		}
		e.next()
		e.wantCond(authv1alpha1.ConditionReady, "True/TokenValid")
		// The tenant's namespace holds no copy of the platform's secret.
		if kit := e.secret(testName + "-refresh-state"); kit == nil || len(kit.Data["client-secret"]) != 0 {
			t.Fatalf("state Secret %v: the platform's secret must not be copied into the tenant's namespace", kit)
		}
	}},
	{"plain http is refused unless the platform allows it", func(t *testing.T) {
		e := newEnv(t, func(o *authv1alpha1.MLflowAccessToken) { o.Spec.Keycloak.URL = "http://keycloak.example.com" })
		e.reconcile()
		e.wantCalls("client_credentials", 0)
		e.wantCond(authv1alpha1.ConditionStalled, "True/InsecureURL")
		if msg := e.obj().Status.Conditions; !strings.Contains(condMsg(msg, authv1alpha1.ConditionReady), "--allow-insecure-http") {
			t.Fatalf("the condition does not say how to allow it: %q", condMsg(msg, authv1alpha1.ConditionReady))
		}
		e.r.Guardrails.AllowInsecureHTTP = true
		e.next()
		e.wantCond(authv1alpha1.ConditionReady, "True/TokenValid")
	}},
	{"a cluster issuer may allow plain http; a namespaced one may not", func(t *testing.T) {
		ci := clusterIssuer("dev", secretAuth(), nil)
		ci.Spec.URL, ci.Spec.AllowInsecureHTTP = "http://keycloak.dev.svc", true
		e := newEnv(t, useIssuer(authv1alpha1.KindClusterKeycloakIssuer, "dev"), ci,
			&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: platformNS, Name: "platform-client"}, Data: map[string][]byte{"client-secret": []byte(testSecret)}})
		e.reconcile()
		e.wantCond(authv1alpha1.ConditionReady, "True/TokenValid")
	}},
	{"a host outside --allowed-keycloak-hosts: no request leaves", func(t *testing.T) {
		e := newEnv(t, nil)
		e.r.Guardrails.AllowedHosts = []string{"keycloak.internal", ".auth.example.org"}
		e.reconcile()
		e.wantCalls("client_credentials", 0)
		e.wantCond(authv1alpha1.ConditionStalled, "True/HostNotAllowed")
		e.r.Guardrails.AllowedHosts = []string{".example.com"}
		e.next()
		e.wantCond(authv1alpha1.ConditionReady, "True/TokenValid")
	}},
	{"service-account client authentication: no secret, one TokenRequest for many rotations", func(t *testing.T) {
		sa := authv1alpha1.IssuerClientAuth{ClientID: "team-a-training", ServiceAccount: &authv1alpha1.ServiceAccountAuth{Name: "mlflow-token"}}
		e := newEnv(t, useIssuer(authv1alpha1.KindClusterKeycloakIssuer, "platform"), clusterIssuer("platform", sa, nil),
			&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: "mlflow-token", UID: "sa-uid-1"}})
		e.kc.AddFederatedClient("team-a-training", "system:serviceaccount:"+testNS+":mlflow-token")
		e.kc.AccessLifetime = 30 * time.Second
		e.reconcile()
		for range 30 {
			e.next()
		}
		e.wantCalls("client_credentials", 31)
		if e.tokenRequests > 3 {
			t.Fatalf("%d TokenRequests for 31 rotations, want ≤ 0.1 per rotation", e.tokenRequests)
		}
		t.Logf("%d TokenRequests for 31 rotations of a 30 s token", e.tokenRequests)
		e.wantCond(authv1alpha1.ConditionReady, "True/TokenValid")
	}},
	{"service-account client authentication: concurrent first issuances make one TokenRequest", func(t *testing.T) {
		sa := authv1alpha1.IssuerClientAuth{ClientID: "team-a-training", ServiceAccount: &authv1alpha1.ServiceAccountAuth{Name: "mlflow-token"}}
		e := newEnv(t, useIssuer(authv1alpha1.KindClusterKeycloakIssuer, "platform"), clusterIssuer("platform", sa, nil),
			&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: "mlflow-token", UID: "sa-uid-1"}})
		e.tokenRequestLatency = 20 * time.Millisecond
		var wg sync.WaitGroup
		errs := make(chan string, 8)
		for range 8 {
			wg.Go(func() {
				if _, _, f := e.r.serviceAccountToken(e.ctx, types.NamespacedName{Namespace: testNS, Name: "mlflow-token"}, "https://keycloak.example.com/realms/mlflow"); f != nil {
					errs <- f.Message
				}
			})
		}
		wg.Wait()
		close(errs)
		for m := range errs {
			t.Fatal(m)
		}
		if e.tokenRequests != 1 {
			t.Fatalf("%d TokenRequests for 8 concurrent callers, want 1", e.tokenRequests)
		}
	}},
	{"service-account authentication: another namespace's identity gets a clear reason, no token", func(t *testing.T) {
		sa := authv1alpha1.IssuerClientAuth{ClientID: "team-b-training", ServiceAccount: &authv1alpha1.ServiceAccountAuth{Name: "mlflow-token"}}
		e := newEnv(t, func(o *authv1alpha1.MLflowAccessToken) {
			useIssuer(authv1alpha1.KindClusterKeycloakIssuer, "platform")(o)
			o.Spec.ClientID = "team-b-training"
		}, clusterIssuer("platform", sa, nil), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: "mlflow-token", UID: "sa-uid-1"}})
		e.kc.AddFederatedClient("team-b-training", "system:serviceaccount:team-b:mlflow-token")
		e.reconcile()
		e.wantCond(authv1alpha1.ConditionReady, "False/InvalidClientCredentials")
		if e.token() != "" {
			t.Fatal("a token was written")
		}
	}},
	{"service account deleted: a clear condition at once, recovery when it is back", func(t *testing.T) {
		sa := authv1alpha1.IssuerClientAuth{ClientID: "team-a-training", ServiceAccount: &authv1alpha1.ServiceAccountAuth{Name: "mlflow-token"}}
		acct := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: "mlflow-token", UID: "sa-uid-1"}}
		e := newEnv(t, useIssuer(authv1alpha1.KindClusterKeycloakIssuer, "platform"), clusterIssuer("platform", sa, nil), acct)
		e.kc.AddFederatedClient("team-a-training", "system:serviceaccount:"+testNS+":mlflow-token")
		e.reconcile()
		if err := e.c.Delete(e.ctx, acct.DeepCopy()); err != nil {
			t.Fatal(err)
		}
		e.next()
		e.wantCond(authv1alpha1.ConditionRenewalFailing, "True/ServiceAccountNotFound")
		e.wantCond(authv1alpha1.ConditionStalled, "True/ServiceAccountNotFound")
		if err := e.c.Create(e.ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: "mlflow-token", UID: "sa-uid-2"}}); err != nil {
			t.Fatal(err)
		}
		requests := e.tokenRequests
		e.next()
		e.wantCond(authv1alpha1.ConditionReady, "True/TokenValid")
		if e.tokenRequests != requests+1 {
			t.Fatal("the re-created ServiceAccount's token was not requested anew")
		}
	}},
	{"a namespace being deleted gets no new token", func(t *testing.T) {
		e := newEnv(t, nil, namespace(testNS, nil, false))
		e.reconcile()
		ns := &corev1.Namespace{}
		if err := e.c.Get(e.ctx, types.NamespacedName{Name: testNS}, ns); err != nil {
			t.Fatal(err)
		}
		ns.Finalizers = []string{"kubernetes"}
		if err := e.c.Update(e.ctx, ns); err != nil {
			t.Fatal(err)
		}
		if err := e.c.Delete(e.ctx, ns); err != nil {
			t.Fatal(err)
		}
		e.clk.Step(10 * time.Minute)
		e.reconcile()
		e.wantCalls("client_credentials", 1)
	}},
	{"a resource gone without revoking (finalizer removed by hand): its Secrets revoke and go", func(t *testing.T) {
		e, _ := refreshEnv(t)
		e.reconcile()
		access, refresh := e.token(), e.chain().RefreshToken
		o := e.obj()
		o.Finalizers = nil
		if err := e.c.Update(e.ctx, o); err != nil {
			t.Fatal(err)
		}
		if err := e.c.Delete(e.ctx, o); err != nil {
			t.Fatal(err)
		}
		// Garbage collection deletes the owned Secrets; the operator's finalizer holds them.
		for _, n := range []string{testName, testName + "-refresh-state"} {
			if err := e.c.Delete(e.ctx, e.secret(n)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := e.r.Reconcile(e.ctx, ctrl.Request{NamespacedName: key}); err != nil {
			t.Fatal(err)
		}
		if !e.kc.Revoked(access) || e.kc.RefreshActive(refresh) {
			t.Fatal("not revoked")
		}
		if e.secret(testName) != nil || e.secret(testName+"-refresh-state") != nil {
			t.Fatal("the orphaned Secrets were not let go")
		}
	}},
}

func condMsg(conds []metav1.Condition, typ string) string {
	for _, c := range conds {
		if c.Type == typ {
			return c.Message
		}
	}
	return ""
}
