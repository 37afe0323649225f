//go:build !linux

package main

import "syscall"

// childAttr puts the child in its own process group. Without Linux's
// Pdeathsig, children outlive a scenario that is itself killed with -9.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
