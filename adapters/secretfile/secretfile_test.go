package secretfile

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestCreateThenRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "secret")
	if _, err := Read(path, "test file"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v, want fs.ErrNotExist", err)
	}
	if err := Create(path, []byte("s3cret-value\n"), "test file"); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v", fi.Mode(), err)
	}
	if di, _ := os.Stat(filepath.Dir(path)); di.Mode().Perm() != 0o700 {
		t.Fatalf("directory mode %v", di.Mode())
	}
	got, err := Read(path, "test file")
	if err != nil || string(got) != "s3cret-value\n" {
		t.Fatalf("Read: %q %v", got, err)
	}
	// An existing file wins over a later Create.
	if err := Create(path, []byte("other"), "test file"); err != nil {
		t.Fatal(err)
	}
	if got, _ := Read(path, "test file"); string(got) != "s3cret-value\n" {
		t.Fatalf("a second Create replaced the file: %q", got)
	}
}

func TestReadRefusesSharedOrOddFiles(t *testing.T) {
	dir := t.TempDir()
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644, 0o660} {
		path := filepath.Join(dir, fmt.Sprintf("f%o", mode))
		if err := os.WriteFile(path, []byte("s3cret-value"), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(path, mode) // past the umask
		_, err := Read(path, "test file")
		if err == nil || !strings.Contains(err.Error(), "chmod 600") || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("mode %o: %v", mode, err)
		}
	}
	if _, err := Read(dir, "test file"); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory: %v", err)
	}
}

// Processes that start together agree on one file: every racing Create
// succeeds and every Read afterwards returns the same contents.
func TestRacingCreatesAgree(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secret")
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			if err := Create(path, []byte(fmt.Sprintf("value-%d", i)), "test file"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	first, err := Read(path, "test file")
	if err != nil || !bytes.HasPrefix(first, []byte("value-")) {
		t.Fatalf("%q %v", first, err)
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".secret-*"))
	if len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}
