package fault

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/keycloak"
)

var users = []string{"olivia", "paul", "rita", "sam", "carl"}

// newNamespace creates a namespace holding the client secret Secret "kc-client".
func newNamespace(t *testing.T, prefix string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "kc-client", Namespace: ns.Name},
		StringData: map[string]string{"client-secret": clientSecret}})
	return ns.Name
}

func create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := k8s.Create(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
}

// ccToken is a ClientCredentials resource in realm mlflow through the proxy.
func ccToken(ns, name string) *authv1alpha1.MLflowAccessToken {
	return &authv1alpha1.MLflowAccessToken{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: authv1alpha1.MLflowAccessTokenSpec{
			Keycloak: &authv1alpha1.KeycloakSpec{
				URL: proxy.URL(), Realm: realm, ClientID: clientID,
				ClientSecretRef: &authv1alpha1.SecretKeyRef{Name: "kc-client", Key: "client-secret"},
			},
			Grant: authv1alpha1.GrantSpec{Type: authv1alpha1.GrantClientCredentials},
		},
	}
}

// rtToken creates a RefreshToken resource in realm strict, bootstrapped with a password grant
// (through the proxy, so that the token's issuer is the URL the operator uses) for user i%5.
func rtToken(t *testing.T, ns, name string, i int) *authv1alpha1.MLflowAccessToken {
	t.Helper()
	user := users[i%len(users)]
	boot := passwordGrant(t, user)
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name + "-boot", Namespace: ns},
		StringData: map[string]string{"refresh-token": boot}})
	obj := ccToken(ns, name)
	obj.Spec.Keycloak.Realm = strictRealm
	obj.Spec.Grant = authv1alpha1.GrantSpec{Type: authv1alpha1.GrantRefreshToken,
		RefreshTokenSecretRef: &authv1alpha1.RefreshTokenRef{Name: name + "-boot"}}
	return obj
}

// passwordGrant logs a user of realm strict in, as a person bootstrapping a chain would.
func passwordGrant(t *testing.T, user string) string {
	t.Helper()
	form := url.Values{"grant_type": {"password"}, "client_id": {clientID}, "client_secret": {clientSecret},
		"username": {user}, "password": {user + "-password"}}
	resp, err := http.PostForm(proxy.URL()+"/realms/"+strictRealm+"/protocol/openid-connect/token", form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tr struct {
		RefreshToken string `json:"refresh_token"`
	}
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&tr) != nil || tr.RefreshToken == "" {
		t.Fatalf("password grant for %s: %s", user, resp.Status)
	}
	return tr.RefreshToken
}

// introspectDirect asks Keycloak whether a refresh token is active. It goes through the proxy
// (in pass-through): Keycloak checks that a token's issuer matches the URL it is asked through.
func introspectDirect(t *testing.T, realmName, token string) bool {
	t.Helper()
	active, err := keycloak.Introspect(proxy.URL(), realmName, clientID, clientSecret, token, "refresh_token")
	if err != nil {
		t.Fatal(err)
	}
	return active
}

// listTokens lists the resources of the given namespaces.
func listTokens(t *testing.T, namespaces []string) []authv1alpha1.MLflowAccessToken {
	t.Helper()
	var out []authv1alpha1.MLflowAccessToken
	for _, ns := range namespaces {
		var l authv1alpha1.MLflowAccessTokenList
		if err := listRetry(&l, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		out = append(out, l.Items...)
	}
	return out
}

// listRetry lists, retrying for a while (the API server may be restarting).
func listRetry(l client.ObjectList, opts ...client.ListOption) error {
	var err error
	for i := 0; i < 120; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = k8s.List(ctx, l, opts...)
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(500 * time.Millisecond)
	}
	return err
}

func cond(obj *authv1alpha1.MLflowAccessToken, typ string) *metav1.Condition {
	return meta.FindStatusCondition(obj.Status.Conditions, typ)
}

func isReady(obj *authv1alpha1.MLflowAccessToken) bool {
	c := cond(obj, authv1alpha1.ConditionReady)
	return c != nil && c.Status == metav1.ConditionTrue && c.Reason == authv1alpha1.ReasonTokenValid && c.ObservedGeneration == obj.Generation
}

// readiness summarises the resources: how many are Ready, and the reasons of those that are not.
func readiness(items []authv1alpha1.MLflowAccessToken) (int, string) {
	n := 0
	reasons := map[string]int{}
	sample := map[string]string{}
	for i := range items {
		if isReady(&items[i]) {
			n++
			continue
		}
		r, msg := "no condition", ""
		if c := cond(&items[i], authv1alpha1.ConditionReady); c != nil {
			r = string(c.Status) + "/" + c.Reason
			if f := cond(&items[i], authv1alpha1.ConditionRenewalFailing); f != nil && f.Status == metav1.ConditionTrue {
				r += " (" + f.Reason + ")"
				msg = f.Message
			}
		}
		reasons[r]++
		if sample[r] == "" {
			sample[r] = items[i].Namespace + "/" + items[i].Name + ": " + truncate(msg, 120)
		}
	}
	var parts []string
	for r, c := range reasons {
		parts = append(parts, fmt.Sprintf("%d× %s [e.g. %s]", c, r, sample[r]))
	}
	sort.Strings(parts)
	return n, strings.Join(parts, "; ")
}

// waitAllReady waits until every resource of the namespaces is Ready (TokenValid) and returns
// how long that took.
func waitAllReady(t *testing.T, namespaces []string, want int, timeout time.Duration) time.Duration {
	t.Helper()
	return waitAllReadyFixing(t, namespaces, want, timeout, nil)
}

// waitAllReadyFixing is waitAllReady with fix called on every poll (e.g. to re-bootstrap a
// refresh chain the way a person would).
func waitAllReadyFixing(t *testing.T, namespaces []string, want int, timeout time.Duration, fix func([]authv1alpha1.MLflowAccessToken)) time.Duration {
	t.Helper()
	start := time.Now()
	var desc string
	for {
		items := listTokens(t, namespaces)
		if fix != nil {
			fix(items)
		}
		n, d := readiness(items)
		if n == want && len(items) == want {
			return time.Since(start)
		}
		desc = fmt.Sprintf("%d/%d Ready; %s", n, want, d)
		if time.Since(start) > timeout {
			t.Fatalf("not all resources Ready after %s: %s", timeout, desc)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// secretWatch polls the consumer Secrets of the namespaces and records every violation of the
// promise "a Secret that holds a valid token is never blanked or deleted", and every token
// issued before its predecessor was due.
type secretWatch struct {
	namespaces []string
	stop       chan struct{}
	done       chan struct{}

	mu      sync.Mutex
	last    map[string]secretSeen // namespace/name → last seen
	Blanked int
	Deleted int
	Polls   int
	Tokens  int // distinct tokens seen
	NotDue  int // tokens issued before the previous one's renew-at (1 s slack)
	// Regressions: a Secret went back to a token it had held before (a lost update).
	Regressions int
	hashes      map[string]bool // key + "/" + token hash
	NotDueLog   []string
}

type secretSeen struct {
	hash    string
	renewAt time.Time
	expires time.Time
}

// watchSecrets starts polling every interval. expected lists the consumer Secrets
// (namespace/name) that must exist throughout; more may be added with expect.
func watchSecrets(t *testing.T, namespaces []string, interval time.Duration) *secretWatch {
	w := &secretWatch{namespaces: namespaces, stop: make(chan struct{}), done: make(chan struct{}), last: map[string]secretSeen{}}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			w.poll()
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(w.Stop)
	return w
}

func (w *secretWatch) Stop() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

func (w *secretWatch) poll() {
	seen := map[string]bool{}
	for _, ns := range w.namespaces {
		var l corev1.SecretList
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := k8s.List(ctx, &l, client.InNamespace(ns), client.MatchingLabels{tokensecret.LabelManagedBy: tokensecret.ManagedByValue})
		cancel()
		if err != nil {
			return // the API server may be down: no conclusion from this poll
		}
		for _, s := range l.Items {
			if s.Labels[tokensecret.LabelRole] == tokensecret.RoleRefreshState {
				continue
			}
			key := ns + "/" + s.Name
			seen[key] = true
			w.observe(key, &s)
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.Polls++
	for key, prev := range w.last {
		if !seen[key] && prev.hash != "" {
			ns := strings.SplitN(key, "/", 2)[0]
			if contains(w.namespaces, ns) {
				w.Deleted++
				w.last[key] = secretSeen{}
			}
		}
	}
}

func (w *secretWatch) observe(key string, s *corev1.Secret) {
	w.mu.Lock()
	defer w.mu.Unlock()
	tok := string(s.Data[tokensecret.KeyToken])
	prev, had := w.last[key]
	if tok == "" {
		if had && prev.hash != "" {
			w.Blanked++
		}
		return
	}
	h := tokensecret.Hash(tok)
	if had && h == prev.hash {
		return
	}
	if w.hashes == nil {
		w.hashes = map[string]bool{}
	}
	if w.hashes[key+"/"+h] {
		w.Regressions++
		w.NotDueLog = append(w.NotDueLog, key+" went back to an earlier token")
	}
	w.hashes[key+"/"+h] = true
	w.Tokens++
	issued, _ := time.Parse(time.RFC3339, s.Annotations[tokensecret.AnnotationIssuedAt])
	renew, _ := time.Parse(time.RFC3339, s.Annotations[tokensecret.AnnotationRenewAt])
	exp, _ := time.Parse(time.RFC3339, string(s.Data[tokensecret.KeyExpiresAt]))
	if had && prev.hash != "" && !prev.renewAt.IsZero() && issued.Before(prev.renewAt.Add(-time.Second)) {
		w.NotDue++
		w.NotDueLog = append(w.NotDueLog, fmt.Sprintf("%s issued %s, previous due %s", key, issued.Format(time.TimeOnly), prev.renewAt.Format(time.TimeOnly)))
	}
	w.last[key] = secretSeen{hash: h, renewAt: renew, expires: exp}
}

// Snapshot returns the counters.
func (w *secretWatch) Snapshot() (blanked, deleted, tokens, notDue, polls int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.Blanked, w.Deleted, w.Tokens, w.NotDue, w.Polls
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// chainsAlive checks every RefreshToken resource: not RefreshTokenInvalid, and its state
// Secret's refresh token is active at Keycloak (asked directly, which does not consume it).
// It returns the number of broken chains with descriptions.
func chainsAlive(t *testing.T, namespaces []string) (alive, broken int, why []string) {
	t.Helper()
	for _, obj := range listTokens(t, namespaces) {
		if obj.Spec.Grant.Type != authv1alpha1.GrantRefreshToken {
			continue
		}
		if reason := chainProblem(t, &obj); reason != "" {
			broken++
			why = append(why, obj.Namespace+"/"+obj.Name+": "+reason)
		} else {
			alive++
		}
	}
	return alive, broken, why
}

func chainProblem(t *testing.T, obj *authv1alpha1.MLflowAccessToken) string {
	for _, c := range obj.Status.Conditions {
		if c.Reason == authv1alpha1.ReasonRefreshTokenInvalid {
			return c.Type + " " + c.Reason + ": " + c.Message
		}
	}
	var st corev1.Secret
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: obj.Namespace, Name: tokensecret.StateSecretName(obj)}, &st); err != nil {
		return "state Secret: " + err.Error()
	}
	rt := string(st.Data[tokensecret.KeyRefreshToken])
	if rt != "" && introspectDirect(t, strictRealm, rt) {
		return ""
	}
	// A rotation may have happened between the read and the introspection: read again.
	time.Sleep(500 * time.Millisecond)
	_ = k8s.Get(context.Background(), client.ObjectKeyFromObject(&st), &st)
	if rt2 := string(st.Data[tokensecret.KeyRefreshToken]); rt2 != "" && rt2 != rt && introspectDirect(t, strictRealm, rt2) {
		return ""
	}
	return "the stored refresh token is not active at Keycloak"
}

// condMessageOf is "<status> <reason>: <message>" of a condition, or "no <typ> condition".
func condMessageOf(obj *authv1alpha1.MLflowAccessToken, typ string) string {
	c := cond(obj, typ)
	if c == nil {
		return "no " + typ + " condition"
	}
	return string(c.Status) + " " + c.Reason + ": " + c.Message
}
