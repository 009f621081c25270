package csi

import (
	"context"
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/mlflow-token-operator/mlflow-token-operator/internal/jwtclaims"
)

var jwtPattern = regexp.MustCompile(`eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+`)

// testNoTokenInAPIServer lists every object of every listable resource (Secrets, ConfigMaps,
// events, pods, the issuers, the CSIDriver ... whatever the node plugin or anything else could
// have written) and searches them for any access token of the realm, and for the tokens the suite
// read from the node's disk.
func testNoTokenInAPIServer(t *testing.T) {
	ctx := context.Background()
	dyn, err := dynamic.NewForConfig(theNode.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	lists, err := cs.Discovery().ServerPreferredResources()
	if err != nil {
		t.Logf("discovery (partial): %v", err)
	}
	objects, resources, jwts := 0, 0, 0
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			continue
		}
		for _, r := range l.APIResources {
			if strings.Contains(r.Name, "/") || !slices.Contains(r.Verbs, "list") {
				continue
			}
			list, err := dyn.Resource(gv.WithResource(r.Name)).List(ctx, metav1.ListOptions{})
			if err != nil {
				t.Errorf("listing %s: %v", r.Name, err)
				continue
			}
			resources++
			for _, o := range list.Items {
				objects++
				b, _ := json.Marshal(o.Object)
				s := string(b)
				for _, tok := range seenTokens {
					if strings.Contains(s, tok) {
						t.Errorf("%s %s/%s holds a pod's token", r.Name, o.GetNamespace(), o.GetName())
					}
				}
				for _, m := range jwtPattern.FindAllString(s, -1) {
					jwts++
					if c, err := jwtclaims.Parse(m); err == nil && c.Issuer == realmIssuer() {
						t.Errorf("%s %s/%s holds an access token of the realm (client %s)", r.Name, o.GetNamespace(), o.GetName(), c.AuthorizedParty)
					}
				}
			}
		}
	}
	if objects == 0 || len(seenTokens) == 0 {
		t.Fatalf("searched %d objects for %d tokens: nothing to prove", objects, len(seenTokens))
	}
	figures.Figure("API server: %d objects of %d resources searched (every Secret among them): no access token of the realm (%d other JWTs seen), none of the %d tokens read from the node",
		objects, resources, jwts, len(seenTokens))
}
