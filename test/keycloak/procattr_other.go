//go:build !linux

package keycloak

import "syscall"

// childProcAttr puts kc.sh in a process group of its own (Stop signals the group). There is no
// parent-death signal outside Linux: a killed program leaves its Keycloak running.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
