package domain_test

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/tokenline/tokenline/domain"
)

// update rewrites the generated sections of docs/transitions.md:
//
//	go test ./domain -run TestDocs -update
var update = flag.Bool("update", false, "rewrite the generated sections of docs/transitions.md")

const docsPath = "../docs/transitions.md"

// generatedSections are the parts of docs/transitions.md that the code owns.
// Everything outside the markers is written by hand and left alone.
func generatedSections() []struct{ begin, end, content string } {
	return []struct{ begin, end, content string }{
		{"<!-- BEGIN GENERATED REASONS -->", "<!-- END GENERATED REASONS -->", domain.ReasonsMarkdown()},
		{"<!-- BEGIN GENERATED TABLE -->", "<!-- END GENERATED TABLE -->", domain.TableMarkdown()},
	}
}

// splice returns doc with the text between begin and end replaced by
// content, and the text that was there.
func splice(doc, begin, end, content string) (out, old string, err error) {
	if strings.Count(doc, begin) != 1 || strings.Count(doc, end) != 1 {
		return "", "", fmt.Errorf("want exactly one %q and one %q", begin, end)
	}
	i := strings.Index(doc, begin) + len(begin)
	j := strings.Index(doc, end)
	if j < i {
		return "", "", fmt.Errorf("%q comes before %q", end, begin)
	}
	return doc[:i] + "\n" + content + doc[j:], doc[i:j], nil
}

func TestDocs(t *testing.T) {
	raw, err := os.ReadFile(docsPath)
	if err != nil {
		t.Fatalf("%v (the hand-written parts of the file must exist)", err)
	}
	doc := string(raw)
	for _, sec := range generatedSections() {
		out, old, err := splice(doc, sec.begin, sec.end, sec.content)
		if err != nil {
			t.Fatalf("%s: %v", docsPath, err)
		}
		if old != "\n"+sec.content && !*update {
			t.Errorf("%s: the section between %s and %s differs from the code; run\n\tgo test ./domain -run TestDocs -update\nhave:\n%s\nwant:\n%s", docsPath, sec.begin, sec.end, old, "\n"+sec.content)
		}
		doc = out
	}
	if *update && doc != string(raw) {
		if err := os.WriteFile(docsPath, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote %s", docsPath)
	}
	// The hand-written part explains every state.
	for _, st := range domain.States {
		if !strings.Contains(doc, "`"+string(st)+"`") {
			t.Errorf("%s does not mention state `%s`", docsPath, st)
		}
	}
}

func TestSplice(t *testing.T) {
	doc := "intro\n<!-- B -->\nold\n<!-- E -->\noutro\n"
	out, old, err := splice(doc, "<!-- B -->", "<!-- E -->", "new\n")
	if err != nil || out != "intro\n<!-- B -->\nnew\n<!-- E -->\noutro\n" || old != "\nold\n" {
		t.Errorf("splice = %q, %q, %v", out, old, err)
	}
	for _, bad := range []string{"no markers", "<!-- E --> <!-- B -->", "<!-- B --><!-- B --><!-- E -->"} {
		if _, _, err := splice(bad, "<!-- B -->", "<!-- E -->", "x"); err == nil {
			t.Errorf("splice(%q) accepted", bad)
		}
	}
}

// The generated tables list exactly what the code knows, so the documents
// generated from them are complete.
func TestTableMarkdownMatchesDocumentedTable(t *testing.T) {
	md := domain.TableMarkdown()
	lines := strings.Split(strings.TrimSuffix(md, "\n"), "\n")
	want := 0
	for trans, row := range documented {
		for from, to := range row {
			want++
			line := fmt.Sprintf("| `%s` | `%s` | `%s` |", trans, from, to)
			if !strings.Contains(md, line+"\n") {
				t.Errorf("TableMarkdown lacks %s", line)
			}
		}
	}
	// Header, separator and the connection.created row come first.
	if len(lines) != want+3 || !strings.HasPrefix(lines[2], "| `connection.created` |") {
		t.Errorf("TableMarkdown has %d lines, want %d:\n%s", len(lines), want+3, md)
	}
}

func TestReasonsMarkdownListsEveryReason(t *testing.T) {
	md := domain.ReasonsMarkdown()
	lines := strings.Split(strings.TrimSuffix(md, "\n"), "\n")
	if len(lines) != len(domain.Reasons)+2 {
		t.Fatalf("ReasonsMarkdown has %d lines, want %d", len(lines), len(domain.Reasons)+2)
	}
	seen := map[domain.Reason]bool{}
	for i, ri := range domain.Reasons {
		if !ri.Reason.Valid() || ri.Reason == domain.ReasonNone || seen[ri.Reason] {
			t.Errorf("reason %q is empty, invalid or listed twice", ri.Reason)
		}
		seen[ri.Reason] = true
		if ri.Meaning == "" || ri.UserText == "" {
			t.Errorf("reason %q is not documented", ri.Reason)
		}
		if want := fmt.Sprintf("| `%s` | %s | %s |", ri.Reason, ri.Meaning, ri.UserText); lines[i+2] != want {
			t.Errorf("line %d = %q, want %q", i+2, lines[i+2], want)
		}
		if info, ok := ri.Reason.Info(); !ok || info != ri {
			t.Errorf("Info(%q) = %v, %v", ri.Reason, info, ok)
		}
	}
	for _, r := range []domain.Reason{domain.ReasonNone, "logged_out", "Invalid_Grant"} {
		if r.Valid() {
			t.Errorf("Reason(%q).Valid() = true", r)
		}
		if _, ok := r.Info(); ok {
			t.Errorf("Reason(%q).Info() ok", r)
		}
	}
	// Every reason the domain can record is documented.
	for _, r := range []domain.Reason{
		domain.ReasonNeverAuthorised, domain.ReasonInvalidGrant, domain.ReasonInvalidClient,
		domain.ReasonUnauthorizedClient, domain.ReasonUnsupportedGrantType, domain.ReasonInvalidScope,
		domain.ReasonTokenEndpointRejected, domain.ReasonAccessTokenRejected, domain.ReasonAuthorisationDenied,
		domain.ReasonAuthorisationExpired, domain.ReasonRefreshRetriesExhausted, domain.ReasonConnectionDeleted,
	} {
		if !seen[r] {
			t.Errorf("reason %q is missing from Reasons", r)
		}
	}
}
