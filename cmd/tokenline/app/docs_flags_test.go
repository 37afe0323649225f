package app

import (
	"context"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// docSection returns the part of doc from the heading to the next heading
// of the same or a higher level (outside code blocks).
func docSection(t *testing.T, doc, heading string) string {
	t.Helper()
	level := strings.Index(heading, " ") // "## " -> 2
	var out []string
	in, code := false, false
	for _, line := range strings.Split(doc, "\n") {
		if strings.HasPrefix(line, "```") {
			code = !code
		}
		if !code && strings.HasPrefix(line, "#") {
			n := strings.Index(line, " ")
			switch {
			case line == heading:
				in = true
			case in && n >= 1 && n <= level && strings.Trim(line[:n], "#") == "":
				return strings.Join(out, "\n")
			}
		}
		if in {
			out = append(out, line)
		}
	}
	if !in {
		t.Fatalf("no section %q", heading)
	}
	return strings.Join(out, "\n")
}

var (
	docFlagRe     = regexp.MustCompile("`(--[a-z0-9-]+)`")
	docDefaultsRe = regexp.MustCompile("^`[^`]*`(, `[^`]*`)*$")
)

// sameDefault compares a documented default with the flag's.
func sameDefault(f *pflag.Flag, doc string) bool {
	if f.Value.Type() == "duration" {
		d, err := time.ParseDuration(doc)
		return err == nil && d.String() == f.DefValue
	}
	return doc == f.DefValue
}

// TestFlagsDocumented keeps the flag tables of the documentation true to
// the commands: every flag of `tokenline serve` is named in README.md's
// Configuration table or docs/operations.md's webhook Settings table, every
// flag of `tokenline sandbox` in the sandbox's table of docs/operations.md;
// every flag a row starts with exists, and a default a row gives (as code,
// one per flag or one for all) is the flag's.
func TestFlagsDocumented(t *testing.T) {
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	readme, ops := read("../../../README.md"), read("../../../docs/operations.md")
	root := NewRootCommand(context.Background(), io.Discard, io.Discard)
	for _, c := range []struct {
		cmd    string
		tables []string
	}{
		{"serve", []string{docSection(t, readme, "## Configuration"), docSection(t, ops, "### Settings")}},
		{"sandbox", []string{docSection(t, ops, "## The sandbox as its own process")}},
	} {
		cmd, _, err := root.Find([]string{c.cmd})
		if err != nil || cmd.Name() != c.cmd {
			t.Fatalf("no command %s: %v", c.cmd, err)
		}
		fs := cmd.Flags()
		text := strings.Join(c.tables, "\n")
		rows := 0
		for _, line := range strings.Split(text, "\n") {
			if !strings.HasPrefix(line, "| `") {
				continue
			}
			cells := strings.Split(strings.Trim(line, "|"), " | ")
			if len(cells) < 3 {
				continue
			}
			var flags []*pflag.Flag
			for _, m := range docFlagRe.FindAllStringSubmatch(cells[0], -1) {
				f := fs.Lookup(strings.TrimPrefix(m[1], "--"))
				if f == nil {
					t.Errorf("%s: the docs name %s, which is no flag: %s", c.cmd, m[1], cells[0])
					continue
				}
				flags = append(flags, f)
			}
			rows++
			def := strings.TrimSpace(cells[1])
			if len(flags) == 0 || !docDefaultsRe.MatchString(def) {
				continue
			}
			defs := strings.Split(def, ", ")
			if len(defs) != 1 && len(defs) != len(flags) {
				t.Errorf("%s: %d defaults for %d flags: %s", c.cmd, len(defs), len(flags), line)
				continue
			}
			for i, f := range flags {
				d := strings.Trim(defs[min(i, len(defs)-1)], "`")
				if f.DefValue != "" && !sameDefault(f, d) {
					t.Errorf("%s --%s: documented default %q, the flag's is %q", c.cmd, f.Name, d, f.DefValue)
				}
			}
		}
		if rows == 0 {
			t.Errorf("%s: no flag table found", c.cmd)
		}
		fs.VisitAll(func(f *pflag.Flag) {
			if f.Name == "help" {
				return
			}
			if !regexp.MustCompile("`--" + regexp.QuoteMeta(f.Name) + "[` ]").MatchString(text) {
				t.Errorf("%s --%s (default %q) is not in its documentation table", c.cmd, f.Name, f.DefValue)
			}
		})
	}
}
