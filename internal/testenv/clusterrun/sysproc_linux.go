//go:build linux

package clusterrun

import "syscall"

// sysProcAttr asks the kernel to kill a node if the thread that started it
// dies, so a killed test binary does not leave nodes behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
