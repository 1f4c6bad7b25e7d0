//go:build !linux

package clusterrun

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }
