//go:build linux

package zkserver

import "syscall"

// sysProcAttr puts a server's JVM in its own process group, so a terminal's
// Ctrl-C reaches only the Go program (which then stops the JVM through
// Close), and has the kernel SIGKILL it when the Go process dies, so a
// crashed test or shell leaves no java behind. (Pdeathsig fires when the OS
// thread that forked the JVM exits. The Go runtime ends a thread only when a
// goroutine locked to it exits, so do not start or restart servers from a
// goroutine that calls runtime.LockOSThread and exits without unlocking.)
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
