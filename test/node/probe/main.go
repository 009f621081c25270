// Command probe runs inside the test pods of test/node (statically linked, no shell, no libc).
// Each flag is one job, run in this order:
//
//	-whoami       asks the API server who the pod's service account is, through the `kubernetes`
//	              Service (KUBERNETES_SERVICE_HOST/PORT) with the mounted token and CA, and prints
//	              "whoami <username>" (or "whoami-error <reason>" and exits 1)
//	-get URL      GETs URL (plain HTTP) and prints "get <status code> <body>" (or "get-error <reason>"
//	              and exits 1): how a pod reaches a service on the host (Keycloak, MLflow)
//	-watch FILE   prints "seen <unix nanoseconds> <content>" at start and each time FILE's content
//	              changes (polled every -every), forever; the contents are test values, never secrets
//	-pause        waits for SIGTERM/SIGINT and reaps children: what a pod sandbox ("pause") does
//
// The same binary serves as the sandbox image for early tests, so the node needs no other image.
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

func main() {
	whoami := flag.Bool("whoami", false, "print the service account's username as the API server sees it")
	get := flag.String("get", "", "URL to GET once; prints the status and body")
	watch := flag.String("watch", "", "file to watch; prints each new content with a timestamp")
	every := flag.Duration("every", 10*time.Millisecond, "poll interval of -watch")
	pause := flag.Bool("pause", false, "wait for SIGTERM/SIGINT and reap children")
	flag.Parse()

	if *whoami {
		name, err := whoAmI()
		if err != nil {
			fmt.Printf("whoami-error %v\n", err)
			os.Exit(1)
		}
		fmt.Printf("whoami %s\n", name)
	}
	if *get != "" {
		status, body, err := httpGet(*get)
		if err != nil {
			fmt.Printf("get-error %v\n", err)
			os.Exit(1)
		}
		fmt.Printf("get %d %s\n", status, strconv.Quote(body))
	}
	if *watch != "" {
		watchFile(*watch, *every)
	}
	if *pause {
		waitAndReap()
	}
}

func whoAmI() (string, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return "", fmt.Errorf("KUBERNETES_SERVICE_HOST/PORT not set")
	}
	token, err := os.ReadFile(saDir + "/token")
	if err != nil {
		return "", err
	}
	caPEM, err := os.ReadFile(saDir + "/ca.crt")
	if err != nil {
		return "", err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return "", fmt.Errorf("no certificate in %s/ca.crt", saDir)
	}
	client := &http.Client{
		Timeout: 10 * time.Second,
		// Like client-go in a pod: the server certificate must name the Service VIP itself.
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	body := []byte(`{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}`)
	url := "https://" + net.JoinHostPort(host, port) + "/apis/authentication.k8s.io/v1/selfsubjectreviews"
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+string(bytes.TrimSpace(token)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(data))
	}
	var review struct {
		Status struct {
			UserInfo struct {
				Username string `json:"username"`
			} `json:"userInfo"`
		} `json:"status"`
	}
	if err := json.Unmarshal(data, &review); err != nil {
		return "", err
	}
	return review.Status.UserInfo.Username, nil
}

func httpGet(url string) (int, string, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, string(data), err
}

// watchFile polls rather than using inotify: the kubelet swaps a symlink (..data) in the volume's
// directory, and a 10 ms poll of a tmpfs file costs nothing and bounds the timestamp error.
func watchFile(path string, every time.Duration) {
	var last []byte
	first := true
	for {
		data, err := os.ReadFile(path)
		if err == nil && (first || !bytes.Equal(data, last)) {
			fmt.Printf("seen %s %s\n", strconv.FormatInt(time.Now().UnixNano(), 10), strconv.Quote(string(data)))
			last, first = data, false
		}
		time.Sleep(every)
	}
}

func waitAndReap() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
