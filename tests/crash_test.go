package tests

import (
	"bufio"
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

	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
	"github.com/tokenline/tokenline/adapters/httpapi/client"
	"github.com/tokenline/tokenline/domain"
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

// api is the typed API client of the process.
func (p *serveProc) api(t *testing.T) *client.Client {
	t.Helper()
	c, err := client.New(p.baseURL, p.token)
	if err != nil {
		t.Fatal(err)
	}
	return c
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
	ctx := ctxT(t)
	api := p.api(t)
	var ids []string
	for i := 0; i < 5; i++ {
		c, err := api.CreateConnection(ctx, apitypes.CreateRequest{Provider: "sandbox", Scopes: []string{"users:read"}, Config: map[string]string{"n": fmt.Sprint(i)}})
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		ids = append(ids, c.ID)
	}
	// Authorise the first through the sandbox (consent approve) over HTTP.
	authorizeURL, err := api.Authorize(ctx, ids[0])
	if err != nil {
		t.Fatalf("authorize: %v", err)
	}
	resp, err := http.Get(authorizeURL) // follows sandbox → /oauth/callback → UI
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	before, _ := api.GetConnection(ctx, ids[0])
	if before.State != domain.StateActive {
		t.Fatalf("before crash: %+v", before)
	}
	evBefore, _ := api.Events(ctx, ids[0], client.EventQuery{})

	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()

	q := startProc(t, bin, dir) // the flock died with the process
	api = q.api(t)
	for i, id := range ids {
		if c, err := api.GetConnection(ctx, id); err != nil || c.Config["n"] != fmt.Sprint(i) {
			t.Fatalf("after restart %s: %v %+v", id, err, c)
		}
	}
	after, _ := api.GetConnection(ctx, ids[0])
	evAfter, _ := api.Events(ctx, ids[0], client.EventQuery{})
	if len(evAfter) < len(evBefore) || len(evBefore) < 3 {
		t.Fatalf("events before %d, after %d", len(evBefore), len(evAfter))
	}
	// The sandbox lives in the process: its grants died with it, so the
	// restored connection is either still active (token not yet due) or,
	// once tokenline tries, unauthenticated with invalid_grant; never lost.
	if after.State != domain.StateActive && !(after.State == domain.StateUnauthenticated && after.Reason == domain.ReasonInvalidGrant) {
		t.Fatalf("restored connection: %+v", after)
	}
	if _, err := api.CreateConnection(ctx, apitypes.CreateRequest{Provider: "sandbox", Scopes: []string{"users:read"}}); err != nil {
		t.Fatalf("create after restart: %v", err)
	}
	// A second serve on the same dir refuses to start.
	out, err := exec.Command(bin, "serve", "--data-dir", dir, "--http", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "in use") {
		t.Fatalf("second serve: %v\n%s", err, out)
	}
}
