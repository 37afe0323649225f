package tests

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// serveProc is `tokenline serve` running as a real process.
type serveProc struct {
	cmd     *exec.Cmd
	baseURL string
	token   string
}

func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "tokenline")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/tokenline").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func startProc(t *testing.T, bin, dir string) *serveProc {
	t.Helper()
	cmd := exec.Command(bin, "serve", "--data-dir", dir, "--http", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0",
		"--sandbox-consent", "approve", "--log-level", "error")
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serveProc{cmd: cmd}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := make(chan string, 32)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	deadline := time.After(30 * time.Second)
	for p.baseURL == "" || !strings.Contains(p.baseURL, ":") {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("serve exited before it was ready")
			}
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "UI:" {
				p.baseURL = strings.TrimSuffix(f[1], "/ui/")
			}
		case <-deadline:
			t.Fatal("serve did not print its UI address in 30s")
		}
	}
	go func() {
		for range lines {
		}
	}()
	b, err := os.ReadFile(filepath.Join(dir, "api-token"))
	if err != nil {
		t.Fatal(err)
	}
	p.token = strings.TrimSpace(string(b))
	return p
}

func (p *serveProc) api(t *testing.T, method, path string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, p.baseURL+path, rd)
	req.Header.Set("Authorization", "Bearer "+p.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	if out != nil {
		_ = json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

type apiConn struct {
	ID     string            `json:"id"`
	State  string            `json:"state"`
	Reason string            `json:"reason"`
	Config map[string]string `json:"config"`
}

// kill -9 in the middle of work, then restart on the same data dir: the
// lock is free again, every event is there, the projections come back from
// their snapshot/position plus the tail, and the connections work.
func TestCrashAndRestartRealProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	p := startProc(t, bin, dir)
	var ids []string
	for i := 0; i < 5; i++ {
		var c apiConn
		if st := p.api(t, "POST", "/v1/connections", map[string]any{"provider": "sandbox", "scopes": []string{"users:read"}, "config": map[string]string{"n": fmt.Sprint(i)}}, &c); st != 201 {
			t.Fatalf("create: %d", st)
		}
		ids = append(ids, c.ID)
	}
	// Authorise the first through the sandbox (consent approve) over HTTP.
	var auth struct {
		AuthorizeURL string `json:"authorize_url"`
	}
	if st := p.api(t, "POST", "/v1/connections/"+ids[0]+"/authorize", nil, &auth); st != 200 {
		t.Fatalf("authorize: %d", st)
	}
	resp, err := http.Get(auth.AuthorizeURL) // follows sandbox → /oauth/callback → UI
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var before apiConn
	p.api(t, "GET", "/v1/connections/"+ids[0], nil, &before)
	if before.State != "active" {
		t.Fatalf("before crash: %+v", before)
	}
	var evBefore []json.RawMessage
	p.api(t, "GET", "/v1/connections/"+ids[0]+"/events", nil, &evBefore)

	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()

	q := startProc(t, bin, dir) // the flock died with the process
	for i, id := range ids {
		var c apiConn
		if st := q.api(t, "GET", "/v1/connections/"+id, nil, &c); st != 200 || c.Config["n"] != fmt.Sprint(i) {
			t.Fatalf("after restart %s: %d %+v", id, st, c)
		}
	}
	var after apiConn
	q.api(t, "GET", "/v1/connections/"+ids[0], nil, &after)
	var evAfter []json.RawMessage
	q.api(t, "GET", "/v1/connections/"+ids[0]+"/events", nil, &evAfter)
	if len(evAfter) < len(evBefore) || len(evBefore) < 3 {
		t.Fatalf("events before %d, after %d", len(evBefore), len(evAfter))
	}
	// The sandbox lives in the process: its grants died with it, so the
	// restored connection is either still active (token not yet due) or,
	// once tokenline tries, unauthenticated with invalid_grant; never lost.
	if after.State != "active" && !(after.State == "unauthenticated" && after.Reason == "invalid_grant") {
		t.Fatalf("restored connection: %+v", after)
	}
	var c apiConn
	if st := q.api(t, "POST", "/v1/connections", map[string]any{"provider": "sandbox", "scopes": []string{"users:read"}}, &c); st != 201 {
		t.Fatalf("create after restart: %d", st)
	}
	// A second serve on the same dir refuses to start.
	out, err := exec.Command(bin, "serve", "--data-dir", dir, "--http", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "in use") {
		t.Fatalf("second serve: %v\n%s", err, out)
	}
}
