//go:build !linux

package zkserver

import "syscall"

// sysProcAttr returns nil: outside Linux there is no parent-death signal, so
// a JVM outlives a Go process that dies without calling Close.
func sysProcAttr() *syscall.SysProcAttr { return nil }
