package httpapi

import (
	"encoding/json"
	"io/fs"
	"strings"
	"testing"

	"github.com/tokenline/tokenline/domain"
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

// The UI's map of state-changing transitions is the domain table's.
func TestTransitionsJSONFollowsTheTable(t *testing.T) {
	var m map[string]string
	if err := json.Unmarshal([]byte(pageData{}.TransitionsJSON()), &m); err != nil {
		t.Fatal(err)
	}
	for _, st := range domain.States {
		for _, name := range domain.TransitionNames() {
			to, err := domain.Next(st, name)
			if err != nil || to == st {
				continue
			}
			if m[name] != string(to) {
				t.Errorf("%s from %s leads to %s, the UI says %q", name, st, to, m[name])
			}
		}
	}
	// tokens.invalidated changes the state only for a connection being
	// deleted while in use (to unauthenticated, where it otherwise stays).
	if m["connection.created"] != "unauthenticated" || m["connection.updated"] != "" || m["tokens.invalidated"] != "unauthenticated" {
		t.Fatalf("map %v", m)
	}
}
