// Package secretfile reads and creates the files that hold tokenline's
// secrets on local disk: the vault key, the checkpoint signing key, the NATS
// identities' nkey seeds and the API token.
//
// A secret file must be a regular file that neither group nor others may
// access (mode & 0o077 == 0): Read refuses anything else and says how to fix
// it. Create writes a new file with mode 0600 (its directory 0700 if
// missing) under a temporary name, syncs it and links it into place, so two
// processes starting at once agree on one file and no reader ever sees a
// half-written one. Neither ever puts a file's contents in an error.
package secretfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Read returns the contents of the secret file at path, described as what
// in errors ("vault key file"). A missing file gives an error wrapping
// fs.ErrNotExist. The caller should clear the returned slice when done.
func Read(path, what string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s %s is not a regular file", what, path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s %s has mode %04o and is accessible to group or others; run: chmod 600 %s", what, path, perm, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return data, nil
}

// Create writes data to a new secret file at path (mode 0600), unless a
// file appeared there meanwhile: then that one wins and Create returns nil
// (read it back with Read).
func Create(path string, data []byte, what string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s directory: %w", what, err)
	}
	tmp, err := os.CreateTemp(dir, ".secret-*") // mode 0600
	if err != nil {
		return fmt.Errorf("create %s: %w", what, err)
	}
	defer os.Remove(tmp.Name())
	err = tmp.Chmod(0o600)
	if err == nil {
		_, err = tmp.Write(data)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", what, err)
	}
	// Link fails if path exists: exactly one of several racing creators wins.
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create %s: %w", what, err)
	}
	if d, err := os.Open(dir); err == nil { // make the new name durable
		_ = d.Sync()
		d.Close()
	}
	return nil
}
