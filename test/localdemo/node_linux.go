//go:build linux

// The node mode: what a user of the operator sees, on this machine alone.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mlflow-token-operator/mlflow-token-operator/api/scheme"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/keycloak"
	"github.com/mlflow-token-operator/mlflow-token-operator/test/node"
)

// nodePreflight says in one line why no node can run here; nil when one can (once built).
func nodePreflight() error {
	if os.Geteuid() != 0 {
		return errors.New("not root: the node creates a network namespace, cgroups and mounts")
	}
	return node.HostPreflight()
}

func operatorProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}

func runNode(duration time.Duration) error {
	begin := commandStart()
	// The first Ctrl-C ends the watching and starts a careful cleanup (revocation, helm
	// uninstall); a second one skips to stopping Keycloak and the node, which removes everything.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	runCtx, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	hurry, hurryUp := context.WithCancel(context.Background())
	defer hurryUp()
	go func() {
		<-sigs
		say("Interrupted: cleaning up (Ctrl-C again to skip the revocation and helm uninstall)")
		stopRun()
		<-sigs
		say("Interrupted again: stopping Keycloak and the node now")
		hurryUp()
	}()

	d, err := newDemo()
	if err != nil {
		return err
	}
	err = d.up(runCtx, begin)
	var seen watchResult
	if err == nil {
		seen, err = d.watch(runCtx, duration, begin)
	}
	interrupted := runCtx.Err() != nil
	if err != nil && !interrupted {
		say("Failed: %v", err)
	}
	stopRun()
	downErr := d.down(hurry, err == nil || interrupted)
	if err != nil && !interrupted {
		return errors.Join(errors.New("failed (the error is above)"), downErr)
	}
	if downErr != nil {
		return downErr
	}
	if duration > 0 && !interrupted && seen.rotations < 2 {
		return fmt.Errorf("the pod read %d rotated tokens in %s, want at least 2", seen.rotations, duration)
	}
	return nil
}

// demo is one run of the node mode and everything it started, for the teardown.
type demo struct {
	logDir  string
	version string
	kcDone  chan struct{}
	kc      *keycloak.Server
	kcErr   error
	n       *node.Node
	fwd     *forwarder
	objects // the API client, Keycloak's URL as pods reach it, the Secret's watch
	// keycloakAddr is where Keycloak itself listens: 127.0.0.1:keycloakPort, unless taken.
	keycloakAddr string
	bg           context.Context // lives until the teardown is done: watches and log copies
	stopBg       context.CancelFunc
	helmUp       bool
}

func newDemo() (*demo, error) {
	v, err := os.ReadFile("VERSION")
	if err != nil {
		return nil, fmt.Errorf("run from the repository's root (make run-local): %w", err)
	}
	logDir, _ := filepath.Abs(filepath.Join(localDir, "logs"))
	if err := os.RemoveAll(localDir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, err
	}
	d := &demo{logDir: logDir, version: strings.TrimSpace(string(v)), kcDone: make(chan struct{})}
	d.bg, d.stopBg = context.WithCancel(context.Background())
	return d, nil
}

func (d *demo) image(name string) node.Image {
	ref := "localhost/mlflow-token-operator/" + name + ":v" + d.version
	if name == "operator" {
		ref = "ghcr.io/mlflow-token-operator/mlflow-token-operator:v" + d.version // the chart's default
	}
	return node.Image{Path: filepath.Join("bin", "images", name+".tar"), Ref: ref}
}

// up starts everything until the reader pod runs. Keycloak is the slowest part, so it starts
// first, on 127.0.0.1, while the node starts; pods reach it through a forwarder on the node's
// host address once the node is up.
func (d *demo) up(ctx context.Context, begin time.Time) error {
	realmFile, err := demoRealm()
	if err != nil {
		close(d.kcDone)
		return err
	}
	say("Starting Keycloak (realm %s from %s, client %s, tokens live %s) and, meanwhile, a node", realm, realmPath, clientID, tokenLifetime)
	// Pods use the forwarder's port, always keycloakPort: Keycloak's own may be any (another run on
	// this machine may hold keycloakPort on loopback).
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", keycloakPort))
	if err != nil {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		close(d.kcDone)
		return err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	d.keycloakAddr = fmt.Sprintf("127.0.0.1:%d", port)
	go func() {
		defer close(d.kcDone)
		d.kc, d.kcErr = keycloak.Start(ctx, keycloak.Options{
			Home: keycloak.HomeFromEnv(), Host: "127.0.0.1", Port: port,
			RealmFiles: []string{realmFile}, LogFile: filepath.Join(d.logDir, "keycloak.log"),
		})
	}()

	binDir, _ := filepath.Abs(filepath.Join("bin", "k8s"))
	n, err := node.Start(ctx, node.Options{
		BinDir: binDir, SandboxImage: d.image("pause"), Images: []node.Image{d.image("operator"), d.image("tokenwatch")},
		LogDir: d.logDir, KeepSignals: true,
	})
	if err != nil {
		return fmt.Errorf("starting the node: %w", err)
	}
	d.n = n
	if d.c, err = client.New(n.RESTConfig(), client.Options{Scheme: scheme.New()}); err != nil {
		return err
	}
	say("Node %s Ready %s after the command started: a real kubelet, containerd and control plane (KUBECONFIG=%s)", n.Name(), since(begin), n.Kubeconfig())

	// Keycloak's `iss` is the URL a request used: everyone (operator, issuer check, this program's
	// revocation check) uses this one.
	d.kcURL = fmt.Sprintf("http://%s:%d", n.HostIP(), keycloakPort)
	if d.fwd, err = forward(fmt.Sprintf("%s:%d", n.HostIP(), keycloakPort), d.keycloakAddr); err != nil {
		return fmt.Errorf("forwarding %s to Keycloak: %w", d.kcURL, err)
	}
	if err := d.installOperator(ctx); err != nil {
		return err
	}
	if err := d.prepareNamespaces(ctx); err != nil {
		return err
	}

	select {
	case <-d.kcDone:
	case <-ctx.Done():
		return ctx.Err()
	}
	if d.kcErr != nil {
		return fmt.Errorf("starting Keycloak: %w", d.kcErr)
	}
	say("Keycloak ready %s after the command started: pods reach it at %s, you at %s (admin console: admin/admin)", since(begin), d.kcURL, d.kc.URL())

	d.secrets = watchSecret(d.bg, d.n.Client(), demoNS, secretName)
	if err := d.createIssuerAndToken(ctx); err != nil {
		return err
	}
	return d.startReader(ctx)
}

// down removes everything: with careful, first the MLflowAccessToken (the operator revokes its
// token; checked with Keycloak) and the Helm release, as a user would; then, always, Keycloak and
// the node (which takes every pod, mount, address and file of the node with it).
func (d *demo) down(ctx context.Context, careful bool) error {
	var errs []error
	if careful && d.tokenSet {
		errs = append(errs, d.deleteToken(ctx))
	}
	if careful && d.helmUp && ctx.Err() == nil {
		errs = append(errs, d.uninstallOperator(ctx))
	}
	if ctx.Err() != nil {
		errs = nil // asked to hurry: what was cut short is no failure, the node's removal below is what counts
	}
	if d.fwd != nil {
		d.fwd.Close()
	}
	select {
	case <-d.kcDone:
	default:
		say("Stopping Keycloak, which was still starting")
		<-d.kcDone // Start stops it once its context ends
	}
	if d.kc != nil {
		d.kc.Close()
		say("Keycloak stopped")
	}
	d.stopBg()
	if d.n != nil {
		if err := d.n.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stopping the node: %w", err))
		}
	}
	say("Logs of this run: %s", d.logDir)
	return errors.Join(errs...)
}
