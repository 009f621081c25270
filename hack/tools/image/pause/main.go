// Command pause is the pod sandbox ("infra") container of the local test node, what Kubernetes'
// pause image does: it holds the pod's namespaces open by sleeping until SIGTERM or SIGINT (then
// exits 0), and, being PID 1 of the pod when the pod shares one PID namespace, reaps the
// children that other containers orphan, so they do not stay zombies.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		fmt.Println("pause (mlflow-token-operator local node)")
		return
	}
	// Buffered: signals that arrive while reaping are not lost (SIGCHLDs may merge into one,
	// which is why reap collects every exited child, not one per signal).
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range sigs {
		if sig == syscall.SIGCHLD {
			reap()
			continue
		}
		fmt.Fprintf(os.Stderr, "Shutting down, got signal: %s\n", sig)
		os.Exit(0)
	}
}

// reap waits for every child that has exited, without blocking on those still running.
func reap() {
	for {
		pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
	}
}
