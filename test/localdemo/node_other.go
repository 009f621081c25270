//go:build !linux

package main

import (
	"errors"
	"runtime"
	"syscall"
	"time"
)

// nodePreflight: the node runs containerd, runc and the kubelet, which need Linux.
func nodePreflight() error {
	return errors.New("not Linux (" + runtime.GOOS + "): the node runs containerd and the kubelet")
}

func runNode(time.Duration) error {
	return errors.Join(nodePreflight(), errors.New("run with -envtest"))
}

func operatorProcAttr() *syscall.SysProcAttr { return nil }
