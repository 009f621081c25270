package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
	"github.com/mlflow-token-operator/mlflow-token-operator/cmd/kubectl-mlflow_token/internal/deviceflow"
	"github.com/mlflow-token-operator/mlflow-token-operator/internal/jwtclaims"
)

type bootstrapOptions struct {
	*rootOptions
	offline bool
	wait    bool
	timeout time.Duration
	// clusterResourceNS holds the Secrets and ConfigMaps of ClusterKeycloakIssuers.
	clusterResourceNS string
}

func newBootstrapCommand(root *rootOptions) *cobra.Command {
	o := &bootstrapOptions{rootOptions: root}
	cmd := &cobra.Command{
		Use:   "bootstrap NAME",
		Short: "Seed a RefreshToken grant by logging in in a browser (no password in the terminal)",
		Long: `Seed the refresh token of an MLflowAccessToken with grant type RefreshToken, using the OAuth 2.0
Device Authorization Grant (RFC 8628): the command prints a URL and a code, you open the URL
in any browser (on any machine), check the code and log in to Keycloak as the user the
MLflow token should act for; the command then receives an offline token (a refresh token
with --offline=false) and writes it into the resource's bootstrap Secret
(spec.grant.refreshTokenSecretRef: created if missing, otherwise only its key is replaced).
No password is typed into a terminal and no token is printed.

The token is requested as the operator will redeem it: from spec.keycloak's URL and realm,
for spec.keycloak's client, authenticated with the client secret of
spec.keycloak.clientSecretRef, verifying TLS with spec.keycloak's CA bundle. The client must
have the OAuth 2.0 Device Authorization Grant enabled in Keycloak.

Then the command asks the operator to act at once (the renew annotation) and, with --wait
(the default), waits until the resource is Ready with a token from the new chain.

Needs: get on the MLflowAccessToken, on the client-secret Secret (and the CA ConfigMap, if
any); get, create and patch on the bootstrap Secret; patch on the MLflowAccessToken.

Offline tokens (the default) survive the end of the browser's SSO session; Keycloak still ends
an offline session that stays unused for its offline idle timeout (30 days by default), which
the operator's renewals prevent. The user needs the realm role offline_access.

` + exitCodesHelp,
		Example: `  kubectl mlflow-token bootstrap alice-token -n team-a
  kubectl mlflow-token bootstrap alice-token --offline=false --wait=false`,
		Args:              exactArgs(1, "one NAME"),
		ValidArgsFunction: completeTokenNames(root),
		RunE:              func(c *cobra.Command, args []string) error { return o.run(c.Context(), args[0]) },
	}
	cmd.Flags().BoolVar(&o.offline, "offline", true, "Request an offline token (scope offline_access); false: a refresh token bound to the SSO session.")
	cmd.Flags().BoolVar(&o.wait, "wait", true, "After writing the token, wait until the operator has used it and the resource is Ready.")
	cmd.Flags().DurationVar(&o.timeout, "timeout", 60*time.Second, "How long to wait for the operator (the login itself is bounded by the code's lifetime).")
	cmd.Flags().StringVar(&o.clusterResourceNS, "cluster-resource-namespace", "mlflow-token-operator-system", "Namespace of the Secrets and ConfigMaps ClusterKeycloakIssuers reference (the operator's namespace).")
	return cmd
}

func (o *bootstrapOptions) run(ctx context.Context, name string) error {
	if o.wait && o.timeout <= 0 {
		return usagef("--timeout must be positive")
	}
	ns, c, err := o.connect()
	if err != nil {
		return err
	}
	obj, err := getToken(ctx, c, ns, name)
	if err != nil {
		return err
	}
	if obj.Spec.Grant.Type != authv1alpha1.GrantRefreshToken {
		return fmt.Errorf("mlflowaccesstoken %s/%s has grant type %s: bootstrap seeds RefreshToken grants only", ns, name, obj.Spec.Grant.Type)
	}
	ref := obj.Spec.Grant.RefreshTokenSecretRef
	if ref == nil {
		return fmt.Errorf("mlflowaccesstoken %s/%s has no spec.grant.refreshTokenSecretRef: name the Secret the token should go to", ns, name)
	}
	secretKey := firstNonEmpty(ref.Key, "refresh-token")
	acc, err := resolveKeycloak(ctx, c, obj, o.clusterResourceNS)
	if err != nil {
		return err
	}

	tok, err := o.login(ctx, obj, acc)
	if err != nil {
		return err
	}
	kind, err := checkRefreshToken(tok, acc, o.offline, o.streams.ErrOut)
	if err != nil {
		return err
	}
	who := "the user"
	if claims, err := jwtclaims.Parse(tok.AccessToken); err == nil && claims.PreferredUsername != "" {
		who = fmt.Sprintf("user %q", claims.PreferredUsername)
	}
	created, err := writeBootstrapSecret(ctx, c, ns, ref.Name, secretKey, tok.RefreshToken)
	if err != nil {
		// Leave no orphaned session behind: nobody will ever use this token.
		if rerr := revoke(ctx, acc, tok.RefreshToken); rerr != nil {
			printf(o.streams.ErrOut, "Note: could not revoke the unused token at Keycloak: %v\n", rerr)
		}
		return err
	}
	what := fmt.Sprintf("Updated key %q of Secret %s/%s", secretKey, ns, ref.Name)
	if created {
		what = fmt.Sprintf("Created Secret %s/%s with key %q", ns, ref.Name, secretKey)
	}
	printf(o.streams.Out, "%s: %s for %s, client %q.\n", what, kind, who, acc.ClientID)

	// The operator reads the bootstrap Secret when it reconciles; the renew annotation makes it
	// reconcile now (skipping any failure back-off) and records when it has.
	if err := requestAndWait(ctx, c, []*authv1alpha1.MLflowAccessToken{obj}, renewRequest, o.wait, o.timeout, o.now, o.streams.Out); err != nil {
		if apierrors.IsForbidden(err) {
			printf(o.streams.ErrOut, "Note: could not ask the operator to act now (%v); it uses the new token at its next attempt.\n", err)
			return nil
		}
		return err
	}
	return nil
}

// login runs the device authorization grant: print where to log in, then poll for the token.
func (o *bootstrapOptions) login(ctx context.Context, obj *authv1alpha1.MLflowAccessToken, acc *keycloakAccess) (*deviceflow.Token, error) {
	scopes := []string{"openid"}
	if o.offline {
		scopes = append(scopes, "offline_access")
	}
	// The operator requests spec.grant.scopes at each refresh; a refresh may only narrow the
	// scopes of the original grant, so they are asked for here too.
	for _, s := range obj.Spec.Grant.Scopes {
		if !slices.Contains(scopes, s) {
			scopes = append(scopes, s)
		}
	}
	df := &deviceflow.Client{
		HTTP:                   acc.httpClient(),
		DeviceAuthorizationURL: acc.realmURL("/protocol/openid-connect/auth/device"),
		TokenURL:               acc.realmURL("/protocol/openid-connect/token"),
		ClientID:               acc.ClientID,
		ClientSecret:           acc.ClientSecret,
		ClientAssertion:        acc.Assertion,
	}
	auth, err := df.Authorize(ctx, scopes)
	if err != nil {
		return nil, explainDeviceError(err, acc, "starting the device login")
	}
	w := o.streams.ErrOut
	printf(w, "To seed mlflowaccesstoken %s/%s, log in to Keycloak as the user the MLflow token should act for.\n", obj.Namespace, obj.Name)
	if auth.VerificationURIComplete != "" {
		printf(w, "Open this URL in a browser:\n\n    %s\n\n", auth.VerificationURIComplete)
		printf(w, "(or open %s and enter the code %s)\n", auth.VerificationURI, auth.UserCode)
	} else {
		printf(w, "Open %s in a browser and enter the code:\n\n    %s\n\n", auth.VerificationURI, auth.UserCode)
	}
	printf(w, "Check that the page shows the code %s; if you did not start this, deny it.\n", auth.UserCode)
	printf(w, "Waiting for the login (scope %q; the code expires in %s)...\n", strings.Join(scopes, " "),
		time.Until(auth.ExpiresAt).Round(time.Second))
	tok, err := df.Poll(ctx, auth)
	if err != nil {
		switch deviceflow.CodeOf(err) {
		case deviceflow.ErrorAccessDenied:
			return nil, errors.New("the login was denied in the browser; nothing was written")
		case deviceflow.ErrorExpiredToken:
			return nil, errors.New("the code expired before the login was completed; nothing was written (run the command again)")
		}
		if errors.Is(err, context.Canceled) {
			return nil, errors.New("interrupted; nothing was written")
		}
		return nil, explainDeviceError(err, acc, "waiting for the login")
	}
	return tok, nil
}

// explainDeviceError adds what to do to Keycloak's answers that need a change in Keycloak.
func explainDeviceError(err error, acc *keycloakAccess, doing string) error {
	hint := ""
	var de *deviceflow.Error
	if errors.As(err, &de) {
		switch {
		case de.Code == "invalid_client" || de.Code == "unauthorized_client" && strings.Contains(strings.ToLower(de.Description), "credentials"):
			hint = fmt.Sprintf("Keycloak rejected client %q with the secret from %s (wrong secret, or no such client in realm %q)", acc.ClientID, acc.SecretSource, acc.Realm)
		case strings.Contains(de.Description, "Device Authorization Grant"):
			hint = fmt.Sprintf("client %q may not use the device login: turn on \"OAuth 2.0 Device Authorization Grant\" in its Keycloak settings (attribute oauth2.device.authorization.grant.enabled)", acc.ClientID)
		case de.Code == "invalid_scope":
			hint = "Keycloak refused a scope; offline_access needs the client's offline_access scope and the user's offline_access role (--offline=false asks for a plain refresh token)"
		case de.Status == 404:
			hint = fmt.Sprintf("no realm %q at %s, or a Keycloak too old for the device login", acc.Realm, acc.URL)
		case de.Status == 0 && strings.Contains(de.Description, "certificate"):
			hint = "Keycloak's certificate is not trusted: set spec.keycloak.caBundle or caConfigMapRef to the CA that issued it (as the operator needs too)"
		}
	}
	if hint != "" {
		return fmt.Errorf("%s at %s: %w\nHint: %s", doing, acc.URL, err, hint)
	}
	return fmt.Errorf("%s at %s: %w", doing, acc.URL, err)
}

// checkRefreshToken makes sure the operator can redeem what Keycloak issued: a refresh token,
// for this client, from this issuer. It returns "offline token" or "refresh token".
func checkRefreshToken(tok *deviceflow.Token, acc *keycloakAccess, offline bool, warn io.Writer) (string, error) {
	if tok.RefreshToken == "" {
		return "", fmt.Errorf("Keycloak issued no refresh token to client %q (are refresh tokens turned off for it?); nothing was written", acc.ClientID)
	}
	claims, err := jwtclaims.Parse(tok.RefreshToken)
	if err != nil {
		// Not a JWT: Keycloak's refresh tokens are, but another server's may not be. The
		// operator will tell whether it works.
		return "a refresh token", nil
	}
	wantIss := acc.URL + "/realms/" + acc.Realm
	if claims.Issuer != "" && claims.Issuer != wantIss {
		return "", fmt.Errorf("the refresh token's issuer is %q, not %q: the operator could not redeem it (Keycloak's hostname settings rewrite the URL?); nothing was written", claims.Issuer, wantIss)
	}
	if claims.AuthorizedParty != "" && claims.AuthorizedParty != acc.ClientID {
		return "", fmt.Errorf("the refresh token was issued to client %q, not %q; nothing was written", claims.AuthorizedParty, acc.ClientID)
	}
	if strings.EqualFold(claims.Type, "Offline") {
		return "an offline token", nil
	}
	if offline {
		printf(warn, "Warning: Keycloak issued a refresh token, not an offline token (does the user have the offline_access role?): it ends with the SSO session.\n")
	}
	return "a refresh token", nil
}

// writeBootstrapSecret puts the token into key of the Secret: creates the Secret when missing,
// otherwise replaces only that key (a merge patch leaves other keys and metadata alone).
func writeBootstrapSecret(ctx context.Context, c client.Client, ns, name, key, token string) (created bool, err error) {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	err = c.Get(ctx, client.ObjectKeyFromObject(s), s)
	switch {
	case apierrors.IsNotFound(err):
		s = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Type:       corev1.SecretTypeOpaque,
			Data:       map[string][]byte{key: []byte(token)},
		}
		if err := c.Create(ctx, s); err != nil {
			return false, secretWriteError(err, "create", ns, name)
		}
		return true, nil
	case err != nil:
		return false, secretWriteError(err, "get", ns, name)
	}
	if s.Immutable != nil && *s.Immutable {
		return false, fmt.Errorf("Secret %s/%s is immutable: delete it (or name another Secret in spec.grant.refreshTokenSecretRef) and run bootstrap again", ns, name)
	}
	patch, _ := json.Marshal(map[string]any{"data": map[string][]byte{key: []byte(token)}})
	if err := c.Patch(ctx, s, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return false, secretWriteError(err, "patch", ns, name)
	}
	return false, nil
}

func secretWriteError(err error, verb, ns, name string) error {
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("you may not %s Secret %s/%s (the bootstrap Secret): the token was obtained but not written, and it is dropped now; ask for get, create and patch on it", verb, ns, name)
	}
	return fmt.Errorf("writing Secret %s/%s: %w", ns, name, err)
}

// revoke revokes a refresh token at Keycloak (RFC 7009), which ends its session.
func revoke(ctx context.Context, acc *keycloakAccess, token string) error {
	form := url.Values{"client_id": {acc.ClientID}, "token": {token}, "token_type_hint": {"refresh_token"}}
	if acc.Assertion != "" {
		form.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
		form.Set("client_assertion", acc.Assertion)
	} else {
		form.Set("client_secret", acc.ClientSecret)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, acc.realmURL("/protocol/openid-connect/revoke"), strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := acc.httpClient().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("revocation endpoint answered HTTP %d", resp.StatusCode)
	}
	return nil
}
