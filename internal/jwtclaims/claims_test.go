package jwtclaims

import (
	"encoding/base64"
	"encoding/json"
	"testing"
)

func jwtWith(claims map[string]any) string {
	b, _ := json.Marshal(claims)
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc(b) + ".sig"
}

func TestParse(t *testing.T) {
	c, err := Parse(jwtWith(map[string]any{
		"jti": "id1", "iss": "http://127.0.0.1/realms/mlflow", "sub": "s", "preferred_username": "service-account-x",
		"email": "x@example.com", "azp": "x", "aud": "mlflow", "scope": "profile", "groups": []string{"g"}, "exp": 1800000000, "iat": 1799999700,
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.ID != "id1" || c.AuthorizedParty != "x" || len(c.Audience) != 1 || c.Audience[0] != "mlflow" ||
		c.ExpiresAt.Unix() != 1800000000 || c.IssuedAt.Unix() != 1799999700 || c.Groups[0] != "g" || c.Email != "x@example.com" {
		t.Errorf("claims = %+v", c)
	}
	c, err = Parse(jwtWith(map[string]any{"aud": []string{"a", "b"}}))
	if err != nil || len(c.Audience) != 2 {
		t.Errorf("aud list: %+v %v", c, err)
	}
	for _, bad := range []string{"", "opaque-token", "a.b", "a.!!!.c", "a." + base64.RawURLEncoding.EncodeToString([]byte("[1]")) + ".c"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(jwtWith(map[string]any{"aud": "x", "exp": 1}))
	f.Add(jwtWith(map[string]any{"aud": []any{"x", 1}, "exp": "soon"}))
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Parse(s)
		if err == nil && c == nil {
			t.Fatal("nil claims without error")
		}
	})
}
