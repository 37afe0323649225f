package httpapi

import (
	"io/fs"
	"strings"
	"testing"
)

// The UI uses nothing from elsewhere: no CDN, fonts or remote scripts.
func TestUIAssetsAreSelfContained(t *testing.T) {
	err := fs.WalkDir(uiFS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(uiFS, path)
		if err != nil {
			return err
		}
		s := string(b)
		for _, bad := range []string{"http://", "https://", "//cdn", "innerHTML", "eval("} {
			if strings.Contains(s, bad) {
				t.Errorf("%s contains %q", path, bad)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
