// What both modes create and remove as a user would, and how they watch the token arrive in the
// Secret: a ClusterKeycloakIssuer for the local Keycloak, an MLflowAccessToken in namespace
// team-a, its Secret. The node mode adds the chart and a reader pod; the envtest mode runs the
// operator on the host. Both print the same lines for what they share.
package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/localdemo/tokenline"
)

const (
	operatorNS = "mlflow-token-operator-system"
	demoNS     = "team-a"
	issuerName = "local-keycloak"
	tokenName  = "training-token"
	secretName = "mlflow-token"
)

// objects are the demo's API objects and what it knows about them.
type objects struct {
	c       client.Client
	kcURL   string // Keycloak as the operator (and pods) reach it
	secrets *secretWatch
	// tokenSet: the MLflowAccessToken was created, so the teardown deletes it.
	tokenSet bool
}

func (d *objects) createIssuerAndToken(ctx context.Context) error {
	// Keycloak serves plain HTTP here: the platform's issuer allows it explicitly (the operator
	// itself runs with the chart's defaults, which refuse http:// everywhere else).
	issuer := &authv1alpha1.ClusterKeycloakIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: issuerName},
		Spec: authv1alpha1.ClusterKeycloakIssuerSpec{
			KeycloakIssuerSpec: authv1alpha1.KeycloakIssuerSpec{URL: d.kcURL, Realm: realm, ClientAuth: authv1alpha1.IssuerClientAuth{
				ClientID: clientID, ClientSecretRef: &authv1alpha1.SecretKeyRef{Name: clientID + "-client", Key: "client-secret"},
			}},
			AllowInsecureHTTP: true,
		},
	}
	if err := d.c.Create(ctx, issuer); err != nil {
		return err
	}
	t := time.Now()
	if err := waitFor(ctx, time.Minute, func() (bool, string) {
		if err := d.c.Get(ctx, client.ObjectKeyFromObject(issuer), issuer); err != nil {
			return false, err.Error()
		}
		return conditionTrue(issuer.Status.Conditions, authv1alpha1.ConditionReady)
	}); err != nil {
		return fmt.Errorf("ClusterKeycloakIssuer %s: %w", issuerName, err)
	}
	say("ClusterKeycloakIssuer %s Ready in %s: %s realm %s, client %s, allowInsecureHTTP: true (plain HTTP, only because Keycloak runs on this machine)",
		issuerName, since(t), d.kcURL, realm, clientID)

	tok := &authv1alpha1.MLflowAccessToken{
		ObjectMeta: metav1.ObjectMeta{Name: tokenName, Namespace: demoNS},
		Spec: authv1alpha1.MLflowAccessTokenSpec{
			IssuerRef:  &authv1alpha1.IssuerRef{Kind: authv1alpha1.KindClusterKeycloakIssuer, Name: issuerName},
			Grant:      authv1alpha1.GrantSpec{Type: authv1alpha1.GrantClientCredentials},
			SecretName: secretName,
		},
	}
	if err := d.c.Create(ctx, tok); err != nil {
		return err
	}
	d.tokenSet = true
	t = time.Now()
	if err := waitFor(ctx, time.Minute, func() (bool, string) {
		if err := d.c.Get(ctx, client.ObjectKeyFromObject(tok), tok); err != nil {
			return false, err.Error()
		}
		if token, _ := d.secrets.latest(); token == nil {
			return false, "no token in Secret " + secretName + " yet"
		}
		return conditionTrue(tok.Status.Conditions, authv1alpha1.ConditionReady)
	}); err != nil {
		return fmt.Errorf("MLflowAccessToken %s/%s: %w", demoNS, tokenName, err)
	}
	token, exp := d.secrets.latest()
	say("MLflowAccessToken %s/%s Ready in %s: token %s in Secret %s, expires %s, renewal due %s",
		demoNS, tokenName, since(t), tokenline.Fingerprint(token), secretName, exp.Local().Format("15:04:05"), tok.Status.RenewalTime.Local().Format("15:04:05"))
	return nil
}

// deleteToken deletes the MLflowAccessToken as a user would, and checks with Keycloak that the
// operator revoked the last token it wrote.
func (d *objects) deleteToken(ctx context.Context) error {
	say("Deleting MLflowAccessToken %s/%s: the operator revokes its token, then deletes the Secret", demoNS, tokenName)
	t := time.Now()
	tok := &authv1alpha1.MLflowAccessToken{ObjectMeta: metav1.ObjectMeta{Name: tokenName, Namespace: demoNS}}
	if err := d.c.Delete(ctx, tok); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if err := waitFor(ctx, time.Minute, func() (bool, string) {
		err := d.c.Get(ctx, client.ObjectKeyFromObject(tok), tok)
		return apierrors.IsNotFound(err), fmt.Sprintf("still there (finalizers %v)", tok.Finalizers)
	}); err != nil {
		return fmt.Errorf("deleting MLflowAccessToken %s/%s: %w", demoNS, tokenName, err)
	}
	say("MLflowAccessToken deleted in %s", since(t))
	printEvents(d.c, demoNS, tokenName)
	if err := d.c.Get(ctx, client.ObjectKey{Namespace: demoNS, Name: secretName}, &corev1.Secret{}); apierrors.IsNotFound(err) {
		say("Secret %s/%s deleted", demoNS, secretName)
	}
	// The watch saw every write in order: its latest token is the one the operator revoked.
	token, exp := d.secrets.latest()
	if left := time.Until(exp); left <= 0 {
		say("Token %s expired before it could be checked with Keycloak", tokenline.Fingerprint(token))
		return nil
	} else if active, err := keycloak.IntrospectContext(ctx, d.kcURL, realm, clientID, clientSecret, string(token), ""); err != nil {
		return fmt.Errorf("asking Keycloak whether token %s is revoked: %w", tokenline.Fingerprint(token), err)
	} else if active {
		return fmt.Errorf("token %s is still active at Keycloak after the MLflowAccessToken was deleted", tokenline.Fingerprint(token))
	} else {
		say("Token %s revoked: Keycloak's token introspection answers active=false, %.1f s before it would have expired", tokenline.Fingerprint(token), left.Seconds())
	}
	return nil
}

// conditionTrue: whether the condition is True, else how it reads.
func conditionTrue(conds []metav1.Condition, typ string) (bool, string) {
	c := meta.FindStatusCondition(conds, typ)
	if c == nil {
		return false, typ + " not reported yet"
	}
	return c.Status == metav1.ConditionTrue, fmt.Sprintf("%s=%s %s: %s", typ, c.Status, c.Reason, c.Message)
}

// waitFor polls f until it says done, the timeout passes (the error quotes f's last word) or ctx ends.
func waitFor(ctx context.Context, timeout time.Duration, f func() (bool, string)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		done, why := f()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %s", ctx.Err(), why)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// secretWatch records when each token appeared in the Secret. It keeps the newest token in memory
// for the revocation check at the end; it never prints it.
type secretWatch struct {
	mu      sync.Mutex
	written map[string]time.Time // fingerprint → when the watch saw it
	last    []byte
	lastExp time.Time
}

func watchSecret(ctx context.Context, cs kubernetes.Interface, ns, name string) *secretWatch {
	w := &secretWatch{written: map[string]time.Time{}}
	go func() {
		sel := fields.OneTermEqualSelector("metadata.name", name).String()
		for ctx.Err() == nil {
			list, err := cs.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{FieldSelector: sel})
			if err != nil {
				time.Sleep(time.Second)
				continue
			}
			for i := range list.Items {
				w.saw(&list.Items[i])
			}
			wi, err := cs.CoreV1().Secrets(ns).Watch(ctx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: list.ResourceVersion})
			if err != nil {
				time.Sleep(time.Second)
				continue
			}
			for ev := range wi.ResultChan() {
				if s, ok := ev.Object.(*corev1.Secret); ok && (ev.Type == watch.Added || ev.Type == watch.Modified) {
					w.saw(s)
				}
			}
			wi.Stop()
		}
	}()
	return w
}

func (w *secretWatch) saw(s *corev1.Secret) {
	now := time.Now()
	token := s.Data["token"]
	if len(token) == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	fp := tokenline.Fingerprint(token)
	if _, ok := w.written[fp]; !ok {
		w.written[fp] = now
		w.last = token
		w.lastExp, _ = tokenline.Expiry(token)
	}
}

// latest is the newest token written to the Secret and its expiry.
func (w *secretWatch) latest() ([]byte, time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last, w.lastExp
}

// writtenAt is when the watch saw the token with this fingerprint in the Secret. The pod reads a
// token only after the kubelet got it from the API server, so the watch has nearly always seen it
// first; wait a moment for a slow watch all the same.
func (w *secretWatch) writtenAt(fp string) (time.Time, bool) {
	for range 20 {
		w.mu.Lock()
		t, ok := w.written[fp]
		w.mu.Unlock()
		if ok {
			return t, true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Time{}, false
}
