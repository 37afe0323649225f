//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package natsserver

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// dirLock is an exclusive flock(2) held on DataDir/LOCK.
type dirLock struct {
	f *os.File
}

// lockDataDir takes the exclusive, non-blocking lock on dir/LOCK and writes
// the current pid into it. If another open file description already holds
// the lock (another process, or another Start in this process) it returns a
// *DataDirInUseError.
func lockDataDir(dir string) (*dirLock, error) {
	path := lockPath(dir)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("natsserver: open lock file: %w", err)
	}
	if err := flock(f, syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		pid := readPID(f)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &DataDirInUseError{DataDir: dir, LockFile: path, PID: pid}
		}
		return nil, fmt.Errorf("natsserver: lock %s: %w", path, err)
	}
	// We own the lock: record who we are for the next one who asks.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
		_ = f.Sync()
	}
	return &dirLock{f: f}, nil
}

// release drops the lock. The file is left in place: removing it would let
// a third process lock a fresh inode while a second one still waits on the
// old one.
func (l *dirLock) release() {
	if l == nil || l.f == nil {
		return
	}
	_ = flock(l.f, syscall.LOCK_UN)
	_ = l.f.Close()
	l.f = nil
}

// flock retries on EINTR, which a signal can cause even with LOCK_NB.
func flock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// readPID returns the pid recorded in the lock file, or 0 if it cannot be
// read (the holder may not have written it yet).
func readPID(f *os.File) int {
	buf := make([]byte, 32)
	n, _ := f.ReadAt(buf, 0)
	pid, err := strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}
