//go:build unix

package tests

// TestREADME runs every command of README.md's ```sh and ```bash blocks the
// way a user pasting them would, against a real `tokenline serve`; the Go
// snippet under "Go integrations" is compiled here (readmeGoIntegration).
//
// How a README command is run:
//
//   - README.md is read when the test runs; its blocks are run in order,
//     one command line at a time, each with `bash -c` in one temporary
//     working directory (where serve keeps ./tokenline-data, as in the
//     README), with PATH starting with the binaries the test built.
//   - `go run ./PKG` is replaced by the binary built from ./PKG (`go build`
//     in the module root, once, before anything runs): `go run` needs the
//     module root as its working directory, and the README's commands need
//     serve's directory.
//   - Addresses: serve is the README's own serve line, started first (it is
//     in readmeCases with server set) with TOKENLINE_HTTP=127.0.0.1:0 and
//     TOKENLINE_NATS_LISTEN=127.0.0.1:0 in its environment (in every
//     command's, so any serve takes free ports: several copies of this test
//     may run at once). The ports are the one change: a command that spells
//     127.0.0.1:8080 or 127.0.0.1:4222 gets the address serve took instead
//     (an exact string replacement), and the client commands, which default
//     to those addresses, find serve through TOKENLINE_SERVER and
//     TOKENLINE_NATS_URL. TestREADME checks that the README's addresses are
//     the defaults of serve and of the client, so a user who pastes the
//     commands unchanged gets the same behaviour on the default ports.
//   - Where the README sends the user to the sandbox (the authorize_url, the
//     URL `connections authorize` prints), the test approves like the
//     sandbox's Approve button and delivers the redirect to the callback.
//   - Values the README leaves to the user are filled from earlier commands:
//     shell variables in readmeVars (set in the environment, like a user's
//     ID=...), example times in readmeTimes (exact strings replaced).
//     Variables assigned on a line of their own (T=...; S=...) are kept for
//     the rest of their block, as in a shell the block is pasted into.
//   - Each command is matched with the entry of readmeCases whose prefix is
//     the longest prefix of it (as written in the README). An entry may skip
//     the command (with the reason), run it as one that blocks until
//     interrupted (it must print its first line, is then interrupted like
//     Ctrl-C and must stop), or check its output. A command without an entry
//     is run too and must exit 0 without an API error answer: a new README
//     command is tested as soon as it is written, and one that cannot run
//     here fails until it gets an entry. An entry that matches no README
//     command fails the test as well (the table follows the README).
//   - A block that is a script (it starts servers in the background, waits
//     for them, uses them: pasted whole into a shell) is run as one: an
//     entry with script set, matching any command line of the block, makes
//     the whole block one bash script, run after the line-by-line commands
//     in its own temporary directory, as described at runScript. Its
//     127.0.0.1:PORT addresses are all replaced by free ports (the same
//     port for the same address throughout the block), and `go build -o
//     FILE ./PKG` by a copy of the binary built from ./PKG.

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/roundtrip"
	"github.com/tokenline/tokenline/cmd/tokenline/app"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/domain/lifecycle"
)

// The addresses the README writes: serve's defaults (checked by TestREADME).
const (
	readmeHTTPAddr = "127.0.0.1:8080"
	readmeNATSAddr = "127.0.0.1:4222"
)

// Bounds of one command: a command must exit (or, if it blocks, print its
// first line, and stop once interrupted) within these.
const (
	readmeCommandWait = 30 * time.Second
	readmeStopWait    = 15 * time.Second
	readmeFollowWait  = 2 * time.Second
	readmeFollowTries = 10
)

// readmeVars are the shell variables the README leaves to the user, and
// where the test takes their values from (the check of the named command
// sets them). A README command using another variable that its block does
// not assign fails the test.
var readmeVars = []struct{ name, from string }{
	{"ID", "the id the block's create answered (curl ... $S/v1/connections, tokenline connections create), as a user pasting the block sets it"},
	{"WH", "the webhook id `tokenline webhooks create` printed"},
	{"SECRET", "the whsec_ secret `tokenline webhooks create` printed once"},
}

// readmeTimes are the example times the README's commands carry: a user
// gives the time of their incident; the test replaces each of these exact
// strings with a time at which its connections had a history.
var readmeTimes = []struct {
	literal, means string
	value          func(r *readmeRun) (time.Time, bool)
}{
	{"2026-11-28T10:15:00Z", "the instant after the block's authorize of $ID, before consent: the connection is reauthorising then",
		func(r *readmeRun) (time.Time, bool) { t, ok := r.marks["authorized"]; return t, ok }},
	{"2026-11-28T10:00:00Z", "the start of an incident window: the test's start",
		func(r *readmeRun) (time.Time, bool) { t, ok := r.marks["start"]; return t, ok }},
	{"2026-11-28T10:10:00Z", "the end of an incident window: now",
		func(*readmeRun) (time.Time, bool) { return time.Now(), true }},
}

// readmeCase says how the README commands starting with prefix are run.
type readmeCase struct {
	prefix string
	// server: this is `tokenline serve`, started first and in the
	// background; every other command talks to it.
	server bool
	// skip: not run, for this reason.
	skip string
	// needs: a program that may be missing; without it the command is
	// skipped (and the test says so).
	needs string
	// blocks: runs until interrupted. Its first line (stdout and stderr, as
	// a terminal shows them) is given to check; then follow, if set, may
	// act and wait for more lines; then it is interrupted (SIGINT, as
	// Ctrl-C) and must stop.
	blocks bool
	follow func(t *testing.T, r *readmeRun, out *lineLog)
	// apiError: the command answers this API error ({"error": apiError}),
	// as it should; "": it answers no API error.
	apiError string
	// check asserts on the stdout of a command that exited 0 (of a blocking
	// command: its first line) and may set readmeVars or marks.
	check func(t *testing.T, r *readmeRun, out string)
	// script: the whole block of the command this entry matches is run as
	// one bash script (runScript); once the block has run to its end, with
	// its background jobs still running, script checks what the block
	// promises. The jobs are then stopped.
	script func(t *testing.T, s *readmeScript)
}

// readmeCases: longest prefix wins. Keep an entry's prefix short enough to
// survive small edits of the README line and long enough to be the only
// kind of command it matches.
var readmeCases = []readmeCase{
	// ## Try it
	{prefix: "go run ./cmd/tokenline serve", server: true},
	{prefix: "go test ", skip: "the tests themselves: this test is one of them"},
	{prefix: "go run ./cmd/tokenline ui", check: checkLoginLink},

	// ### Sharing one sandbox between instances
	{prefix: "./tokenline sandbox ", script: checkSharedSandbox},

	// ## HTTP API
	{prefix: `curl -s -H "Authorization: Bearer $T" -H "Content-Type: application/json" -d '{"provider"`, check: checkCreateJSON},
	{prefix: `curl -s -H "Authorization: Bearer $T" -X POST $S/v1/connections/$ID/authorize`, check: checkAuthorizeJSON},
	{prefix: `curl -s -H "Authorization: Bearer $T" $S/v1/connections/$ID/token`, apiError: "reauthorisation_required", check: checkTokenBeforeConsent},
	{prefix: `curl -s -H "Authorization: Bearer $T" -H "Content-Type: application/json" -d '{"status":401`, check: checkRejectionReported},
	{prefix: `curl -s -H "Authorization: Bearer $T" -H "Content-Type: application/json" -d '{"status":403`, check: checkRejectionRecorded},
	{prefix: `curl -s -H "Authorization: Bearer $T" "$S/v1/connections/$ID/events?format=jsonl"`,
		check: checkAuditJSONL("connection.created", "authorisation.started", "authorisation.completed", "access.rejected", "refresh.started", "refresh.succeeded")},
	{prefix: `curl -s -H "Authorization: Bearer $T" "$S/v1/connections/$ID/state?at=`, check: checkStateAtJSON},

	// ## CLI
	{prefix: "tokenline connections create ", check: checkCreateTable},
	{prefix: "tokenline connections list", check: func(t *testing.T, r *readmeRun, out string) {
		if !strings.HasPrefix(out, "ID ") || !strings.Contains(out, r.vars["ID"]) {
			t.Errorf("the list lacks the header or connection %s:\n%s", r.vars["ID"], out)
		}
	}},
	{prefix: "tokenline connections authorize ", check: func(t *testing.T, r *readmeRun, out string) {
		r.marks["authorized"] = time.Now()
		u := strings.TrimSpace(out)
		if !strings.HasPrefix(u, r.base+"/sandbox/oauth/authorize?") || strings.Contains(u, "\n") {
			t.Fatalf("stdout is not the sandbox's authorize URL alone:\n%s", out)
		}
		r.authorizeURL = u
		r.consent(t) // the user opens the URL and approves
	}},
	{prefix: "tokenline audit ", check: checkAuditJSONL("connection.created", "authorisation.started", "authorisation.completed")},
	{prefix: "tokenline replay --connection ", check: func(t *testing.T, r *readmeRun, out string) {
		if !regexp.MustCompile(`(?m)^State:\s+reauthorising$`).MatchString(out) || !strings.Contains(out, "authorisation.started") {
			t.Errorf("replay at the instant after authorize: want state reauthorising and the events that led there:\n%s", out)
		}
	}},
	{prefix: "tokenline replay --from ", check: func(t *testing.T, r *readmeRun, out string) {
		m := regexp.MustCompile(`: (\d+) events, (\d+) state changes`).FindStringSubmatch(out)
		if m == nil || m[1] == "0" || m[2] == "0" {
			t.Errorf("the timeline of the test's window shows no events or state changes:\n%s", out)
		}
	}},
	{prefix: "tokenline events tail", blocks: true, follow: followCreate, check: func(t *testing.T, r *readmeRun, first string) {
		if !strings.HasPrefix(first, "Tailing tokenline.conn.> in stream TOKENLINE on nats://") {
			t.Errorf("first line %q, want Tailing tokenline.conn.> in stream TOKENLINE on nats://...", first)
		}
	}},
	{prefix: "tokenline ui", check: checkLoginLink},

	// ## Downstream consumers
	// natscli: .ci/run installs it (go install github.com/nats-io/natscli/nats@v0.5.0).
	{prefix: "nats --server nats://127.0.0.1:4222 --nkey ./tokenline-data/nats-reader.nk consumer add ", needs: "nats"},
	{prefix: "nats --server nats://127.0.0.1:4222 --nkey ./tokenline-data/nats-reader.nk consumer next ", needs: "nats"},
	{prefix: "nats --server nats://127.0.0.1:4222 --nkey ./tokenline-data/nats-reader.nk sub ", needs: "nats", blocks: true, follow: followCreate},
	// ## Webhooks
	{prefix: "tokenline webhooks create ", check: func(t *testing.T, r *readmeRun, out string) {
		id := regexp.MustCompile(`(?m)^ID:\s+(wh_[0-9a-f]{16})$`).FindStringSubmatch(out)
		sec := regexp.MustCompile(`(?m)^Secret:\s+(whsec_\S+)`).FindStringSubmatch(out)
		if id == nil || sec == nil || !regexp.MustCompile(`(?m)^State:\s+active$`).MatchString(out) {
			t.Fatalf("webhooks create: want the ID, State active and the secret:\n%s", out)
		}
		r.vars["WH"], r.vars["SECRET"] = id[1], sec[1]
	}},
	{prefix: "tokenline webhooks list", check: func(t *testing.T, r *readmeRun, out string) {
		if !strings.HasPrefix(out, "ID ") || !strings.Contains(out, r.vars["WH"]) || strings.Contains(out, "whsec_") {
			t.Errorf("the list lacks the header or webhook %s, or shows a secret:\n%s", r.vars["WH"], out)
		}
	}},
	{prefix: "tokenline webhooks deliveries ", check: func(t *testing.T, r *readmeRun, out string) {
		if !strings.Contains(out, "TIME") || !strings.Contains(out, "OUTCOME") {
			t.Errorf("deliveries: want the attempts table:\n%s", out)
		}
	}},
	{prefix: "tokenline webhooks replay ", check: func(t *testing.T, r *readmeRun, out string) {
		if !strings.HasPrefix(out, "Replayed ") {
			t.Errorf("replay: %s", out)
		}
	}},
	{prefix: "tokenline webhooks rotate-secret ", check: func(t *testing.T, r *readmeRun, out string) {
		if !strings.Contains(out, "Secret:") || strings.Contains(out, r.vars["SECRET"]) {
			t.Errorf("rotate-secret: want a new secret:\n%s", out)
		}
	}},
	{prefix: "tokenline webhooks pause ", check: func(t *testing.T, r *readmeRun, out string) {
		if !regexp.MustCompile(`(?m)^State:\s+paused$`).MatchString(out) {
			t.Errorf("pause:\n%s", out)
		}
	}},
	{prefix: "tokenline webhooks resume ", check: func(t *testing.T, r *readmeRun, out string) {
		if !regexp.MustCompile(`(?m)^State:\s+active$`).MatchString(out) {
			t.Errorf("resume:\n%s", out)
		}
	}},
	{prefix: "TOKENLINE_WEBHOOK_SECRET=$SECRET go run ./examples/webhook-receiver ", blocks: true, check: func(t *testing.T, r *readmeRun, first string) {
		if !strings.HasPrefix(first, "webhook receiver listening on http://127.0.0.1:") {
			t.Errorf("first line %q", first)
		}
	}},
	{prefix: "go run ./examples/consumer ", blocks: true, check: func(t *testing.T, r *readmeRun, first string) {
		// A new durable consumer starts at the stream's first event: the
		// first create's.
		if len(r.created) == 0 || !strings.Contains(first, r.created[0]) || !strings.Contains(first, "connection.created") {
			t.Errorf("first line %q, want the connection.created of the first connection %v", first, r.created)
		}
	}},
}

func TestREADME(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries and runs the README's commands against them")
	}
	// The README's addresses are the defaults: what the test changes (the
	// ports) is all that differs from a user's paste.
	c := app.DefaultConfig()
	if c.HTTPAddr != readmeHTTPAddr || app.DefaultServerURL != "http://"+readmeHTTPAddr ||
		c.NATSListen != readmeNATSAddr || app.DefaultNATSURL != "nats://"+readmeNATSAddr || c.DataDir != "./tokenline-data" {
		t.Fatalf("the README's addresses (%s, %s, ./tokenline-data) are not the defaults any more (serve: %s, %s, %s; client: %s, %s): update the README and this test",
			readmeHTTPAddr, readmeNATSAddr, c.HTTPAddr, c.NATSListen, c.DataDir, app.DefaultServerURL, app.DefaultNATSURL)
	}
	src, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	cmds, goBlocks := readmeBlocks(string(src))
	checkGoSnippets(t, goBlocks)
	if len(cmds) == 0 {
		t.Fatal("README.md has no ```sh or ```bash block")
	}
	for _, p := range []string{"bash", "curl", "go"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("%s is not installed: the README's commands need it", p)
		}
	}

	r := &readmeRun{dir: t.TempDir(), bin: t.TempDir(), vars: map[string]string{}, marks: map[string]time.Time{}}
	t0 := time.Now()
	r.build(t, cmds)
	t.Logf("go build of the README's binaries: %s", time.Since(t0).Round(time.Millisecond))

	// Match every command with its entry; every entry must match.
	cmds, scripts := readmeScripts(t, cmds)
	used := make([]bool, len(readmeCases))
	for _, s := range scripts {
		used[s.k] = true
	}
	var server *readmeCmd
	for i := range cmds {
		k := readmeCaseFor(cmds[i].text)
		if k >= 0 {
			used[k] = true
			cmds[i].c = readmeCases[k]
		}
		if cmds[i].c.server {
			if server != nil {
				t.Fatalf("README.md:%d and :%d both match the server entry %q", server.line, cmds[i].line, cmds[i].c.prefix)
			}
			server = &cmds[i]
		}
	}
	for k, u := range used {
		if !u {
			t.Errorf("readmeCases entry %q matches no README command: update or remove it", readmeCases[k].prefix)
		}
	}
	if server == nil {
		t.Fatal("no README command matches the server entry: the README says how to start tokenline no more?")
	}

	r.marks["start"] = time.Now().Add(-time.Second)
	t0 = time.Now()
	r.startServer(t, *server)
	t.Logf("README.md:%d serve ready on %s and %s: %s", server.line, r.base, r.natsURL, time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	for _, c := range cmds {
		r.runCommand(t, c)
	}
	t.Logf("%d README commands: %s", len(cmds), time.Since(t0).Round(time.Millisecond))
	for _, s := range scripts {
		r.runScript(t, s)
	}
}

// readmeCmd is one command line of a README shell block.
type readmeCmd struct {
	line   int      // in README.md
	text   string   // as written (continuation lines joined)
	assign []string // the block's assignment lines before it
	block  *readmeBlock
	c      readmeCase
}

// readmeBlock is a README shell block.
type readmeBlock struct {
	line  int      // of its first line, in README.md
	lines []string // as written, without the fences
	k     int      // for a script: its entry in readmeCases
}

var (
	fenceRE   = regexp.MustCompile("^```\\s*(\\w*)")
	assignRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)
	varRE     = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)`)
	goRunRE   = regexp.MustCompile(`\bgo run (\./[A-Za-z0-9_./-]+)`)
	goBuildRE = regexp.MustCompile(`\bgo build -o (\S+) (\./[A-Za-z0-9_./-]+)`)
)

// readmeBlocks returns the command lines of the ```sh/```bash/```shell
// blocks and the text of the ```go blocks.
func readmeBlocks(src string) (cmds []readmeCmd, goBlocks []string) {
	lines := strings.Split(src, "\n")
	for i := 0; i < len(lines); i++ {
		m := fenceRE.FindStringSubmatch(strings.TrimSpace(lines[i]))
		if m == nil {
			continue
		}
		lang := m[1]
		var body []string
		start := i + 2 // README.md's line number (from 1) of the first line of the body
		for i++; i < len(lines) && !strings.HasPrefix(strings.TrimSpace(lines[i]), "```"); i++ {
			body = append(body, lines[i])
		}
		switch lang {
		case "go":
			goBlocks = append(goBlocks, strings.Join(body, "\n")+"\n")
		case "sh", "bash", "shell":
			block := &readmeBlock{line: start, lines: body, k: -1}
			var assign []string
			for j := 0; j < len(body); j++ {
				line, text := start+j, strings.TrimSpace(body[j])
				for strings.HasSuffix(text, `\`) && j+1 < len(body) {
					j++
					text = strings.TrimSuffix(text, `\`) + " " + strings.TrimSpace(body[j])
				}
				if text == "" || strings.HasPrefix(text, "#") {
					continue
				}
				cmds = append(cmds, readmeCmd{line: line, text: text, assign: slices.Clone(assign), block: block})
				if isAssignment(text) {
					assign = append(assign, text)
				}
			}
		}
	}
	return cmds, goBlocks
}

// readmeScripts takes out of cmds the blocks that are run as scripts: those
// with a command line whose entry has script set. An entry matches one
// block at most, a block one script entry at most.
func readmeScripts(t *testing.T, cmds []readmeCmd) (rest []readmeCmd, scripts []*readmeBlock) {
	t.Helper()
	for _, c := range cmds {
		k := readmeCaseFor(c.text)
		if k < 0 || readmeCases[k].script == nil {
			continue
		}
		b := c.block
		if b.k >= 0 && b.k != k {
			t.Fatalf("README.md:%d: the block matches the script entries %q and %q: one block, one entry",
				b.line, readmeCases[b.k].prefix, readmeCases[k].prefix)
		}
		if i := slices.IndexFunc(scripts, func(s *readmeBlock) bool { return s.k == k && s != b }); i >= 0 {
			t.Fatalf("the script entry %q matches the blocks at README.md:%d and :%d: make its prefix longer",
				readmeCases[k].prefix, scripts[i].line, b.line)
		}
		if b.k < 0 {
			b.k = k
			scripts = append(scripts, b)
		}
	}
	for _, c := range cmds {
		if c.block.k < 0 {
			rest = append(rest, c)
		}
	}
	return rest, scripts
}

// isAssignment reports whether a line only assigns shell variables
// (T=$(cat file); S=http://...).
func isAssignment(text string) bool {
	for _, part := range strings.Split(text, "; ") {
		if !assignRE.MatchString(strings.TrimSpace(part)) {
			return false
		}
	}
	return true
}

// readmeCaseFor returns the index of the entry with the longest prefix of
// text, or -1.
func readmeCaseFor(text string) int {
	best := -1
	for k, c := range readmeCases {
		if strings.HasPrefix(text, c.prefix) && (best < 0 || len(c.prefix) > len(readmeCases[best].prefix)) {
			best = k
		}
	}
	return best
}

// readmeRun is the state of one run through the README.
type readmeRun struct {
	dir, bin string // working directory; directory of the built binaries
	base     string // serve's HTTP base URL (http://127.0.0.1:port)
	natsURL  string
	httpAddr string // host:port of base; natsAddr likewise
	natsAddr string
	apiToken string
	vars     map[string]string    // readmeVars known so far
	marks    map[string]time.Time // instants readmeTimes refer to

	created      []string // ids of the connections the README's creates made, in order
	authorizeURL string   // answered by the latest authorize
}

// build builds, into r.bin, the binary of every `go run ./PKG` in the
// README, and always tokenline's.
func (r *readmeRun) build(t *testing.T, cmds []readmeCmd) {
	t.Helper()
	pkgs := []string{"./cmd/tokenline"}
	for _, c := range cmds {
		for _, m := range goRunRE.FindAllStringSubmatch(c.text, -1) {
			if !slices.Contains(pkgs, m[1]) {
				pkgs = append(pkgs, m[1])
			}
		}
		for _, m := range goBuildRE.FindAllStringSubmatch(c.text, -1) {
			if !slices.Contains(pkgs, m[2]) {
				pkgs = append(pkgs, m[2])
			}
		}
	}
	names := map[string]string{}
	for _, p := range pkgs {
		n := filepath.Base(p)
		if q, dup := names[n]; dup {
			t.Fatalf("go run %s and go run %s would build binaries of the same name", q, p)
		}
		names[n] = p
	}
	cmd := exec.Command("go", append([]string{"build", "-o", r.bin + string(filepath.Separator)}, pkgs...)...)
	cmd.Dir = ".." // the module root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", strings.Join(pkgs, " "), err, out)
	}
}

// baseEnv is the test's environment without TOKENLINE_* (the commands must
// work from the README alone), with the built binaries first in PATH and
// free ports for every serve (the README's, and any other serve a README
// command starts without --http and --nats-listen).
func (r *readmeRun) baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "TOKENLINE_") || strings.HasPrefix(kv, "PATH=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "PATH="+r.bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"TOKENLINE_HTTP=127.0.0.1:0", "TOKENLINE_NATS_LISTEN=127.0.0.1:0")
}

// clientEnv is the environment of the commands after serve: the addresses
// serve took (the commands' defaults are the README's addresses) and the
// readmeVars known so far.
func (r *readmeRun) clientEnv() []string {
	env := append(r.baseEnv(), "TOKENLINE_SERVER="+r.base, "TOKENLINE_NATS_URL="+r.natsURL)
	for _, v := range readmeVars {
		if val, ok := r.vars[v.name]; ok {
			env = append(env, v.name+"="+val)
		}
	}
	return env
}

// script is the bash script that runs c: its block's assignments, then the
// command, with `go run ./PKG` replaced by the built binary, the README's
// addresses by serve's and readmeTimes by their values.
func (r *readmeRun) script(t *testing.T, c readmeCmd) (string, bool) {
	t.Helper()
	assigned := map[string]bool{}
	for _, a := range c.assign {
		for _, part := range strings.Split(a, "; ") {
			assigned[strings.SplitN(strings.TrimSpace(part), "=", 2)[0]] = true
		}
	}
	for _, m := range varRE.FindAllStringSubmatch(c.text, -1) {
		name := m[1]
		if assigned[name] || name == "HOME" || name == "PATH" || name == "PWD" {
			continue
		}
		known := slices.ContainsFunc(readmeVars, func(v struct{ name, from string }) bool { return v.name == name })
		if !known {
			t.Errorf("README.md:%d uses $%s, which its block does not assign: add it to readmeVars (where its value comes from)", c.line, name)
			return "", false
		}
		if _, ok := r.vars[name]; !ok {
			t.Errorf("README.md:%d uses $%s before a command set it (readmeVars)", c.line, name)
			return "", false
		}
	}
	s := strings.Join(append(slices.Clone(c.assign), c.text), "\n")
	s = r.builtBinaries(s)
	if r.httpAddr != "" {
		s = strings.ReplaceAll(s, readmeHTTPAddr, r.httpAddr)
		s = strings.ReplaceAll(s, readmeNATSAddr, r.natsAddr)
	}
	for _, tm := range readmeTimes {
		if !strings.Contains(s, tm.literal) {
			continue
		}
		v, ok := tm.value(r)
		if !ok {
			t.Errorf("README.md:%d: the time %s (%s) is not known yet", c.line, tm.literal, tm.means)
			return "", false
		}
		s = strings.ReplaceAll(s, tm.literal, v.UTC().Format(time.RFC3339Nano))
	}
	return s, true
}

// builtBinaries replaces in s `go run ./PKG` by the binary built from ./PKG
// (in PATH), and `go build -o FILE ./PKG` by a copy of it to FILE.
func (r *readmeRun) builtBinaries(s string) string {
	s = goRunRE.ReplaceAllStringFunc(s, func(m string) string { return filepath.Base(goRunRE.FindStringSubmatch(m)[1]) })
	return goBuildRE.ReplaceAllStringFunc(s, func(m string) string {
		sm := goBuildRE.FindStringSubmatch(m)
		return "cp -f '" + filepath.Join(r.bin, filepath.Base(sm[2])) + "' " + sm[1]
	})
}

// startServer starts the README's serve command on free ports and reads
// where everything is from what it prints.
func (r *readmeRun) startServer(t *testing.T, c readmeCmd) {
	t.Helper()
	s, ok := r.script(t, c)
	if !ok {
		t.FailNow()
	}
	p, err := startProcess(s, r.dir, r.baseEnv())
	if err != nil {
		t.Fatalf("README.md:%d: %v", c.line, err)
	}
	t.Cleanup(func() {
		if err := p.interrupt(); err != nil {
			t.Errorf("README.md:%d: serve did not stop cleanly on Ctrl-C: %v\n%s", c.line, err, p.out.tail(20))
		} else if _, _, ok := p.out.waitFor(0, readmeStopWait, func(l string) bool { return l == "shutting down" }); !ok {
			t.Errorf("README.md:%d: serve did not say it was shutting down:\n%s", c.line, p.out.tail(20))
		}
	})
	if _, _, ok := p.out.waitFor(0, readmeCommandWait, func(l string) bool { return strings.HasPrefix(strings.TrimSpace(l), "Data dir:") }); !ok {
		t.Fatalf("README.md:%d: `%s` did not print where everything is:\n%s", c.line, c.text, p.out.tail(40))
	}
	for _, l := range p.out.all() {
		f := strings.Fields(l)
		switch {
		case len(f) >= 2 && f[0] == "API:":
			r.base = strings.TrimSuffix(f[1], "/v1/")
		case len(f) >= 2 && f[0] == "NATS:":
			r.natsURL = f[1]
		}
	}
	hu, err1 := url.Parse(r.base)
	nu, err2 := url.Parse(r.natsURL)
	if err1 != nil || err2 != nil || hu.Hostname() != "127.0.0.1" || nu.Scheme != "nats" || nu.Hostname() != "127.0.0.1" {
		t.Fatalf("serve printed no loopback API and NATS addresses:\n%s", p.out.tail(40))
	}
	r.httpAddr, r.natsAddr = hu.Host, nu.Host
	b, err := os.ReadFile(filepath.Join(r.dir, "tokenline-data", "api-token"))
	if err != nil {
		t.Fatalf("serve wrote no ./tokenline-data/api-token: %v", err)
	}
	r.apiToken = strings.TrimSpace(string(b))
}

func (r *readmeRun) runCommand(t *testing.T, c readmeCmd) {
	t.Helper()
	switch {
	case c.c.server:
		return // started first
	case c.c.skip != "":
		t.Logf("README.md:%d not run (%s): %s", c.line, c.c.skip, c.text)
		return
	case c.c.needs != "":
		if _, err := exec.LookPath(c.c.needs); err != nil {
			t.Logf("README.md:%d not run (%s is not installed): %s", c.line, c.c.needs, c.text)
			return
		}
	}
	s, ok := r.script(t, c)
	if !ok {
		return
	}
	if c.c.blocks {
		r.runBlocking(t, c, s)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), readmeCommandWait)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", s)
	cmd.Dir, cmd.Env = r.dir, r.clientEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = readmeStopWait
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	out := stdout.String()
	switch {
	case ctx.Err() != nil:
		t.Errorf("README.md:%d: `%s` did not exit in %s: if it runs until stopped, give it an entry in readmeCases with blocks (or skip, and why)\nstdout:\n%s\nstderr:\n%s",
			c.line, c.text, readmeCommandWait, out, stderr.String())
		return
	case err != nil:
		t.Errorf("README.md:%d: `%s` failed: %v\nstdout:\n%s\nstderr:\n%s\n(a command that cannot run in a test gets an entry in readmeCases with skip and the reason; a value the user must give goes in readmeVars or readmeTimes)",
			c.line, c.text, err, out, stderr.String())
		return
	}
	if e := apiErrorAnswer(out); e != c.c.apiError {
		t.Errorf("README.md:%d: `%s` answered API error %q, want %q:\n%s", c.line, c.text, e, c.c.apiError, out)
		return
	}
	if c.c.check != nil {
		before := t.Failed()
		c.c.check(t, r, out)
		if !before && t.Failed() {
			t.Logf("(the failure above is README.md:%d: %s)", c.line, c.text)
		}
	}
}

// runBlocking starts a command that runs until interrupted, checks its
// first line, lets follow act, interrupts it and waits for it to stop.
func (r *readmeRun) runBlocking(t *testing.T, c readmeCmd, s string) {
	t.Helper()
	p, err := startProcess(s, r.dir, r.clientEnv())
	if err != nil {
		t.Errorf("README.md:%d: %v", c.line, err)
		return
	}
	defer func() {
		if err := p.interrupt(); err != nil {
			t.Errorf("README.md:%d: `%s` did not stop cleanly on Ctrl-C: %v\n%s", c.line, c.text, err, p.out.tail(20))
		}
	}()
	_, first, ok := p.out.waitFor(0, readmeCommandWait, func(string) bool { return true })
	if !ok {
		t.Errorf("README.md:%d: `%s` printed nothing in %s (or exited):\n%s", c.line, c.text, readmeCommandWait, p.out.tail(20))
		return
	}
	before := t.Failed()
	if c.c.check != nil {
		c.c.check(t, r, first)
	}
	if c.c.follow != nil {
		c.c.follow(t, r, p.out)
	}
	if !before && t.Failed() {
		t.Logf("(the failure above is README.md:%d: %s)", c.line, c.text)
	}
}

// apiErrorAnswer returns the error code of an API error answer ({"error":
// ...}), or "".
func apiErrorAnswer(out string) string {
	var e struct {
		Error any `json:"error"`
	}
	if json.Unmarshal([]byte(strings.TrimSpace(out)), &e) != nil || e.Error == nil {
		return ""
	}
	return fmt.Sprint(e.Error)
}

// The checks of the HTTP API block.

func checkCreateJSON(t *testing.T, r *readmeRun, out string) {
	var c struct {
		ID    string `json:"id"`
		State string `json:"state"`
	}
	if err := json.Unmarshal([]byte(out), &c); err != nil || !domain.ValidConnectionID(c.ID) || c.State != "unauthenticated" {
		t.Fatalf("create: want a new connection's id and state unauthenticated (%v):\n%s", err, out)
	}
	r.created = append(r.created, c.ID)
	r.vars["ID"] = c.ID
}

func checkAuthorizeJSON(t *testing.T, r *readmeRun, out string) {
	r.marks["authorized"] = time.Now()
	var a struct {
		URL string `json:"authorize_url"`
	}
	if err := json.Unmarshal([]byte(out), &a); err != nil || !strings.HasPrefix(a.URL, r.base+"/sandbox/oauth/authorize?") {
		t.Fatalf("authorize: want the sandbox's authorize_url (%v):\n%s", err, out)
	}
	u, _ := url.Parse(a.URL)
	if q := u.Query(); q.Get("code_challenge_method") != "S256" || q.Get("state") == "" || q.Get("scope") != "export-jobs:read" {
		t.Errorf("authorize_url lacks PKCE S256, state or the scope: %s", a.URL)
	}
	r.authorizeURL = a.URL
}

// Before consent the gate is closed: 409 with the state. Then the test
// plays the user the authorize line sends to the sandbox: Approve, and the
// sandbox's redirect to tokenline's callback.
func checkTokenBeforeConsent(t *testing.T, r *readmeRun, out string) {
	var e struct{ State, Reason string }
	if err := json.Unmarshal([]byte(out), &e); err != nil || e.State != "reauthorising" || e.Reason != "never_authorised" {
		t.Errorf("token before consent: want the state reauthorising and the reason never_authorised (%v):\n%s", err, out)
	}
	r.consent(t)
}

func checkRejectionReported(t *testing.T, r *readmeRun, out string) {
	// A 401 invalid_token on an active connection: recorded, one refresh
	// tried; the sandbox's grant is good, so the connection stays active.
	var st struct {
		State       string `json:"state"`
		LastRefresh *struct {
			OK bool `json:"ok"`
		} `json:"last_refresh"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.State != "active" || st.LastRefresh == nil || !st.LastRefresh.OK {
		t.Errorf("rejection report: want the connection active after one good refresh (%v):\n%s", err, out)
	}
}

func checkRejectionRecorded(t *testing.T, r *readmeRun, out string) {
	// A 403 {} without a 403 rule (the sandbox preset has none): recorded
	// only, the connection stays active.
	var st struct {
		State string `json:"state"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.State != "active" {
		t.Errorf("403 report: want the connection active (%v):\n%s", err, out)
	}
}

// checkAuditJSONL returns a check of an audit answer (JSON lines): events
// of $ID, among them these types, in this order.
func checkAuditJSONL(want ...string) func(t *testing.T, r *readmeRun, out string) {
	return func(t *testing.T, r *readmeRun, out string) { checkAudit(t, r, out, want) }
}

func checkAudit(t *testing.T, r *readmeRun, out string, want []string) {
	var types []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var e struct{ Type, Subject string }
		if err := json.Unmarshal([]byte(l), &e); err != nil || e.Subject != r.vars["ID"] {
			t.Errorf("audit line is not an event of %s: %q (%v)", r.vars["ID"], l, err)
			return
		}
		types = append(types, strings.TrimPrefix(e.Type, "tokenline."))
	}
	rest := types
	for _, w := range want {
		i := slices.Index(rest, w)
		if i < 0 {
			t.Errorf("audit of %s: want %v in this order, got %v", r.vars["ID"], want, types)
			return
		}
		rest = rest[i+1:]
	}
}

func checkStateAtJSON(t *testing.T, r *readmeRun, out string) {
	var a struct {
		Status struct{ State string }  `json:"status"`
		Events []struct{ Type string } `json:"events"`
	}
	if err := json.Unmarshal([]byte(out), &a); err != nil || a.Status.State != "reauthorising" || len(a.Events) != 2 {
		t.Errorf("state at the instant after authorize: want reauthorising after 2 events (%v):\n%s", err, out)
	}
}

// The checks of the CLI block.

func checkCreateTable(t *testing.T, r *readmeRun, out string) {
	id := regexp.MustCompile(`(?m)^ID:\s+(\S+)$`).FindStringSubmatch(out)
	if id == nil || !domain.ValidConnectionID(id[1]) || !regexp.MustCompile(`(?m)^State:\s+unauthenticated$`).MatchString(out) {
		t.Fatalf("create: want the new connection's ID and State unauthenticated:\n%s", out)
	}
	r.created = append(r.created, id[1])
	r.vars["ID"] = id[1]
}

// checkLoginLink: the output is a login link to serve's UI that signs a
// browser in once.
func checkLoginLink(t *testing.T, r *readmeRun, out string) {
	link, _, _ := strings.Cut(out, "\n")
	if !strings.HasPrefix(link, r.base+"/ui/login?code=") {
		t.Errorf("want a login link %s/ui/login?code=...:\n%s", r.base, out)
		return
	}
	noFollow := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for i, want := range []int{http.StatusSeeOther, http.StatusUnauthorized} {
		resp, err := noFollow.Get(link)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want || (i == 0 && len(resp.Cookies()) == 0) {
			t.Errorf("opening the login link (time %d): status %d, cookies %d; want %d (a session cookie the first time; the link works once)",
				i+1, resp.StatusCode, len(resp.Cookies()), want)
		}
	}
}

// followCreate creates a connection over the API and waits until the
// blocking command prints a line about it. A command's first line may come
// before its subscription is in place at the server (`nats sub` prints
// "Subscribing" first), so it creates another connection after each
// readmeFollowWait without one, at most readmeFollowTries times.
func followCreate(t *testing.T, r *readmeRun, out *lineLog) {
	from := len(out.all())
	var ids []string
	for range readmeFollowTries {
		req, _ := http.NewRequest(http.MethodPost, r.base+"/v1/connections", strings.NewReader(`{"provider":"sandbox","scopes":["users:read"]}`))
		req.Header.Set("Authorization", "Bearer "+r.apiToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var c struct{ ID string }
		err = json.NewDecoder(resp.Body).Decode(&c)
		resp.Body.Close()
		if err != nil || !domain.ValidConnectionID(c.ID) {
			t.Fatalf("create for the live event: %d %v", resp.StatusCode, err)
		}
		ids = append(ids, c.ID)
		about := func(l string) bool {
			return slices.ContainsFunc(ids, func(id string) bool { return strings.Contains(l, id) })
		}
		if _, _, ok := out.waitFor(from, readmeFollowWait, about); ok {
			return
		}
	}
	t.Errorf("no line about the connections %v, created while it ran:\n%s", ids, out.tail(20))
}

// The user's consent at the sandbox (prompt mode, serve's default): post
// the authorize request back with decision=approve, like the Approve
// button, then deliver the sandbox's redirect to tokenline's callback.
func (r *readmeRun) consent(t *testing.T) {
	t.Helper()
	u, err := url.Parse(r.authorizeURL)
	if err != nil || r.authorizeURL == "" {
		t.Fatalf("no authorize_url to consent at: %q", r.authorizeURL)
	}
	form := u.Query()
	form.Set("decision", "approve")
	u.RawQuery = ""
	noFollow := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.PostForm(u.String(), form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode/100 != 3 || !strings.HasPrefix(loc, r.base+"/oauth/callback?code=") {
		t.Fatalf("approve at the sandbox: status %d, Location %q; want a redirect to the callback with a code", resp.StatusCode, loc)
	}
	resp, err = noFollow.Get(loc)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("callback: status %d, want 303", resp.StatusCode)
	}
}

// lineLog collects the lines a process prints, for a test to wait on.
type lineLog struct {
	mu    sync.Mutex
	lines []string
	done  bool
	wake  chan struct{} // closed (and replaced) when a line arrives or the output ends
}

func newLineLog() *lineLog { return &lineLog{wake: make(chan struct{})} }

func (l *lineLog) add(s string, end bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if end {
		l.done = true
	} else {
		l.lines = append(l.lines, s)
	}
	close(l.wake)
	l.wake = make(chan struct{})
}

func (l *lineLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lines)
}

func (l *lineLog) tail(n int) string {
	all := l.all()
	return strings.Join(all[max(0, len(all)-n):], "\n")
}

// waitFor returns the first line from index from on that match accepts,
// waiting at most d for it (0: only the lines there are).
func (l *lineLog) waitFor(from int, d time.Duration, match func(string) bool) (int, string, bool) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		l.mu.Lock()
		for ; from < len(l.lines); from++ {
			if match(l.lines[from]) {
				line := l.lines[from]
				l.mu.Unlock()
				return from, line, true
			}
		}
		done, wake := l.done, l.wake
		l.mu.Unlock()
		if done || d == 0 {
			return -1, "", false
		}
		select {
		case <-wake:
		case <-timer.C:
			return -1, "", false
		}
	}
}

// process is a `bash -c` script running in its own process group, its
// stdout and stderr going to one pipe, as they go to one terminal.
type process struct {
	cmd    *exec.Cmd
	out    *lineLog
	exited chan struct{}
	err    error // of Wait, once exited is closed
}

func startProcess(script, dir string, env []string) (*process, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("bash", "-c", script)
	cmd.Dir, cmd.Env = dir, env
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	pw.Close()
	if err != nil {
		pr.Close()
		return nil, err
	}
	p := &process{cmd: cmd, out: newLineLog(), exited: make(chan struct{})}
	go func() {
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		for sc.Scan() {
			p.out.add(sc.Text(), false)
		}
		p.out.add("", true)
	}()
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// interrupt sends SIGINT to the process group, as Ctrl-C does, and waits
// for the process to exit; it must exit 0 or by the signal (130). One that
// does not stop is killed.
func (p *process) interrupt() error {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGINT)
	select {
	case <-p.exited:
	case <-time.After(readmeStopWait):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
		return fmt.Errorf("still running %s after SIGINT: killed", readmeStopWait)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) && ee.ExitCode() == 130 {
		return nil
	}
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGINT {
		return nil
	}
	return p.err
}

// The Go snippet of the README's "Go integrations" must be in this file,
// verbatim (indented by one tab: it is the body of readmeGoIntegration), so
// that it compiles and cannot drift.
func checkGoSnippets(t *testing.T, blocks []string) {
	t.Helper()
	self, err := os.ReadFile("readme_test.go")
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) == 0 {
		t.Error("README.md has no ```go block: remove readmeGoIntegration and this check, or restore the snippet")
	}
	for _, b := range blocks {
		var indented strings.Builder
		for _, l := range strings.SplitAfter(b, "\n") {
			if strings.TrimSpace(l) != "" {
				indented.WriteString("\t")
			}
			indented.WriteString(l)
		}
		if !strings.Contains(string(self), indented.String()) {
			t.Errorf("README.md's Go snippet is not in tests/readme_test.go verbatim (copy it into readmeGoIntegration, indented by one tab):\n%s", b)
		}
	}
}

// readmeGoIntegration is the README's Go snippet ("Go integrations"), in a
// function that gives it what it leaves to the reader (ctx, id,
// providerAPI) and uses what it makes (resp). It is compiled, not run:
// app.NewMain() serves on the default ports and ./tokenline-data.
func readmeGoIntegration(ctx context.Context, id, providerAPI string) (*http.Response, error) {
	m := app.NewMain() // or your own wiring of the same parts
	_ = m.Run(ctx)
	client := (&roundtrip.Transport{
		Gate:         m.Lifecycle,                        // gate check; loads a token refreshed elsewhere from the vault
		Reporter:     lifecycle.Reporter{S: m.Lifecycle}, // the detection path
		ConnectionID: id,
	}).Client()
	resp, err := client.Get(providerAPI + "/v1/...") // the provider's API
	var refused *roundtrip.RefusedError
	switch {
	case errors.Is(err, roundtrip.ErrRetryLater):
		// a refresh is late: retry shortly
	case errors.As(err, &refused) && refused.ActionBy == domain.ActorOperator:
		// tell the operator: PUT /v1/providers/{name}/client-secret, or check the client registration
	case errors.Is(err, domain.ErrUnauthenticated):
		// ask the user to reconnect: POST /v1/connections/{id}/authorize
	}
	return resp, err
}

var _ = readmeGoIntegration

// A README block run as one bash script (an entry with script set).

// readmeScriptWait bounds a script block's run to its last line, its own
// waits included; its script check waits at most readmeCommandWait for each
// thing it waits for, and stopping its jobs takes at most readmeStopWait.
const readmeScriptWait = 60 * time.Second

// What runScript adds to a script block's output.
const (
	scriptEnd    = "README-TEST: end of block"
	scriptFailed = "README-TEST: failed" // + " <script line> <exit status>"
	scriptJob    = "README-TEST: job"    // + " <pid> <exit status>" for each job stopped
)

var (
	loopbackRE = regexp.MustCompile(`\b127\.0\.0\.1:[0-9]+\b`)
	jobsRE     = regexp.MustCompile(`^\[\d+\][+-]?\s+(\d+)\s+(Running|Done|Exit \d+|[A-Z][a-z]+)\s+(.*)$`)
	traceRE    = regexp.MustCompile(`^\++(\d+) `)
)

// readmeScript is a README block run as one script, as its script check
// sees it.
type readmeScript struct {
	line  int               // of the block's first line in README.md
	dir   string            // its working directory
	out   []string          // what it printed (stdout and stderr) up to its last line
	addrs map[string]string // 127.0.0.1:PORT as the README writes it -> the address the test gave instead
	env   map[string]string // its environment after its last line (what it exported)
	log   *lineLog          // all it prints, its jobs' output after its last line included
}

// tail is the end of what the block and its jobs printed so far, for a
// failure message.
func (s *readmeScript) tail() string { return s.log.tail(40) }

// addr returns the address the test gave for the README's address a.
func (s *readmeScript) addr(t *testing.T, a string) string {
	t.Helper()
	v, ok := s.addrs[a]
	if !ok {
		t.Fatalf("README.md:%d: the block does not use %s any more: update its script check", s.line, a)
	}
	return v
}

// runScript runs the block b as one bash script, the way a user pastes it
// whole into a shell, in a temporary directory of its own:
//
//   - Every 127.0.0.1:PORT of the block (and serve's default addresses,
//     which its serves take without --http or --nats-listen: they get the
//     same ports through TOKENLINE_HTTP and TOKENLINE_NATS_LISTEN, and the
//     client's default server through TOKENLINE_SERVER) is replaced by a
//     free port, the same for the same address throughout the block.
//     `go build -o FILE ./PKG` and `go run ./PKG` use the built binaries.
//   - It runs with `set -e`: the first command that fails stops it, and the
//     test names that README line. It must run to its last line within
//     readmeScriptWait (else the test names the line it was running).
//   - Then, with the block's background jobs still running, the entry's
//     script check runs. Then the jobs are stopped, the last started first
//     (as a user would: an instance before the NATS server it uses): bash
//     sends each SIGTERM and waits for it; each must have run until then
//     and stop with status 0 (or by the signal). Whatever is left of the
//     block's process group is then killed.
func (r *readmeRun) runScript(t *testing.T, b *readmeBlock) {
	t.Helper()
	c := readmeCases[b.k]
	dir := t.TempDir()
	body := r.builtBinaries(strings.Join(b.lines, "\n"))

	addrs := map[string]string{readmeHTTPAddr: "", readmeNATSAddr: ""}
	for _, a := range loopbackRE.FindAllString(body, -1) {
		if !strings.HasSuffix(a, ":0") {
			addrs[a] = ""
		}
	}
	var ls []net.Listener
	for a := range addrs {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		addrs[a] = l.Addr().String()
	}
	for _, l := range ls {
		l.Close()
	}
	body = loopbackRE.ReplaceAllStringFunc(body, func(a string) string { return cmp.Or(addrs[a], a) })

	// Line 1 is the test's, then the block's lines, one for one: the
	// block's line n is the script's line n+1.
	script := `set -e; trap 'echo "` + scriptFailed + ` $LINENO $?"' ERR; exec 9>.readme-trace; BASH_XTRACEFD=9; PS4='+$LINENO '; set -x` + "\n" +
		body + "\n" +
		"set +ex; trap - ERR; env -0 >.readme-env; echo '" + scriptEnd + "'\n" +
		`trap 'jobs -l; for p in $(jobs -p | tac); do kill -TERM $p; wait $p; echo "` + scriptJob + ` $p $?"; done; exit 0' TERM` + "\n" +
		"while :; do sleep 0.2; done\n" // not wait: it would forget the jobs that ended (jobs -l reports them)
	env := append(r.baseEnv(), "TOKENLINE_HTTP="+addrs[readmeHTTPAddr], "TOKENLINE_NATS_LISTEN="+addrs[readmeNATSAddr],
		"TOKENLINE_SERVER=http://"+addrs[readmeHTTPAddr])
	readmeLine := func(scriptLine string) string {
		var n int
		if _, err := fmt.Sscan(scriptLine, &n); err != nil || n < 2 || n-2 >= len(b.lines) {
			return fmt.Sprintf("README.md:%d (the block's end)", b.line)
		}
		return fmt.Sprintf("README.md:%d `%s`", b.line+n-2, strings.TrimSpace(b.lines[n-2]))
	}

	// From a file: `bash -c` forgets jobs that ended before `jobs -l` runs.
	if err := os.WriteFile(filepath.Join(dir, ".readme-block.sh"), []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := startProcess("exec bash .readme-block.sh", dir, env)
	if err != nil {
		t.Fatalf("README.md:%d: %v", b.line, err)
	}
	pgid := p.cmd.Process.Pid
	ended := false
	t0 := time.Now()
	var ran, checked time.Duration
	defer func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM) // bash's trap stops the jobs
		select {
		case <-p.exited:
		case <-time.After(readmeStopWait):
			t.Errorf("README.md:%d: the block's jobs did not stop in %s after SIGTERM:\n%s", b.line, readmeStopWait, p.out.tail(30))
		}
		_ = syscall.Kill(-pgid, syscall.SIGKILL) // anything left of the block
		<-p.exited
		if !ended {
			return
		}
		t.Logf("README.md:%d block run as a script: to its end %s, checks %s, its jobs stopped %s", b.line,
			ran.Round(time.Millisecond), checked.Round(time.Millisecond), (time.Since(t0) - ran - checked).Round(time.Millisecond))
		end, _, _ := p.out.waitFor(0, 0, func(l string) bool { return l == scriptEnd })
		_, _, _ = p.out.waitFor(0, readmeStopWait, func(string) bool { return false }) // until the jobs closed the output
		cmds := map[string]string{}
		all := p.out.all()
		for i, l := range all[end+1:] {
			if m := jobsRE.FindStringSubmatch(l); m != nil {
				cmds[m[1]] = m[3]
				if m[2] != "Running" && m[2] != "Done" {
					t.Errorf("README.md:%d: the block's background job `%s` ended (%s) before the block's checks were done. Output until then:\n%s",
						b.line, m[3], m[2], strings.Join(all[max(0, end+1+i-40):end+1+i], "\n"))
				}
			}
			if f := strings.Fields(strings.TrimPrefix(l, scriptJob)); strings.HasPrefix(l, scriptJob) && len(f) == 2 && f[1] != "0" && f[1] != "143" {
				t.Errorf("README.md:%d: the block's background job `%s` exited %s on SIGTERM, want 0 (stopped cleanly):\n%s", b.line, cmds[f[0]], f[1], p.out.tail(30))
			}
		}
	}()

	// Wait for the block's last line (or a failed line, or bash's exit).
	deadline := time.Now().Add(readmeScriptWait)
	var last string
	for last == "" {
		if _, l, ok := p.out.waitFor(0, 200*time.Millisecond, func(l string) bool {
			return l == scriptEnd || strings.HasPrefix(l, scriptFailed)
		}); ok {
			last = l
			break
		}
		select {
		case <-p.exited:
			t.Fatalf("README.md:%d: the block's script exited (%v) before its end:\n%s", b.line, p.err, p.out.tail(40))
		default:
		}
		if time.Now().After(deadline) {
			running := "?"
			if tr, err := os.ReadFile(filepath.Join(dir, ".readme-trace")); err == nil {
				lines := strings.Split(strings.TrimSpace(string(tr)), "\n")
				for i := len(lines) - 1; i >= 0 && running == "?"; i-- {
					if m := traceRE.FindStringSubmatch(lines[i]); m != nil {
						running = m[1]
					}
				}
			}
			t.Fatalf("README.md:%d: the block did not run to its end in %s; it was running %s. Output:\n%s",
				b.line, readmeScriptWait, readmeLine(running), p.out.tail(40))
		}
	}
	if f := strings.Fields(strings.TrimPrefix(last, scriptFailed)); strings.HasPrefix(last, scriptFailed) && len(f) == 2 {
		t.Fatalf("%s failed (exit status %s); the block stops there (set -e). Output:\n%s", readmeLine(f[0]), f[1], p.out.tail(40))
	}
	ended = true
	ran = time.Since(t0)

	s := &readmeScript{line: b.line, dir: dir, addrs: addrs, env: map[string]string{}, log: p.out}
	i, _, _ := p.out.waitFor(0, 0, func(l string) bool { return l == scriptEnd })
	s.out = p.out.all()[:i]
	e, err := os.ReadFile(filepath.Join(dir, ".readme-env"))
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range strings.Split(string(e), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			s.env[k] = v
		}
	}
	before := t.Failed()
	c.script(t, s)
	checked = time.Since(t0) - ran
	if !before && t.Failed() {
		t.Logf("(the failure above is the block at README.md:%d, run as a script)", b.line)
	}
}

// checkSharedSandbox: the block prints the sandbox's stats, both instances
// become ready, and a connection created and authorised on the first is
// handed out by the second (one NATS, one vault key).
func checkSharedSandbox(t *testing.T, s *readmeScript) {
	stats := false
	for _, l := range s.out {
		var st map[string]any
		if json.Unmarshal([]byte(l), &st) == nil {
			if _, ok := st["refresh_token_reuse"]; ok {
				stats = true
			}
		}
	}
	if !stats {
		t.Errorf("the block printed no sandbox stats with refresh_token_reuse:\n%s", s.tail())
	}
	token := s.env["TOKENLINE_API_TOKEN"]
	if token == "" {
		t.Fatal("the block exported no TOKENLINE_API_TOKEN")
	}
	a, b := "http://"+s.addr(t, "127.0.0.1:8080"), "http://"+s.addr(t, "127.0.0.1:8081")
	noFollow := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	call := func(method, u, body string) (int, []byte, error) {
		req, _ := http.NewRequest(method, u, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := noFollow.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		out, err := io.ReadAll(resp.Body)
		return resp.StatusCode, out, err
	}
	// until polls u until it answers 200, at most readmeCommandWait.
	until := func(what, u string) []byte {
		t.Helper()
		var code int
		var out []byte
		var err error
		for deadline := time.Now().Add(readmeCommandWait); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if code, out, err = call(http.MethodGet, u, ""); err == nil && code == http.StatusOK {
				return out
			}
		}
		t.Fatalf("%s: GET %s did not answer 200 in %s: status %d, error %v:\n%s\nThe block's output:\n%s",
			what, u, readmeCommandWait, code, err, out, s.tail())
		return nil
	}
	until("instance a ready", a+"/readyz")
	until("instance b ready", b+"/readyz")

	code, out, err := call(http.MethodPost, a+"/v1/connections", `{"provider":"sandbox","scopes":["users:read"]}`)
	var conn struct{ ID string }
	if err == nil {
		err = json.Unmarshal(out, &conn)
	}
	if code != http.StatusCreated || err != nil || !domain.ValidConnectionID(conn.ID) {
		t.Fatalf("create on instance a: status %d, error %v:\n%s", code, err, out)
	}
	code, out, err = call(http.MethodPost, a+"/v1/connections/"+conn.ID+"/authorize", "")
	var auth struct {
		URL string `json:"authorize_url"`
	}
	if err == nil {
		err = json.Unmarshal(out, &auth)
	}
	if code != http.StatusOK || err != nil || !strings.HasPrefix(auth.URL, "http://"+s.addr(t, "127.0.0.1:9096")+"/sandbox/") {
		t.Fatalf("authorize on instance a: want the shared sandbox's authorize_url: status %d, error %v:\n%s", code, err, out)
	}
	// --consent approve: the sandbox redirects to a's callback at once.
	resp, err := noFollow.Get(auth.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode/100 != 3 || !strings.HasPrefix(loc, a+"/oauth/callback?code=") {
		t.Fatalf("the sandbox (consent approve): status %d, Location %q; want a redirect to instance a's callback with a code", resp.StatusCode, loc)
	}
	if resp, err = noFollow.Get(loc); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("instance a's callback: status %d, want 303", resp.StatusCode)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(until("the token through instance b", b+"/v1/connections/"+conn.ID+"/token"), &tok); err != nil || tok.AccessToken == "" {
		t.Errorf("instance b's token answer has no access_token (%v)", err)
	}
}
