package metricsauth

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// fakeAPI answers reviews: token "reader" is user prometheus, allowed GET /metrics; token "other"
// is user intruder, allowed nothing; any other token is not authenticated.
func fakeAPI(reviews *int) *fake.Clientset {
	cs := fake.NewClientset()
	cs.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		*reviews++
		tr := a.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview)
		switch tr.Spec.Token {
		case "reader":
			tr.Status = authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{Username: "system:serviceaccount:monitoring:prometheus", Groups: []string{"system:serviceaccounts"}}}
		case "other":
			tr.Status = authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{Username: "intruder"}}
		}
		return true, tr, nil
	})
	cs.PrependReactor("create", "subjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		*reviews++
		sar := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SubjectAccessReview)
		na := sar.Spec.NonResourceAttributes
		sar.Status.Allowed = sar.Spec.User == "system:serviceaccount:monitoring:prometheus" && na != nil && na.Path == "/metrics" && na.Verb == "get"
		return true, sar, nil
	})
	return cs
}

func TestFilter(t *testing.T) {
	var reviews int
	g := New(fakeAPI(&reviews))
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	g.now = func() time.Time { return now }
	h, err := g.Filter(logr.Discard(), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("# TYPE x counter\n")) }))
	if err != nil {
		t.Fatal(err)
	}
	get := func(path, auth string) int {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	cases := []struct {
		name, path, auth string
		want             int
	}{
		{"anonymous", "/metrics", "", 401},
		{"not a bearer token", "/metrics", "Basic YTpi", 401},
		{"unknown token", "/metrics", "Bearer forged", 401},
		{"authenticated, not allowed", "/metrics", "Bearer other", 403},
		{"allowed", "/metrics", "Bearer reader", 200},
		{"allowed user, other path", "/debug/pprof/", "Bearer reader", 403},
	}
	for _, c := range cases {
		if got := get(c.path, c.auth); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
	before := reviews
	for range 5 {
		get("/metrics", "Bearer reader")
	}
	if reviews != before {
		t.Errorf("%d reviews for repeated scrapes within a minute, want 0 (cached)", reviews-before)
	}
	now = now.Add(cacheTTL)
	get("/metrics", "Bearer reader")
	if reviews != before+2 {
		t.Errorf("%d reviews after the cache expired, want 2", reviews-before)
	}
}
