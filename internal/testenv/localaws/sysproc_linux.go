//go:build linux

package localaws

import "syscall"

// sysProcAttr puts the server in its own process group, so Stop can signal
// everything it started, and asks the kernel to kill it if the starting thread
// dies (a killed test binary does not leave servers behind).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
