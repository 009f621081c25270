package testenv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Files of the service-account issuer set-up, in the API server's certificate directory.
// apiserver.crt/apiserver.key are the names kube-apiserver looks for in --cert-dir, and envtest
// generates its own serving certificate (and service-account keys) only when apiserver.crt is
// missing: writing them first is how the CA becomes known before the API server starts, so that
// Keycloak (which reads its truststore once, at start) can start at the same time.
const (
	servingCertFile   = "apiserver.crt"
	servingKeyFile    = "apiserver.key"
	issuerCAFile      = "issuer-ca.crt"
	saSigningKeyFile  = "sa-signing.key"
	saPublicKeysFile  = "sa-public-keys.pem"
	issuerDiscoveryCR = "system:service-account-issuer-discovery"
	// IssuerDiscoveryBinding is the ClusterRoleBinding that lets anonymous clients (Keycloak)
	// read the issuer's discovery document and JWKS.
	IssuerDiscoveryBinding = "service-account-issuer-discovery-unauthenticated"
)

// issuer is the API server's service-account issuer set-up (Options.ServiceAccountIssuer).
type issuer struct {
	dir     string // certificate directory of the API server
	tempDir bool   // dir was created by Start and is removed by Stop
	url     string // https://127.0.0.1:PORT, the API server's own URL
	caPEM   []byte
}

// prepareIssuer writes a serving certificate for 127.0.0.1 signed by a fresh CA and a
// service-account signing key into dir, and configures api to serve OIDC discovery for the issuer
// https://127.0.0.1:PORT (a port picked now, so the issuer URL is known before the start).
func prepareIssuer(api *envtest.APIServer, dir string) (_ *issuer, err error) {
	iss := &issuer{dir: dir}
	if dir == "" {
		d, err := os.MkdirTemp("", "testenv-apiserver-")
		if err != nil {
			return nil, err
		}
		iss.dir, iss.tempDir = d, true
		defer func() {
			if err != nil {
				os.RemoveAll(d)
			}
		}()
	}
	port, err := freeLoopbackPort()
	if err != nil {
		return nil, err
	}
	// The port is picked before the start because the issuer URL goes into the API server's
	// flags (and into Keycloak's configuration in the tests); envtest would otherwise pick one
	// itself, the same way, with the same small race.
	hostPort := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	iss.url = "https://" + hostPort
	if iss.caPEM, err = writeServingCert(iss.dir); err != nil {
		return nil, err
	}
	if _, err := addServiceAccountSigningKey(iss.dir); err != nil {
		return nil, err
	}

	api.CertDir = iss.dir
	api.SecureServing.ListenAddr = envtest.ListenAddr{Address: "127.0.0.1", Port: strconv.Itoa(port)}
	// envtest hands this CA to every rest.Config it makes (it only sets it itself when it
	// generates the serving certificate).
	api.SecureServing.CA = iss.caPEM
	args := api.Configure()
	// envtest's default issuer is the URL with a trailing slash, "https://127.0.0.1:PORT/";
	// relying parties append "/.well-known/openid-configuration" to the issuer, and Keycloak
	// compares `iss` verbatim: use the form without the slash.
	args.Set("service-account-issuer", iss.url)
	// Without it kube-apiserver advertises https://<external address>/openid/v1/jwks, the
	// machine's first non-loopback address, not the loopback address the issuer is served on.
	args.Set("service-account-jwks-uri", iss.url+"/openid/v1/jwks")
	args.Set("service-account-signing-key-file", filepath.Join(iss.dir, saSigningKeyFile))
	args.Set("service-account-key-file", filepath.Join(iss.dir, saPublicKeysFile))
	return iss, nil
}

// CAFile is the PEM file of the CA that signed the API server's serving certificate.
func (i *issuer) CAFile() string { return filepath.Join(i.dir, issuerCAFile) }

// addServiceAccountSigningKey makes a new RSA key the API server's service-account signing key
// (certDir/sa-signing.key) and appends its public key to the verification keys
// (certDir/sa-public-keys.pem), so tokens signed with earlier keys stay valid: the key rotation
// Kubernetes documents. It takes effect at the API server's next start and returns the new key's
// number among the verification keys (1 for the first).
func addServiceAccountSigningKey(certDir string) (int, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return 0, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return 0, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return 0, err
	}
	if err := os.WriteFile(filepath.Join(certDir, saSigningKeyFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return 0, err
	}
	pubPath := filepath.Join(certDir, saPublicKeysFile)
	old, err := os.ReadFile(pubPath)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, err
	}
	all := append(old, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})...)
	if err := os.WriteFile(pubPath, all, 0o600); err != nil {
		return 0, err
	}
	return strings.Count(string(all), "BEGIN PUBLIC KEY"), nil
}

func writeServingCert(dir string) ([]byte, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: "testenv API server CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano() + 1), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour),
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	for name, data := range map[string][]byte{
		servingCertFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		servingKeyFile:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		issuerCAFile:    caPEM,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return nil, err
		}
	}
	return caPEM, nil
}

// allowAnonymousDiscovery binds the built-in ClusterRole system:service-account-issuer-discovery
// to system:unauthenticated (Kubernetes binds it to service accounts only), then waits until an
// anonymous client that trusts only the API server's CA reads the discovery document and the
// JWKS: the authorizer picks up new bindings from an informer, a moment later.
func (i *issuer) allowAnonymousDiscovery(ctx context.Context, cfg *rest.Config) error {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: IssuerDiscoveryBinding},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: issuerDiscoveryCR},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: "system:unauthenticated"}},
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("binding %s to system:unauthenticated: %w", issuerDiscoveryCR, err)
	}
	return WaitForIssuerDiscovery(ctx, i.url, i.caPEM, 30*time.Second)
}

// WaitForIssuerDiscovery polls, without credentials, issuerURL's discovery document and the JWKS
// it names until both answer 200 (or timeout passes).
func WaitForIssuerDiscovery(ctx context.Context, issuerURL string, caPEM []byte, timeout time.Duration) error {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return errors.New("issuer CA: no certificate in PEM")
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		status, body, err := getURL(ctx, hc, issuerURL+"/.well-known/openid-configuration")
		if err == nil && status == http.StatusOK {
			status, body, err = getURL(ctx, hc, issuerURL+"/openid/v1/jwks")
			if err == nil && status == http.StatusOK {
				return nil
			}
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("HTTP %d: %.200s", status, body)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("issuer %s: anonymous discovery not served within %s; last answer: %s", issuerURL, timeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func getURL(ctx context.Context, hc *http.Client, u string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, b, nil
}

func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("picking a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
