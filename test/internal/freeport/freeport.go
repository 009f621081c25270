// Package freeport picks free TCP ports for the test harnesses' servers (API server, etcd,
// Keycloak, MLflow, the node's components).
package freeport

import "net"

// On returns a TCP port that is free on host right now (the kernel's pick for port 0).
func On(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
