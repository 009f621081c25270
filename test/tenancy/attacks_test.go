package tenancy

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/jwtclaims"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

// row is one attack's figures, for the table printed at the end.
type row struct {
	attack                        string
	keycloak, attacker            int
	foreignRedeemed, foreignRevok int
	outcome                       string
}

// TestTenantAttacks runs every attack of a tenant with edit rights in team-a against the operator,
// next to a victim in team-b whose tokens leaked to the tenant, and prints a table of what reached
// Keycloak and the attacker's host per attack.
func TestTenantAttacks(t *testing.T) {
	ctx := context.Background()
	watch := watchExpiry(teamA)
	var rows []row

	// The victim: bob's refresh chain in team-b, through the platform's issuer. Bob's bootstrap
	// token leaks to the tenant (a log line, a backup, a misplaced copy). The realm does not
	// rotate refresh tokens strictly, so it stays redeemable, and the victim never redeems it
	// again: any redemption of it from now on is someone else's.
	_, leakedRefresh := keycloakToken(t, "bob", "bob-password")
	mustCreate(t, admin, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: teamB, Name: "bob-bootstrap"}, StringData: map[string]string{"refresh-token": leakedRefresh}})
	mustCreate(t, admin, viaIssuer(teamB, "victim", authv1alpha1.GrantSpec{Type: authv1alpha1.GrantRefreshToken,
		RefreshTokenSecretRef: &authv1alpha1.RefreshTokenRef{Name: "bob-bootstrap"}}))
	victim := waitReady(t, teamB, "victim")
	_, victimRedemptions := proxy.carrying(leakedRefresh)

	// The tenant's own resources.
	mustCreate(t, tenant, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: teamA, Name: "alice-login"},
		StringData: map[string]string{"username": "alice", "password": "alice-password"}})
	mustCreate(t, tenant, viaIssuer(teamA, "a-cc", authv1alpha1.GrantSpec{Type: authv1alpha1.GrantClientCredentials}))
	mustCreate(t, tenant, viaIssuer(teamA, "a-rt", authv1alpha1.GrantSpec{Type: authv1alpha1.GrantPassword,
		PasswordSecretRef: &authv1alpha1.UserCredentialsRef{Name: "alice-login"}}))
	waitReady(t, teamA, "a-cc")
	waitReady(t, teamA, "a-rt")

	attack := func(name string, run func(t *testing.T) string) {
		kc0, at0 := proxy.count(), attacker.count()
		_, red0 := proxy.carrying(leakedRefresh)
		t.Run(name, func(t *testing.T) {
			outcome := run(t)
			_, red := proxy.carrying(leakedRefresh)
			rows = append(rows, row{attack: name, keycloak: proxy.count() - kc0, attacker: attacker.count() - at0,
				foreignRedeemed: red - red0, outcome: outcome})
		})
	}

	attack("edit the Secret's expiry a year ahead", func(t *testing.T) string {
		before := string(getSecret(t, teamA, "a-cc").Data[tokensecret.KeyToken])
		edit(t, teamA, "a-cc", func(s *corev1.Secret) {
			s.Data[tokensecret.KeyExpiresAt] = []byte(time.Now().AddDate(1, 0, 0).UTC().Format(time.RFC3339))
		})
		waitEvent(t, teamA, "a-cc", authv1alpha1.ReasonSecretModified, "new token is issued")
		o := waitNewToken(t, teamA, "a-cc", before)
		if o.Status.ExpiresAt.After(time.Now().Add(time.Minute)) {
			t.Errorf("status says the token lives until %s", o.Status.ExpiresAt)
		}
		return "re-issued; SecretModified event"
	})

	attack("restore an older, expired copy of the Secret", func(t *testing.T) string {
		old := getSecret(t, teamA, "a-cc")
		c, _ := jwtclaims.Parse(string(old.Data[tokensecret.KeyToken]))
		time.Sleep(time.Until(c.ExpiresAt.Add(time.Second))) // the copy is expired now
		before := string(getSecret(t, teamA, "a-cc").Data[tokensecret.KeyToken])
		edit(t, teamA, "a-cc", func(s *corev1.Secret) { s.Data, s.Annotations = old.Data, old.Annotations })
		waitNewToken(t, teamA, "a-cc", before)
		if string(old.Data[tokensecret.KeyToken]) != before {
			waitEvent(t, teamA, "a-cc", authv1alpha1.ReasonSecretRestored, "older copy was restored")
			return "re-issued; SecretRestored event"
		}
		return "re-issued (expired)"
	})

	attack("put another namespace's refresh token into the state Secret", func(t *testing.T) string {
		rot := getToken(t, teamA, "a-rt").Status.Rotations
		edit(t, teamA, "a-rt-refresh-state", func(s *corev1.Secret) { s.Data[tokensecret.KeyRefreshToken] = []byte(leakedRefresh) })
		o := waitRotations(t, teamA, "a-rt", rot, 2)
		if o.Status.SessionID == victim.Status.SessionID {
			t.Error("the tenant's resource took over the victim's session")
		}
		if string(getSecret(t, teamA, "a-rt-refresh-state").Data[tokensecret.KeyRefreshToken]) == leakedRefresh {
			t.Error("the state Secret still holds the foreign token after two rotations")
		}
		// Either the next rotation found the edit (SecretModified, and a new login), or the edit
		// landed while a redemption was in flight and the rotation's save wrote over it.
		if eventExists(t, teamA, "a-rt", authv1alpha1.ReasonSecretModified) {
			return "ignored; logged in anew; SecretModified event"
		}
		return "overwritten by the rotation in flight"
	})

	attack("use another namespace's refresh token as the bootstrap token", func(t *testing.T) string {
		mustCreate(t, tenant, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: teamA, Name: "a-boot-token"}, StringData: map[string]string{"refresh-token": leakedRefresh}})
		mustCreate(t, tenant, viaIssuer(teamA, "a-boot", authv1alpha1.GrantSpec{Type: authv1alpha1.GrantRefreshToken,
			RefreshTokenSecretRef: &authv1alpha1.RefreshTokenRef{Name: "a-boot-token"}}))
		waitCond(t, teamA, "a-boot", authv1alpha1.ConditionStalled, "True/"+authv1alpha1.ReasonForeignRefreshToken)
		return "refused: Stalled/ForeignRefreshToken"
	})

	attack("put another namespace's access token into the Secret, then delete the resource", func(t *testing.T) string {
		mustCreate(t, tenant, viaIssuer(teamA, "a-del", authv1alpha1.GrantSpec{Type: authv1alpha1.GrantClientCredentials}))
		waitReady(t, teamA, "a-del")
		leakedAccess := string(getSecret(t, teamB, "victim").Data[tokensecret.KeyToken])
		edit(t, teamA, "a-del", func(s *corev1.Secret) {
			s.Data[tokensecret.KeyToken], s.Data[tokensecret.KeyTrackingToken] = []byte(leakedAccess), []byte(leakedAccess)
			s.Annotations[tokensecret.AnnotationTokenHash] = tokensecret.Hash(leakedAccess)
		})
		if err := tenant.Delete(ctx, viaIssuer(teamA, "a-del", authv1alpha1.GrantSpec{})); err != nil {
			t.Fatal(err)
		}
		waitGone(t, teamA, "a-del")
		if n, _ := proxy.carrying(leakedAccess); n != 0 {
			t.Errorf("the victim's access token was sent to Keycloak %d times", n)
		}
		if c, _ := jwtclaims.Parse(leakedAccess); time.Now().Before(c.ExpiresAt) && !active(t, leakedAccess, "access_token") {
			t.Error("the victim's access token was revoked")
		}
		n, _ := proxy.carrying(leakedAccess)
		return fmt.Sprintf("not revoked (sent %d times)", n)
	})

	attack("redirect the revocation kit, point the resource at a missing issuer, delete it", func(t *testing.T) string {
		mustCreate(t, tenant, viaIssuer(teamA, "a-kit", authv1alpha1.GrantSpec{Type: authv1alpha1.GrantClientCredentials}))
		waitReady(t, teamA, "a-kit")
		o := getToken(t, teamA, "a-kit")
		o.Spec.IssuerRef.Name = "missing"
		if err := tenant.Update(ctx, o); err != nil {
			t.Fatal(err)
		}
		waitCond(t, teamA, "a-kit", authv1alpha1.ConditionRenewalFailing, "True/"+authv1alpha1.ReasonIssuerNotFound)
		edit(t, teamA, "a-kit-refresh-state", func(s *corev1.Secret) {
			s.Annotations["auth.mlflow-token-operator.io/keycloak-url"] = attacker.URL
			s.Data["client-secret"] = []byte("stolen-or-made-up")
		})
		if err := tenant.Delete(ctx, o); err != nil {
			t.Fatal(err)
		}
		waitGone(t, teamA, "a-kit")
		waitEvent(t, teamA, "a-kit", authv1alpha1.ReasonRevocationAbandoned, "stays valid until it expires")
		noEvent(t, teamA, "a-kit", "Revoked")
		return "kit ignored; RevocationAbandoned, never 'Revoked'"
	})

	attack("forge 200 state Secrets of 100 KiB for resources that never existed", func(t *testing.T) string {
		r0 := reconciles(t)
		names := forgeStateSecrets(t, 200, 100<<10)
		time.Sleep(5 * time.Second)
		delta := reconciles(t) - r0
		for _, n := range names {
			if s := getSecret(t, teamA, n); len(s.Finalizers) != 1 {
				t.Errorf("Secret %s: finalizers %v: the operator acted on a Secret it never wrote", n, s.Finalizers)
			}
		}
		// Routine rotations of the tenant's and the victim's resources go on meanwhile (a few per
		// second at most); a storm would be hundreds.
		if delta > 40 {
			t.Errorf("%d reconciles in 5 s after the forged Secrets appeared", delta)
		}
		cleanUpForged(t, names)
		return fmt.Sprintf("ignored: %d reconciles in 5 s (routine rotations), finalizers untouched", delta)
	})

	attack("point the MLflow check at the attacker's host", func(t *testing.T) string {
		o := viaIssuer(teamA, "a-ml", authv1alpha1.GrantSpec{Type: authv1alpha1.GrantClientCredentials})
		o.Spec.MLflow = &authv1alpha1.MLflowSpec{TrackingURI: attacker.URL}
		mustCreate(t, tenant, o)
		waitReady(t, teamA, "a-ml")
		waitCond(t, teamA, "a-ml", authv1alpha1.ConditionMLflowAccepted, "Unknown/"+authv1alpha1.ReasonMLflowCheckNotAllowed)
		return "not asked: MLflowAccepted=Unknown/CheckNotAllowed"
	})

	attack("write status, read other namespaces' Secrets, read the operator's key", func(t *testing.T) string {
		o := getToken(t, teamA, "a-cc")
		patch := client.MergeFrom(o.DeepCopy())
		o.Status.ExpiresAt = &metav1.Time{Time: time.Now().AddDate(1, 0, 0)}
		forbidden(t, "patching status", tenant.Status().Patch(ctx, o, patch))
		forbidden(t, "reading team-b's Secret", tenant.Get(ctx, types.NamespacedName{Namespace: teamB, Name: "victim"}, &corev1.Secret{}))
		forbidden(t, "reading the operator's key", tenant.Get(ctx, types.NamespacedName{Namespace: platformNS, Name: operatorOptions().StateKeySecret}, &corev1.Secret{}))
		forbidden(t, "creating a ClusterKeycloakIssuer", tenant.Create(ctx, &authv1alpha1.ClusterKeycloakIssuer{ObjectMeta: metav1.ObjectMeta{Name: "mine"},
			Spec: authv1alpha1.ClusterKeycloakIssuerSpec{KeycloakIssuerSpec: authv1alpha1.KeycloakIssuerSpec{URL: attacker.URL, Realm: "r",
				ClientAuth: authv1alpha1.IssuerClientAuth{ClientID: "c", ClientSecretRef: &authv1alpha1.SecretKeyRef{Name: "x"}}}}}))
		return "refused by RBAC"
	})

	// The victim lived through all of it: still rotating, its chain unbroken.
	vic := waitRotations(t, teamB, "victim", getToken(t, teamB, "victim").Status.Rotations, 1)
	if c := condOf(vic, authv1alpha1.ConditionRenewalFailing); strings.HasPrefix(c, "True") {
		t.Errorf("the victim's renewal is failing: %s", c)
	}
	all, grants := proxy.carrying(leakedRefresh)
	if grants != victimRedemptions {
		t.Errorf("the leaked refresh token was redeemed %d times after the victim's own first redemption", grants-victimRedemptions)
	}
	watch.close()
	expired, raw, polls := watch.total()
	if expired > 0 {
		t.Errorf("%s with an expired token under Ready=True beyond the operator's reaction time (%d polls saw one at all, of %d)", expired, raw, polls)
	}
	if n := attacker.count(); n != 0 {
		t.Errorf("%d requests reached the attacker's host", n)
	}

	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "attack\trequests to Keycloak\tto the attacker's host\tforeign refresh token redeemed\toutcome")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\n", r.attack, r.keycloak, r.attacker, r.foreignRedeemed, r.outcome)
	}
	_ = tw.Flush()
	fmt.Printf("Whole run: %d requests to the attacker's host; the leaked refresh token reached Keycloak %d times, all %d before the leak (the victim's own first redemption); %s with an expired token under Ready=True beyond one poll (%d of %d polls saw one within the reaction time)\n",
		attacker.count(), all, victimRedemptions, expired, raw, polls)
}

// edit changes one of team-a's Secrets as the tenant.
func edit(t *testing.T, ns, name string, change func(*corev1.Secret)) {
	t.Helper()
	s := &corev1.Secret{}
	if err := tenant.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, s); err != nil {
		t.Fatal(err)
	}
	change(s)
	if err := tenant.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
}

// waitNewToken waits until the resource's Secret holds a token other than before, and the
// resource is Ready again.
func waitNewToken(t *testing.T, ns, name, before string) *authv1alpha1.MLflowAccessToken {
	t.Helper()
	var o *authv1alpha1.MLflowAccessToken
	testenv.Eventually(t, 60*time.Second, ns+"/"+name+" with a new token", func() (bool, string) {
		o = getToken(t, ns, name)
		s := getSecret(t, ns, o.SecretNameOrDefault())
		return string(s.Data[tokensecret.KeyToken]) != before && tokensecret.HasSeal(s) && strings.HasPrefix(condOf(o, authv1alpha1.ConditionReady), "True/"), condOf(o, authv1alpha1.ConditionReady)
	})
	return o
}

func forbidden(t *testing.T, what string, err error) {
	t.Helper()
	if !apierrors.IsForbidden(err) {
		t.Errorf("%s as the tenant: %v, want Forbidden", what, err)
	}
}

// reconciles is the operator's count of MLflowAccessToken reconciles so far (it runs in this
// process: its metrics registry is this process's).
func reconciles(t *testing.T) int {
	t.Helper()
	fams, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0.0
	for _, f := range fams {
		if f.GetName() != "controller_runtime_reconcile_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			if label(m, "controller") == "mlflowaccesstoken" {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return int(n)
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// forgeStateSecrets creates n Secrets as the tenant that look like the operator's state Secrets
// of resources that never existed: its labels and finalizer, a controller reference, a kit
// pointing at the attacker's host with a client secret, a refresh token, and size bytes of data.
func forgeStateSecrets(t *testing.T, n, size int) []string {
	t.Helper()
	pad := []byte(strings.Repeat("x", size))
	var names []string
	for i := range n {
		ghost := fmt.Sprintf("ghost-%d", i)
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: teamA, Name: ghost + "-refresh-state",
			Labels:      map[string]string{tokensecret.LabelManagedBy: tokensecret.ManagedByValue, tokensecret.LabelRole: tokensecret.RoleRefreshState},
			Annotations: map[string]string{"auth.mlflow-token-operator.io/keycloak-url": attacker.URL, "auth.mlflow-token-operator.io/keycloak-realm": realm, "auth.mlflow-token-operator.io/keycloak-client-id": clientID},
			Finalizers:  []string{authv1alpha1.Finalizer},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: authv1alpha1.GroupVersion.String(), Kind: "MLflowAccessToken", Name: ghost,
				UID: types.UID(rand.String(8) + "-0000-0000-0000-000000000000"), Controller: new(true)}}},
			Data: map[string][]byte{"client-secret": []byte(clientSecret), tokensecret.KeyRefreshToken: []byte("a.b.c"), "padding": pad}}
		mustCreate(t, tenant, s)
		names = append(names, s.Name)
	}
	return names
}

func cleanUpForged(t *testing.T, names []string) {
	t.Helper()
	for _, n := range names {
		edit(t, teamA, n, func(s *corev1.Secret) { s.Finalizers = nil })
		_ = tenant.Delete(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: teamA, Name: n}})
	}
}
