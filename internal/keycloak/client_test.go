package keycloak

// These tests use an httptest server for what a real Keycloak cannot be made to do: garbage
// bodies, hangs, huge responses. Real Keycloak behaviour is tested in test/integration.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/Nerzal/gocloak/v13"
)

func jwtWith(claims map[string]any) string {
	b, _ := json.Marshal(claims)
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc(b) + ".sig"
}

func serve(t *testing.T, h http.HandlerFunc) Endpoint {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return Endpoint{URL: srv.URL, Realm: "mlflow"}
}

func jsonReply(code int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = w.Write([]byte(body))
	}
}

var creds = ClientAuth{ClientID: "mlflow-operator", Secret: "p%+&=s ecret"}

func TestClientCredentialsSendsFormCredentials(t *testing.T) {
	ep := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/realms/mlflow/protocol/openid-connect/token" {
			t.Errorf("path %s", r.URL.Path)
		}
		if r.Header.Get("Authorization") != "" {
			t.Error("credentials sent in an Authorization header; they must travel in the form body")
		}
		_ = r.ParseForm()
		if r.PostForm.Get("client_secret") != creds.Secret || r.PostForm.Get("client_id") != creds.ClientID ||
			r.PostForm.Get("grant_type") != "client_credentials" || r.PostForm.Get("scope") != "openid profile" {
			t.Errorf("form = %v", r.PostForm)
		}
		jsonReply(200, `{"access_token":"`+jwtWith(map[string]any{"azp": "x"})+`","expires_in":300,"token_type":"Bearer","scope":"openid profile"}`)(w, r)
	})
	tok, err := NewGoCloak(Options{}).Token(context.Background(), ep, creds, Grant{Type: GrantClientCredentials, Scopes: []string{"openid", "profile"}})
	if err != nil {
		t.Fatal(err)
	}
	if tok.ExpiresIn != 300*time.Second || tok.Scope != "openid profile" {
		t.Errorf("token = %+v", tok)
	}
}

func TestClassification(t *testing.T) {
	tests := []struct {
		name    string
		h       http.HandlerFunc
		want    Reason
		wantMsg string
	}{
		{"bad secret", jsonReply(401, `{"error":"unauthorized_client","error_description":"Invalid client or Invalid client credentials"}`), ReasonInvalidClientCredentials, "rejected the client ID or secret"},
		{"invalid_client", jsonReply(401, `{"error":"invalid_client","error_description":"Invalid client credentials"}`), ReasonInvalidClientCredentials, "rejected"},
		{"no service account", jsonReply(401, `{"error":"unauthorized_client","error_description":"Client not enabled to retrieve service account"}`), ReasonUnauthorizedClient, "Service accounts"},
		{"bad scope", jsonReply(400, `{"error":"invalid_scope","error_description":"Invalid scopes: nope"}`), ReasonInvalidScope, "scopes"},
		{"realm missing", jsonReply(404, `{"error":"Realm does not exist"}`), ReasonRealmNotFound, "realm does not exist"},
		{"server error", jsonReply(503, `{}`), ReasonServerError, "503"},
		{"html error page", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(502)
			_, _ = w.Write([]byte("<html><body>Bad Gateway</body></html>"))
		}, ReasonServerError, "502"},
		{"truncated json", jsonReply(200, `{"access_token":"abc","expires_in":3`), ReasonInvalidResponse, ""},
		{"no access token", jsonReply(200, `{"expires_in":300}`), ReasonInvalidResponse, "no access_token"},
		{"expires_in missing", jsonReply(200, `{"access_token":"a.b.c"}`), ReasonInvalidResponse, "expires_in"},
		{"expires_in negative", jsonReply(200, `{"access_token":"a.b.c","expires_in":-5}`), ReasonInvalidResponse, "expires_in"},
		{"expires_in huge", jsonReply(200, `{"access_token":"a.b.c","expires_in":99999999999}`), ReasonInvalidResponse, "expires_in"},
		{"expires_in overflowing a Duration", jsonReply(200, `{"access_token":"a.b.c","expires_in":1099511627776}`), ReasonInvalidResponse, "expires_in"},
		{"opaque access token", jsonReply(200, `{"access_token":"opaque","expires_in":60}`), ReasonInvalidResponse, "not a JWT"},
		{"wrong token type", jsonReply(200, `{"access_token":"a.b.c","expires_in":60,"token_type":"mac"}`), ReasonInvalidResponse, "Bearer"},
		{"10 MB body", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"access_token":"` + strings.Repeat("a", 10<<20) + `","expires_in":60}`))
		}, ReasonInvalidResponse, "size limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewGoCloak(Options{}).Token(context.Background(), serve(t, tt.h), creds, Grant{Type: GrantClientCredentials})
			if err == nil {
				t.Fatal("no error")
			}
			if got := ReasonOf(err); got != tt.want {
				t.Errorf("reason = %s, want %s (%v)", got, tt.want, err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("message %q lacks %q", err.Error(), tt.wantMsg)
			}
			if strings.Contains(err.Error(), creds.Secret) {
				t.Errorf("message leaks the client secret: %q", err.Error())
			}
		})
	}
}

func TestTimeoutAndUnreachable(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	slow := serve(t, func(w http.ResponseWriter, r *http.Request) { <-block })
	start := time.Now()
	_, err := NewGoCloak(Options{Timeout: 300 * time.Millisecond}).Token(context.Background(), slow, creds, Grant{Type: GrantClientCredentials})
	if ReasonOf(err) != ReasonTimeout {
		t.Errorf("slow server: reason %s (%v)", ReasonOf(err), err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("timeout not honoured: %s", time.Since(start))
	}

	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	_, err = NewGoCloak(Options{}).Token(context.Background(), Endpoint{URL: "http://" + addr, Realm: "r"}, creds, Grant{Type: GrantClientCredentials})
	if ReasonOf(err) != ReasonUnreachable || !strings.Contains(err.Error(), "refused") {
		t.Errorf("closed port: reason %s (%v)", ReasonOf(err), err)
	}

	reset := serve(t, func(w http.ResponseWriter, r *http.Request) {
		hj, _ := w.(http.Hijacker)
		c, _, _ := hj.Hijack()
		c.Close()
	})
	_, err = NewGoCloak(Options{}).Token(context.Background(), reset, creds, Grant{Type: GrantClientCredentials})
	if ReasonOf(err) != ReasonUnreachable {
		t.Errorf("connection reset: reason %s (%v)", ReasonOf(err), err)
	}
}

// FuzzTokenResponse feeds arbitrary token endpoint bodies through the same decoding the client
// uses (encoding/json into gocloak.JWT, then tokenFrom): never a panic, and an accepted token
// always has an access token and a sane lifetime.
func FuzzTokenResponse(f *testing.F) {
	f.Add([]byte(`{"access_token":"a.b.c","expires_in":300,"token_type":"Bearer","refresh_expires_in":1800,"refresh_token":"r"}`))
	f.Add([]byte(`{"access_token":"a.b.c","expires_in":-1}`))
	f.Add([]byte(`{"access_token":"","expires_in":1e30}`))
	f.Add([]byte(`<html>`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var j gocloak.JWT
		if json.Unmarshal(body, &j) != nil {
			return
		}
		tok, err := tokenFrom(&j)
		if err != nil {
			if ReasonOf(err) != ReasonInvalidResponse {
				t.Fatalf("unexpected reason %s", ReasonOf(err))
			}
			return
		}
		if tok.AccessToken == "" || tok.ExpiresIn <= 0 || tok.ExpiresIn > maxExpiresIn || tok.RefreshExpiresIn < 0 {
			t.Fatalf("accepted a bad token response: %+v", tok)
		}
	})
}

func TestDiscover(t *testing.T) {
	ep := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/realms/mlflow/.well-known/openid-configuration" {
			http.NotFound(w, r)
			return
		}
		jsonReply(200, `{"issuer":"https://kc.example.com/realms/mlflow","token_endpoint":"https://kc.example.com/realms/mlflow/protocol/openid-connect/token"}`)(w, r)
	})
	iss, err := NewGoCloak(Options{}).Discover(context.Background(), ep)
	if err != nil || iss != "https://kc.example.com/realms/mlflow" {
		t.Fatalf("Discover = %q, %v", iss, err)
	}
	_, err = NewGoCloak(Options{}).Discover(context.Background(), Endpoint{URL: ep.URL, Realm: "nope"})
	if ReasonOf(err) != ReasonRealmNotFound {
		t.Errorf("unknown realm: %s (%v)", ReasonOf(err), err)
	}
	html := serve(t, func(w http.ResponseWriter, r *http.Request) { jsonReply(200, `{"hello":"world"}`)(w, r) })
	if _, err := NewGoCloak(Options{}).Discover(context.Background(), html); ReasonOf(err) != ReasonInvalidResponse {
		t.Errorf("not a discovery document: %s (%v)", ReasonOf(err), err)
	}
}
