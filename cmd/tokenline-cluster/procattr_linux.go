//go:build linux

package main

import "syscall"

// childAttr puts the child in its own process group (a Ctrl-C at the
// terminal reaches the scenario only, which then kills its children) and has
// the kernel kill it if the scenario itself dies (kill -9, panic).
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
