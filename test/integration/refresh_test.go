package integration

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/tokensecret"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/testenv"
)

// The strict realm: revokeRefreshToken with reuse 0, so redeeming an old refresh token ends the
// session (test/keycloak/realm-strict.json).
const (
	strictRealm       = "strict"
	shortClient       = "mlflow-short" // client sessions end after 25 s
	shortClientSecret = "mlflowShortTestSecret0003"
)

func strictToken(ns, name string, grant authv1alpha1.GrantSpec, mutate ...func(*authv1alpha1.MLflowAccessToken)) *authv1alpha1.MLflowAccessToken {
	return newToken(ns, name, append([]func(*authv1alpha1.MLflowAccessToken){func(o *authv1alpha1.MLflowAccessToken) {
		o.Spec.Keycloak.Realm = strictRealm
		o.Spec.Grant = grant
	}}, mutate...)...)
}

func createUserSecret(t *testing.T, ns, name, user, pass string) {
	t.Helper()
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		StringData: map[string]string{"username": user, "password": pass}})
}

func createBootstrapSecret(t *testing.T, ns, name, token string) {
	t.Helper()
	create(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		StringData: map[string]string{"refresh-token": token}})
}

// assertNoRefreshTokenInConsumerSecret: pods mount the consumer Secret; it must hold the access
// token and nothing that could mint new ones.
func assertNoRefreshTokenInConsumerSecret(t *testing.T, obj *authv1alpha1.MLflowAccessToken) {
	t.Helper()
	consumer := getSecret(t, obj.Namespace, obj.SecretNameOrDefault())
	state := getSecret(t, obj.Namespace, tokensecret.StateSecretName(obj))
	if consumer == nil || state == nil {
		t.Fatalf("consumer Secret %v, state Secret %v", consumer != nil, state != nil)
	}
	refresh := string(state.Data[tokensecret.KeyRefreshToken])
	if refresh == "" {
		t.Fatal("the state Secret holds no refresh token")
	}
	seenTokens.add(refresh)
	for k, v := range consumer.Data {
		switch k {
		case "token", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_URI", "expiresAt":
		default:
			t.Errorf("unexpected key %q in the consumer Secret", k)
		}
		if strings.Contains(string(v), refresh) || strings.Contains(string(v), strings.Split(refresh, ".")[2]) {
			t.Errorf("the consumer Secret's key %q holds the refresh token", k)
		}
		if claims := jwtPayloadOrNil(string(v)); claims != nil && (claims["typ"] == "Refresh" || claims["typ"] == "Offline") {
			t.Errorf("the consumer Secret's key %q holds a %v token", k, claims["typ"])
		}
	}
}

func jwtPayloadOrNil(s string) map[string]any {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return nil
	}
	b, err := base64URL(parts[1])
	if err != nil {
		return nil
	}
	var m map[string]any
	if jsonUnmarshal(b, &m) != nil {
		return nil
	}
	return m
}

// Password grant with offline_access: the offline session is listed by the admin API while the
// resource lives, rotations go through the offline token, and deletion ends the session.
func TestPasswordGrantOfflineSession(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	createClientSecret(t, ns, "kc-client", clientSecret)
	createUserSecret(t, ns, "olivia", "olivia", "olivia-password")
	create(t, strictToken(ns, "offline", authv1alpha1.GrantSpec{
		Type: authv1alpha1.GrantPassword, Offline: true,
		PasswordSecretRef: &authv1alpha1.UserCredentialsRef{Name: "olivia"},
	}, func(o *authv1alpha1.MLflowAccessToken) {
		o.Spec.Revocation = &authv1alpha1.RevocationSpec{VerifySessionWithAdminAPI: true}
	}))
	obj := waitReady(t, ns, "offline", 30*time.Second)
	if !obj.Status.OfflineSession || obj.Status.SessionID == "" || obj.Status.RefreshChainExpiresAt == nil {
		t.Fatalf("status lacks the offline session: %+v", obj.Status)
	}
	if obj.Status.Token == nil || obj.Status.Token.PreferredUsername != "olivia" || !strings.Contains(obj.Status.Token.Scope, "offline_access") {
		t.Errorf("status.token = %+v", obj.Status.Token)
	}
	offlinePath := strictRealm + "/users/" + userID(t, strictRealm, "olivia") + "/offline-sessions/" + clientUUID(t, strictRealm, clientID)
	if ids := sessionIDs(t, offlinePath); !slices.Contains(ids, obj.Status.SessionID) {
		t.Fatalf("offline session %s not listed by the admin API: %v", obj.Status.SessionID, ids)
	}
	assertNoRefreshTokenInConsumerSecret(t, obj)

	// Two rotations through the offline token: same session, no new login.
	testenv.Eventually(t, 2*waitForRotation, "two rotations", func() (bool, string) {
		o := get(t, ns, "offline")
		return o.Status.Rotations >= 3, "rotations " + itoa(o.Status.Rotations)
	})
	if o := get(t, ns, "offline"); o.Status.SessionID != obj.Status.SessionID {
		t.Errorf("session changed across rotations: %s → %s (a re-login instead of a refresh)", obj.Status.SessionID, o.Status.SessionID)
	}
	assertNoRefreshTokenInConsumerSecret(t, obj)

	deleteAndWait(t, get(t, ns, "offline"), 30*time.Second)
	if ids := sessionIDs(t, offlinePath); len(ids) != 0 {
		t.Errorf("offline sessions left after deletion: %v", ids)
	}
	if getSecret(t, ns, tokensecret.StateSecretName(obj)) != nil {
		t.Error("the state Secret survived the deletion")
	}
	if getSecret(t, ns, "olivia") == nil {
		t.Error("the user's credentials Secret was deleted")
	}
}

// Password grant without offline: an online session, listed among the user's sessions, ended
// on deletion.
func TestPasswordGrantOnlineSession(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	createClientSecret(t, ns, "kc-client", clientSecret)
	createUserSecret(t, ns, "paul", "paul", "paul-password")
	create(t, strictToken(ns, "online", authv1alpha1.GrantSpec{
		Type: authv1alpha1.GrantPassword, PasswordSecretRef: &authv1alpha1.UserCredentialsRef{Name: "paul"},
	}))
	obj := waitReady(t, ns, "online", 30*time.Second)
	if obj.Status.OfflineSession || obj.Status.SessionID == "" || obj.Status.RefreshChainExpiresAt == nil {
		t.Fatalf("status: %+v", obj.Status)
	}
	sessionsPath := strictRealm + "/users/" + userID(t, strictRealm, "paul") + "/sessions"
	if ids := sessionIDs(t, sessionsPath); !slices.Contains(ids, obj.Status.SessionID) {
		t.Fatalf("session %s not among the user's sessions: %v", obj.Status.SessionID, ids)
	}
	assertNoRefreshTokenInConsumerSecret(t, obj)
	deleteAndWait(t, obj, 30*time.Second)
	if ids := sessionIDs(t, sessionsPath); len(ids) != 0 {
		t.Errorf("sessions left after deletion: %v", ids)
	}
}

// RefreshToken grant in a realm with strict rotation: at least five rotations in a row, with
// the operator stopped and restarted between two of them; the chain (one session) holds.
func TestRefreshTokenChainUnderStrictRotation(t *testing.T) {
	ns := newNamespace(t)
	createClientSecret(t, ns, "kc-client", clientSecret)
	boot := passwordGrant(t, strictRealm, clientID, clientSecret, "rita", "rita-password", false)
	createBootstrapSecret(t, ns, "rita-bootstrap", boot.RefreshToken)
	seenTokens.add(boot.RefreshToken)
	create(t, strictToken(ns, "chain", authv1alpha1.GrantSpec{
		Type: authv1alpha1.GrantRefreshToken, RefreshTokenSecretRef: &authv1alpha1.RefreshTokenRef{Name: "rita-bootstrap"},
	}))
	obj := waitReady(t, ns, "chain", 30*time.Second)
	session := obj.Status.SessionID
	if session == "" || session != boot.SessionState {
		t.Fatalf("session %q, bootstrap session %q", session, boot.SessionState)
	}
	if c := cond(obj, authv1alpha1.ConditionRefreshChainExpiring); c == nil {
		t.Error("no RefreshChainExpiring condition for a RefreshToken grant")
	}
	assertNoRefreshTokenInConsumerSecret(t, obj)

	failures := 0
	watchRotations := func(until int64) {
		testenv.Eventually(t, time.Duration(until-get(t, ns, "chain").Status.Rotations+1)*waitForRotation, "rotations", func() (bool, string) {
			o := get(t, ns, "chain")
			if c := cond(o, authv1alpha1.ConditionRenewalFailing); c != nil && c.Status == metav1.ConditionTrue {
				failures++
				t.Fatalf("renewal failed: %s: %s", c.Reason, c.Message)
			}
			return o.Status.Rotations >= until, "rotations " + itoa(o.Status.Rotations)
		})
	}
	watchRotations(3)
	refreshesBefore, rotationsBefore := kcCalls.count(strictRealm, "refresh_token"), get(t, ns, "chain").Status.Rotations
	restartOperator(t)
	t.Log("operator restarted after rotation 3")
	watchRotations(6)

	obj = get(t, ns, "chain")
	t.Logf("Keycloak refresh calls per rotation (rotations %d→%d, across the restart): %.2f", rotationsBefore, obj.Status.Rotations,
		float64(kcCalls.count(strictRealm, "refresh_token")-refreshesBefore)/float64(obj.Status.Rotations-rotationsBefore))
	if obj.Status.SessionID != session {
		t.Errorf("session changed %s → %s: the chain was broken", session, obj.Status.SessionID)
	}
	var sess []struct{ ID string }
	adminJSON(t, strictRealm+"/users/"+userID(t, strictRealm, "rita")+"/sessions", &sess)
	if len(sess) != 1 || sess[0].ID != session {
		t.Errorf("rita's sessions after %d rotations: %+v, want only %s", obj.Status.Rotations, sess, session)
	}
	t.Logf("%d tokens over one session with strict rotation, operator restarted once, %d failures", obj.Status.Rotations, failures)
	assertNoRefreshTokenInConsumerSecret(t, obj)
	deleteAndWait(t, obj, 30*time.Second)
	if len(sessionIDs(t, strictRealm+"/users/"+userID(t, strictRealm, "rita")+"/sessions")) != 0 {
		t.Error("rita's session survived the deletion")
	}
	if s := getSecret(t, ns, "rita-bootstrap"); s == nil || string(s.Data["refresh-token"]) != boot.RefreshToken {
		t.Error("the user's bootstrap Secret was changed or deleted")
	}
}

func TestInvalidBootstrapToken(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	createClientSecret(t, ns, "kc-client", clientSecret)
	createBootstrapSecret(t, ns, "junk-bootstrap", "not-a-refresh-token")
	create(t, strictToken(ns, "junk", authv1alpha1.GrantSpec{
		Type: authv1alpha1.GrantRefreshToken, RefreshTokenSecretRef: &authv1alpha1.RefreshTokenRef{Name: "junk-bootstrap"},
	}))
	obj := waitReason(t, ns, "junk", authv1alpha1.ConditionReady, metav1.ConditionFalse, authv1alpha1.ReasonRefreshTokenInvalid, 30*time.Second)
	if msg := condMessage(t, obj, authv1alpha1.ConditionReady); !strings.Contains(msg, `Secret "junk-bootstrap"`) {
		t.Errorf("message does not say where to put a new token: %q", msg)
	}
	if getSecret(t, ns, obj.SecretNameOrDefault()) != nil {
		t.Error("a consumer Secret was written without a token")
	}
	deleteAndWait(t, obj, 30*time.Second)
}

// A chain that ends (client sessions of mlflow-short last 25 s): the RefreshToken grant keeps its
// last valid access token, warns ahead, then reports RefreshTokenInvalid; the Password grant logs
// in again by itself.
func TestExpiredRefreshChain(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	createClientSecret(t, ns, "kc-short", shortClientSecret)
	createUserSecret(t, ns, "sam", "sam", "sam-password")
	boot := passwordGrant(t, strictRealm, shortClient, shortClientSecret, "sam", "sam-password", false)
	createBootstrapSecret(t, ns, "sam-bootstrap", boot.RefreshToken)
	seenTokens.add(boot.RefreshToken)
	short := func(o *authv1alpha1.MLflowAccessToken) {
		o.Spec.Keycloak.ClientID = shortClient
		o.Spec.Keycloak.ClientSecretRef.Name = "kc-short"
	}
	create(t, strictToken(ns, "byrefresh", authv1alpha1.GrantSpec{
		Type: authv1alpha1.GrantRefreshToken, RefreshTokenSecretRef: &authv1alpha1.RefreshTokenRef{Name: "sam-bootstrap"}}, short))
	create(t, strictToken(ns, "bypassword", authv1alpha1.GrantSpec{
		Type: authv1alpha1.GrantPassword, PasswordSecretRef: &authv1alpha1.UserCredentialsRef{Name: "sam"}}, short))

	obj := waitReady(t, ns, "byrefresh", 30*time.Second)
	if c := cond(obj, authv1alpha1.ConditionRefreshChainExpiring); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("RefreshChainExpiring = %+v for a chain that ends at %v", c, obj.Status.RefreshChainExpiresAt)
	}
	pw := waitReady(t, ns, "bypassword", 30*time.Second)
	firstSession := pw.Status.SessionID

	// The RefreshToken grant runs into the end of its chain.
	var lastToken string
	obj = nil
	testenv.Eventually(t, 60*time.Second, "RenewalFailing=RefreshTokenInvalid", func() (bool, string) {
		o := get(t, ns, "byrefresh")
		c := cond(o, authv1alpha1.ConditionRenewalFailing)
		if c == nil {
			return false, "no condition"
		}
		if c.Status == metav1.ConditionTrue && c.Reason == authv1alpha1.ReasonRefreshTokenInvalid {
			obj = o
			lastToken = secretToken(getSecret(t, ns, "byrefresh"))
			return true, ""
		}
		return false, c.Reason + ": " + c.Message
	})
	if lastToken == "" {
		t.Fatal("the Secret lost its token when the chain ended")
	}
	if r := cond(obj, authv1alpha1.ConditionReady); time.Now().Before(obj.Status.ExpiresAt.Time) && r.Reason != authv1alpha1.ReasonRenewalFailing {
		t.Errorf("Ready while the last token is valid: %s/%s", r.Status, r.Reason)
	}
	// It never blanks the Secret, also after the token expired.
	waitReason(t, ns, "byrefresh", authv1alpha1.ConditionReady, metav1.ConditionFalse, authv1alpha1.ReasonRefreshTokenInvalid, 30*time.Second)
	if secretToken(getSecret(t, ns, "byrefresh")) != lastToken {
		t.Error("the Secret's last token was changed or blanked after the chain ended")
	}

	// The Password grant logged in again: a new session, still Ready.
	testenv.Eventually(t, 60*time.Second, "re-login", func() (bool, string) {
		o := get(t, ns, "bypassword")
		r := cond(o, authv1alpha1.ConditionReady)
		return o.Status.SessionID != firstSession && r != nil && r.Status == metav1.ConditionTrue, "session " + o.Status.SessionID
	})
	deleteAndWait(t, get(t, ns, "byrefresh"), 30*time.Second)
	deleteAndWait(t, get(t, ns, "bypassword"), 30*time.Second)
}

// The user's password changes and the session ends: re-login fails with a readable reason, the
// current token stays; fixing the Secret heals it.
func TestChangedPassword(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	createClientSecret(t, ns, "kc-client", clientSecret)
	createUserSecret(t, ns, "carl-login", "carl", "carl-password")
	create(t, strictToken(ns, "carl", authv1alpha1.GrantSpec{
		Type: authv1alpha1.GrantPassword, PasswordSecretRef: &authv1alpha1.UserCredentialsRef{Name: "carl-login"}}))
	obj := waitReady(t, ns, "carl", 30*time.Second)
	before := secretToken(getSecret(t, ns, "carl"))

	id := userID(t, strictRealm, "carl")
	if code, body := admin(t, http.MethodPut, strictRealm+"/users/"+id+"/reset-password",
		map[string]any{"type": "password", "value": "carl-new-password", "temporary": false}); code != 204 {
		t.Fatalf("reset-password: %d %s", code, body)
	}
	if code, body := admin(t, http.MethodPost, strictRealm+"/users/"+id+"/logout", nil); code != 204 {
		t.Fatalf("logout: %d %s", code, body)
	}
	obj = waitReason(t, ns, "carl", authv1alpha1.ConditionRenewalFailing, metav1.ConditionTrue, authv1alpha1.ReasonInvalidUserCredentials, 40*time.Second)
	if s := getSecret(t, ns, "carl"); s == nil || (secretToken(s) != before && time.Now().Before(obj.Status.ExpiresAt.Time)) {
		t.Error("the Secret's valid token was lost when re-login failed")
	}
	if msg := condMessage(t, obj, authv1alpha1.ConditionRenewalFailing); !strings.Contains(msg, `Secret "carl-login"`) {
		t.Errorf("message does not name the credentials Secret: %q", msg)
	}

	creds := &corev1.Secret{}
	if err := k8s.Get(context.Background(), keyOf(ns, "carl-login"), creds); err != nil {
		t.Fatal(err)
	}
	creds.Data["password"] = []byte("carl-new-password")
	if err := k8s.Update(context.Background(), creds); err != nil {
		t.Fatal(err)
	}
	waitReady(t, ns, "carl", 40*time.Second)
	deleteAndWait(t, get(t, ns, "carl"), 30*time.Second)
}

// Pins down the realm's strict rotation, so that TestRefreshTokenChainUnderStrictRotation proves
// something: redeeming a refresh token twice fails with invalid_grant and ends the session.
func TestStrictRealmRejectsReuse(t *testing.T) {
	t.Parallel()
	// rex: a user of this test alone (a session ended here must not be another test's).
	boot := passwordGrant(t, strictRealm, clientID, clientSecret, "rex", "rex-password", false)
	refresh := func(rt string) int {
		resp, err := http.PostForm(kcServer.URL()+"/realms/"+strictRealm+"/protocol/openid-connect/token", url.Values{
			"grant_type": {"refresh_token"}, "client_id": {clientID}, "client_secret": {clientSecret}, "refresh_token": {rt}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	var next tokenResponse
	resp, err := http.PostForm(kcServer.URL()+"/realms/"+strictRealm+"/protocol/openid-connect/token", url.Values{
		"grant_type": {"refresh_token"}, "client_id": {clientID}, "client_secret": {clientSecret}, "refresh_token": {boot.RefreshToken}})
	if err != nil {
		t.Fatal(err)
	}
	if err := jsonDecode(resp, &next); err != nil || next.RefreshToken == "" {
		t.Fatalf("first redemption: %s %v", resp.Status, err)
	}
	// The operator relies on this after an interrupted redemption: introspection tells a consumed
	// refresh token from a live one without consuming either.
	if consumed, current := introspectAt(t, strictRealm, boot.RefreshToken, "refresh_token"), introspectAt(t, strictRealm, next.RefreshToken, "refresh_token"); consumed || !current {
		t.Errorf("introspection: consumed refresh token active=%v (want false), current active=%v (want true)", consumed, current)
	}
	if code := refresh(boot.RefreshToken); code != http.StatusBadRequest {
		t.Errorf("second redemption of the same refresh token answered %d, want 400 invalid_grant", code)
	}
	if code := refresh(next.RefreshToken); code != http.StatusBadRequest {
		t.Errorf("after a reuse, the newest refresh token answered %d: the session should have ended", code)
	}
}
