//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package natsserver

import (
	"fmt"
	"runtime"
)

type dirLock struct{}

// lockDataDir refuses to run where flock(2) is unavailable: without the lock
// two servers could share one store and corrupt it.
func lockDataDir(dir string) (*dirLock, error) {
	return nil, fmt.Errorf("natsserver: data dir locking is not supported on %s; cannot safely use %s", runtime.GOOS, dir)
}

func (l *dirLock) release() {}
