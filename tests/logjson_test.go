package tests

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
)

// lockedBuffer collects a process's stderr.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// stop ends a serve process as a signal would, and waits for it.
func (p *serveProc) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop in 20s")
	}
}

// Every line `tokenline serve` writes to stderr is a JSON log line, also
// on the path that used to go through the standard log package (the audit
// read skipping a record that does not decode: "audit: skipped a record").
func TestServeStderrIsJSONLines(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	first := startProc(t, bin, dir)
	c, err := first.api(t).CreateConnection(ctxT(t), apitypes.CreateRequest{Provider: "sandbox", Scopes: []string{"users:read"}})
	if err != nil {
		t.Fatal(err)
	}
	first.stop(t)
	// Someone with access to the store appends a record that is not an event.
	offline(t, dir, func(js jetstream.JetStream) {
		if _, err := js.Publish(ctxT(t), "tokenline.conn."+c.ID, []byte("not an event")); err != nil {
			t.Fatal(err)
		}
	})

	var stderr lockedBuffer
	cmd := exec.Command(bin, "serve", "--data-dir", dir, "--http", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "--log-level", "debug")
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	p := &serveProc{cmd: cmd}
	sc := bufio.NewScanner(stdout)
	for p.baseURL == "" && sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "UI:" {
			p.baseURL = strings.TrimSuffix(f[1], "/ui/")
		}
	}
	if p.baseURL == "" {
		t.Fatalf("serve printed no UI address; stderr:\n%s", stderr.String())
	}
	go func() {
		for sc.Scan() {
		}
	}()
	b, err := os.ReadFile(filepath.Join(dir, "api-token"))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(ctxT(t), http.MethodGet, p.baseURL+"/v1/connections/"+c.ID+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(b)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("events: %d", resp.StatusCode)
	}
	// The embedded sandbox logs too: a refused token request.
	resp, err = http.PostForm(p.baseURL+"/sandbox/oauth/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"unknown"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	p.stop(t)

	lines := strings.Split(strings.TrimRight(stderr.String(), "\n"), "\n")
	skipped, sandboxLines := 0, 0
	for i, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil || m["msg"] == nil || m["level"] == nil || m["time"] == nil {
			t.Errorf("stderr line %d is not a JSON log line: %q", i+1, l)
			continue
		}
		if k := duplicateKey(l); k != "" {
			t.Errorf("stderr line %d has the key %q twice: %s", i+1, k, l)
		}
		if m["msg"] == "audit: skipped a record" {
			skipped++
		}
		if m["component"] == "sandbox" {
			sandboxLines++
		}
	}
	if skipped == 0 || sandboxLines == 0 {
		t.Fatalf("the run did not reach the audit skip path (%d) or log a sandbox line (%d); stderr:\n%s", skipped, sandboxLines, stderr.String())
	}
	t.Logf("%d stderr lines, all JSON; %d audit skips", len(lines), skipped)
}

// duplicateKey returns a key that a JSON object line has twice at its top
// level ("" if none).
func duplicateKey(line string) string {
	dec := json.NewDecoder(strings.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return ""
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		k, _ := tok.(string)
		if seen[k] {
			return k
		}
		seen[k] = true
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return ""
		}
	}
	return ""
}
