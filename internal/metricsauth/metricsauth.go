// Package metricsauth guards the metrics endpoint: a caller must present a bearer token that the
// API server authenticates (TokenReview) and authorizes for the request (SubjectAccessReview on
// the non-resource URL, e.g. GET /metrics), as kube-rbac-proxy and kubebuilder's scaffold do.
// Bind the chart's metrics-reader ClusterRole to Prometheus' ServiceAccount.
//
// Why not controller-runtime's filters.WithAuthenticationAndAuthorization: it builds on
// k8s.io/apiserver, which brings CEL, OpenTelemetry and gRPC into the operator; measured on this
// operator, the binary grew from 50.8 MB to 92.5 MB. The two reviews below use the client-go
// the operator already links, with the same semantics (no anonymous access; answers cached for a
// minute).
package metricsauth

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// cacheTTL is how long an answer of the API server is reused; maxCached bounds the cache.
const (
	cacheTTL  = time.Minute
	maxCached = 1024
)

// FilterProvider is a metricsserver.Options.FilterProvider.
func FilterProvider(cfg *rest.Config, hc *http.Client) (metricsserver.Filter, error) {
	cs, err := kubernetes.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, err
	}
	return New(cs).Filter, nil
}

// Guard holds the reviews' clients and caches.
type Guard struct {
	cs  kubernetes.Interface
	now func() time.Time

	mu     sync.Mutex
	authn  map[[32]byte]cachedUser
	allows map[string]cachedAllow
}

type cachedUser struct {
	user *authenticationv1.UserInfo // nil: not authenticated
	at   time.Time
}

type cachedAllow struct {
	allowed bool
	at      time.Time
}

// New returns a Guard asking the API server behind cs.
func New(cs kubernetes.Interface) *Guard {
	return &Guard{cs: cs, now: time.Now, authn: map[[32]byte]cachedUser{}, allows: map[string]cachedAllow{}}
}

// Filter wraps handler: 401 without a valid token, 403 without the permission.
func (g *Guard) Filter(log logr.Logger, handler http.Handler) (http.Handler, error) {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		token, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
		if !ok || strings.TrimSpace(token) == "" {
			http.Error(w, "Unauthorized: a bearer token is required", http.StatusUnauthorized)
			return
		}
		ctx, cancel := context.WithTimeout(req.Context(), 10*time.Second)
		defer cancel()
		user, err := g.authenticate(ctx, strings.TrimSpace(token))
		if err != nil {
			log.Error(err, "Could not authenticate a metrics request")
			http.Error(w, "could not authenticate the request", http.StatusInternalServerError)
			return
		}
		if user == nil {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		allowed, err := g.authorize(ctx, user, strings.ToLower(req.Method), req.URL.Path)
		if err != nil {
			log.Error(err, "Could not authorize a metrics request", "user", user.Username)
			http.Error(w, "could not authorize the request", http.StatusInternalServerError)
			return
		}
		if !allowed {
			http.Error(w, fmt.Sprintf("Forbidden: %s may not %s %s", user.Username, strings.ToLower(req.Method), req.URL.Path), http.StatusForbidden)
			return
		}
		handler.ServeHTTP(w, req)
	}), nil
}

func (g *Guard) authenticate(ctx context.Context, token string) (*authenticationv1.UserInfo, error) {
	k := sha256.Sum256([]byte(token)) // the cache keeps no token
	g.mu.Lock()
	if c, ok := g.authn[k]; ok && g.now().Sub(c.at) < cacheTTL {
		g.mu.Unlock()
		return c.user, nil
	}
	g.mu.Unlock()
	tr, err := g.cs.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	var user *authenticationv1.UserInfo
	if tr.Status.Authenticated {
		user = &tr.Status.User
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.trim()
	g.authn[k] = cachedUser{user: user, at: g.now()}
	return user, nil
}

func (g *Guard) authorize(ctx context.Context, u *authenticationv1.UserInfo, verb, path string) (bool, error) {
	groups := slices.Clone(u.Groups)
	slices.Sort(groups)
	k := strings.Join([]string{u.Username, u.UID, strings.Join(groups, ","), verb, path}, "\x00")
	g.mu.Lock()
	if c, ok := g.allows[k]; ok && g.now().Sub(c.at) < cacheTTL {
		g.mu.Unlock()
		return c.allowed, nil
	}
	g.mu.Unlock()
	extra := map[string]authorizationv1.ExtraValue{}
	for key, v := range u.Extra {
		extra[key] = authorizationv1.ExtraValue(v)
	}
	sar, err := g.cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			User: u.Username, UID: u.UID, Groups: u.Groups, Extra: extra,
			NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: path, Verb: verb},
		}}, metav1.CreateOptions{})
	if err != nil {
		return false, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.trim()
	g.allows[k] = cachedAllow{allowed: sar.Status.Allowed, at: g.now()}
	return sar.Status.Allowed, nil
}

// trim drops expired answers, and everything when the caches are full. Called with g.mu held.
func (g *Guard) trim() {
	now := g.now()
	if len(g.authn) >= maxCached {
		for k, c := range g.authn {
			if now.Sub(c.at) >= cacheTTL {
				delete(g.authn, k)
			}
		}
		if len(g.authn) >= maxCached {
			clear(g.authn)
		}
	}
	if len(g.allows) >= maxCached {
		for k, c := range g.allows {
			if now.Sub(c.at) >= cacheTTL {
				delete(g.allows, k)
			}
		}
		if len(g.allows) >= maxCached {
			clear(g.allows)
		}
	}
}
