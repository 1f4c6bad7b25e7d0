//go:build unix && !linux

package localaws

import "syscall"

// sysProcAttr puts the server in its own process group, so Stop can signal
// everything it started.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
