package csinode

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	authv1alpha1 "github.com/mlflow-token-operator/mlflow-token-operator/api/v1alpha1"
)

// Volume attributes a pod sets in volumes[].csi.volumeAttributes.
const (
	// AttrIssuerRef names the issuer: "ClusterKeycloakIssuer/<name>" or "KeycloakIssuer/<name>"
	// (in the pod's namespace).
	AttrIssuerRef = "issuerRef"
	// AttrClientID is the Keycloak client bound to the pod's ServiceAccount (default: the
	// issuer's clientAuth.clientID).
	AttrClientID = "clientID"
	// AttrScopes are space-separated scopes to request (optional).
	AttrScopes = "scopes"
	// AttrRenewBefore renews this long before expiry (a Go duration; default: after two thirds
	// of the lifetime, as for MLflowAccessTokens).
	AttrRenewBefore = "renewBefore"
)

// What the kubelet adds to the volume context (podInfoOnMount, tokenRequests).
const (
	ctxPodName        = "csi.storage.k8s.io/pod.name"
	ctxPodNamespace   = "csi.storage.k8s.io/pod.namespace"
	ctxPodUID         = "csi.storage.k8s.io/pod.uid"
	ctxServiceAccount = "csi.storage.k8s.io/serviceAccount.name"
	ctxEphemeral      = "csi.storage.k8s.io/ephemeral"
	// ctxTokens holds the pod's service-account tokens, by audience: in the request's secrets
	// (CSIDriver serviceAccountTokenInSecrets, so they are not logged with the volume context),
	// or in the volume context on clusters without that field.
	ctxTokens = "csi.storage.k8s.io/serviceAccount.tokens"
)

// Pod is the pod a volume belongs to, as the kubelet describes it.
type Pod struct {
	Namespace      string `json:"namespace"`
	Name           string `json:"name"`
	UID            string `json:"uid"`
	ServiceAccount string `json:"serviceAccount"`
}

// Subject is the pod's identity as Keycloak sees it: its ServiceAccount's token subject.
func (p Pod) Subject() string {
	return "system:serviceaccount:" + p.Namespace + ":" + p.ServiceAccount
}

// Spec is what a volume asks for.
type Spec struct {
	IssuerKind  string         `json:"issuerKind"`
	IssuerName  string         `json:"issuerName"`
	ClientID    string         `json:"clientID,omitempty"`
	Scopes      []string       `json:"scopes,omitempty"`
	RenewBefore *time.Duration `json:"renewBefore,omitempty"`
}

// Issuer names the issuer as the volume does (the issuer label of the metrics).
func (s Spec) Issuer() string { return s.IssuerKind + "/" + s.IssuerName }

// parseVolume reads a publish request's volume context. Its errors say what to fix in the pod
// spec.
func parseVolume(volCtx map[string]string) (Spec, Pod, error) {
	pod := Pod{Namespace: volCtx[ctxPodNamespace], Name: volCtx[ctxPodName], UID: volCtx[ctxPodUID], ServiceAccount: volCtx[ctxServiceAccount]}
	if pod.Namespace == "" || pod.Name == "" || pod.UID == "" || pod.ServiceAccount == "" {
		return Spec{}, pod, fmt.Errorf("the kubelet passed no pod information: the CSIDriver needs podInfoOnMount: true")
	}
	if volCtx[ctxEphemeral] != "true" {
		return Spec{}, pod, fmt.Errorf("only inline ephemeral volumes are supported (volumes[].csi in the pod spec), not PersistentVolumes")
	}
	var s Spec
	for k, v := range volCtx {
		if strings.HasPrefix(k, "csi.storage.k8s.io/") {
			continue
		}
		switch k {
		case AttrIssuerRef:
			kind, name, ok := strings.Cut(v, "/")
			if !ok || name == "" || (kind != authv1alpha1.KindClusterKeycloakIssuer && kind != authv1alpha1.KindKeycloakIssuer) {
				return Spec{}, pod, fmt.Errorf("volumeAttributes.%s %q: want ClusterKeycloakIssuer/<name> or KeycloakIssuer/<name>", AttrIssuerRef, v)
			}
			s.IssuerKind, s.IssuerName = kind, name
		case AttrClientID:
			s.ClientID = v
		case AttrScopes:
			s.Scopes = strings.Fields(v)
		case AttrRenewBefore:
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return Spec{}, pod, fmt.Errorf("volumeAttributes.%s %q: want a positive duration such as 90s", AttrRenewBefore, v)
			}
			s.RenewBefore = &d
		default:
			known := []string{AttrIssuerRef, AttrClientID, AttrScopes, AttrRenewBefore}
			return Spec{}, pod, fmt.Errorf("unknown volume attribute %q (known: %s)", k, strings.Join(known, ", "))
		}
	}
	if s.IssuerKind == "" {
		return Spec{}, pod, fmt.Errorf("volumeAttributes.%s is required, e.g. ClusterKeycloakIssuer/mlflow", AttrIssuerRef)
	}
	// The same rule as an issuer's clientAuth.serviceAccount: Keycloak binds a client to one
	// subject, and the default ServiceAccount is every pod's of the namespace.
	if pod.ServiceAccount == "default" {
		return Spec{}, pod, fmt.Errorf("pod %s/%s runs as the ServiceAccount \"default\", which every pod of the namespace shares: give it a ServiceAccount of its own (spec.serviceAccountName) and bind a Keycloak client to %s",
			pod.Namespace, pod.Name, "system:serviceaccount:"+pod.Namespace+":<name>")
	}
	return s, pod, nil
}

// serviceAccountToken is one entry of the kubelet's token map.
type serviceAccountToken struct {
	Token   string    `json:"token"`
	Expires time.Time `json:"expirationTimestamp"`
}

// podTokens reads the pod's service-account tokens by audience, from the secrets or else the
// volume context. Never log them.
func podTokens(secrets, volCtx map[string]string) (map[string]serviceAccountToken, error) {
	raw := secrets[ctxTokens]
	if raw == "" {
		raw = volCtx[ctxTokens]
	}
	if raw == "" {
		return nil, nil
	}
	var m map[string]serviceAccountToken
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		return nil, fmt.Errorf("the kubelet's service-account tokens do not parse: %v", err)
	}
	return m, nil
}

// audiences lists the audiences the kubelet passed tokens for, for messages.
func audiences(m map[string]serviceAccountToken) string {
	var a []string
	for k := range m {
		a = append(a, k)
	}
	slices.Sort(a)
	if len(a) == 0 {
		return "none"
	}
	return strings.Join(a, ", ")
}
