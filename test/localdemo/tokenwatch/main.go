// Command tokenwatch is the reader pod of `make run-local`: what a training job does with the
// operator's Secret, reduced to showing it. It reads the token file of the mounted Secret and
// prints one line (package tokenline: when it read it, a fingerprint, the expiry; never the token)
// at start and each time the file holds a new token, forever:
//
//	tokenwatch /var/run/secrets/mlflow/token
//
// It polls (every -every): the kubelet updates a Secret volume by swapping a symlink in the
// directory, and reading a small tmpfs file every 20 ms costs nothing and bounds how late a new
// token is noticed. Static, no shell: the image (hack/images.sh tokenwatch) holds only this binary.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/mlflow-token-operator/mlflow-token-operator/test/localdemo/tokenline"
)

func main() {
	every := flag.Duration("every", 20*time.Millisecond, "how often to read the file")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: tokenwatch [-every 20ms] TOKEN_FILE")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	path := flag.Arg(0)

	// PID 1 of its container: without handlers, SIGTERM would be ignored and the pod would take
	// its whole grace period to stop.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)

	var last []byte
	var lastErr string
	tick := time.NewTicker(*every)
	defer tick.Stop()
	for {
		token, err := os.ReadFile(path)
		switch {
		case err != nil:
			if err.Error() != lastErr { // once per distinct problem, not 50 times a second
				fmt.Printf("cannot read the token: %v\n", err)
				lastErr = err.Error()
			}
		case len(bytes.TrimSpace(token)) == 0:
			if lastErr != "empty" {
				fmt.Printf("%s is empty\n", path)
				lastErr = "empty"
			}
		case !bytes.Equal(token, last):
			fmt.Println(tokenline.Of(token, time.Now()).String())
			last, lastErr = token, ""
		}
		select {
		case <-stop:
			return
		case <-tick.C:
		}
	}
}
