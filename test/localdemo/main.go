// Command localdemo is what `make run-local` runs (hack/run-local.sh builds it and everything it
// needs). Two modes:
//
//   - node (the default): a real single-node Kubernetes cluster on this machine (package
//     test/node: containerd, kubelet, the control plane), the operator installed by its Helm
//     chart from the locally built image, a local Keycloak (12-second tokens), a
//     ClusterKeycloakIssuer and an MLflowAccessToken, and a pod that mounts the token's Secret
//     and prints a fingerprint of each token as it arrives. Each rotation is shown with how long
//     after the operator wrote the Secret the pod read it. Needs Linux, root and the Debian
//     packages containerd, runc, containernetworking-plugins and iptables.
//   - envtest (-envtest; hack/run-local.sh picks it where no node can run): a local API server
//     (etcd + kube-apiserver), the operator binary on the host, the same Keycloak, and the Secret
//     rotating.
//
// Both run until Ctrl-C (or -duration), then delete the MLflowAccessToken, check that the
// operator revoked its token, and remove everything. `localdemo -preflight` prints why no node
// can run here (exit status 3), or nothing (0).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"
)

const (
	// Keycloak listens here in both modes (the admin console: admin/admin); the envtest sample
	// points at it.
	keycloakPort = 18080
	// The realm fixture's confidential client (service accounts on).
	clientID     = "mlflow-operator"
	clientSecret = "mlflowOperatorTestSecret0001"
	realm        = "mlflow"
	realmPath    = "test/keycloak/realm-mlflow.json"
	// tokenLifetime replaces the fixture's 12 s: a new token every 10 s, and the shortest life
	// whose renewal leaves a nudged pod the 5 s the operator allows it (it would report
	// DeliveryAtRisk for 12 s).
	tokenLifetime = 15 * time.Second
	// Everything a run writes (kubeconfig, logs), replaced by the next run.
	localDir = "bin/local"
)

func main() {
	duration := flag.Duration("duration", 0, "Stop after watching this long (0: run until Ctrl-C). With a duration, exit non-zero unless the token rotated at least twice (in node mode: reached the pod twice).")
	envtestMode := flag.Bool("envtest", false, "Run the operator on the host against a local API server instead of in a pod on a local node.")
	preflight := flag.Bool("preflight", false, "Print why no node can run on this machine and exit 3, or exit 0 when one can.")
	managerBin := flag.String("manager", "bin/manager", "The operator binary (envtest mode).")
	flag.Parse()

	if *preflight {
		if err := nodePreflight(); err != nil {
			fmt.Println(err)
			os.Exit(3)
		}
		return
	}
	var err error
	if *envtestMode {
		err = runEnvtest(*duration, *managerBin)
	} else {
		err = runNode(*duration)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "localdemo:", err)
		os.Exit(1)
	}
}

func say(format string, args ...any) {
	fmt.Printf("%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// commandStart is when `make run-local` started (hack/run-local.sh exports it, in Unix seconds,
// so that the times printed include its build checks), else now.
func commandStart() time.Time {
	if s, err := strconv.ParseInt(os.Getenv("RUN_LOCAL_STARTED"), 10, 64); err == nil {
		if t := time.Unix(s, 0); time.Since(t) >= 0 && time.Since(t) < time.Hour {
			return t
		}
	}
	return time.Now()
}

// since formats the time since t for progress lines.
func since(t time.Time) string { return fmt.Sprintf("%.1f s", time.Since(t).Seconds()) }

// delayStats is "min a, median b, max c" of the delays, in seconds.
func delayStats(d []time.Duration) string {
	if len(d) == 0 {
		return "none"
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return fmt.Sprintf("min %.2f s, median %.2f s, max %.2f s", s[0].Seconds(), s[len(s)/2].Seconds(), s[len(s)-1].Seconds())
}

// demoRealm writes the realm fixture, with the client's tokens living tokenLifetime, into
// localDir and returns its path.
func demoRealm() (string, error) {
	data, err := os.ReadFile(realmPath)
	if err != nil {
		return "", err
	}
	var r struct {
		Clients []map[string]any `json:"clients"`
	}
	var all map[string]any
	if err := json.Unmarshal(data, &all); err != nil {
		return "", fmt.Errorf("%s: %w", realmPath, err)
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return "", fmt.Errorf("%s: %w", realmPath, err)
	}
	found := false
	for _, c := range r.Clients {
		if c["clientId"] == clientID {
			attrs, _ := c["attributes"].(map[string]any)
			if attrs == nil {
				attrs = map[string]any{}
				c["attributes"] = attrs
			}
			attrs["access.token.lifespan"] = strconv.Itoa(int(tokenLifetime.Seconds()))
			found = true
		}
	}
	if !found {
		return "", fmt.Errorf("%s has no client %s", realmPath, clientID)
	}
	all["clients"] = r.Clients
	out, err := json.Marshal(all)
	if err != nil {
		return "", err
	}
	path := filepath.Join(localDir, filepath.Base(realmPath))
	if err := os.MkdirAll(localDir, 0o755); err != nil {
		return "", err
	}
	return path, os.WriteFile(path, out, 0o644)
}
