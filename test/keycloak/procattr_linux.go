package keycloak

import "syscall"

// childProcAttr puts kc.sh in a process group of its own (Stop signals the group) and has the
// kernel send it SIGTERM when the thread that started it dies, so that a killed test leaves no
// Keycloak behind (kc.sh traps TERM and forwards it to the JVM).
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
