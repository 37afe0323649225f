package natstest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// EnvServerBinary names the environment variable that gives the path of a
// nats-server binary for tests that run real server processes (build one
// with: go build -o /tmp/nats-server github.com/nats-io/nats-server/v2).
const EnvServerBinary = "TOKENLINE_NATS_SERVER"

// Process is a nats-server running as a process of its own, so that it can
// be killed with SIGKILL (a crash: no clean shutdown, no leadership
// transfer) and started again on the same ports and store.
type Process struct {
	Name string
	URL  string
	args []string
	bin  string
	cmd  *exec.Cmd
}

// StartProcessCluster starts an n-node JetStream cluster of nats-server
// processes from the binary named by EnvServerBinary on 127.0.0.1; the test
// is skipped when the variable is unset. The processes are killed at the
// end of the test.
func StartProcessCluster(t testing.TB, n int) []*Process {
	t.Helper()
	bin := os.Getenv(EnvServerBinary)
	if bin == "" {
		t.Skipf("%s is not set (path of a nats-server binary)", EnvServerBinary)
	}
	cports, rports := make([]int, n), make([]int, n)
	var routes []string
	for i := range n {
		cports[i], rports[i] = freePort(t), freePort(t)
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", rports[i]))
	}
	dir := t.TempDir()
	var out []*Process
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		p := &Process{Name: name, URL: fmt.Sprintf("nats://127.0.0.1:%d", cports[i]), bin: bin, args: []string{
			"-n", name, "-a", "127.0.0.1", "-p", fmt.Sprint(cports[i]), "-js", "-sd", filepath.Join(dir, name),
			"--cluster_name", "tokenline-test", "--cluster", routes[i], "--routes", strings.Join(routes, ","),
		}}
		p.Start(t)
		t.Cleanup(p.Kill)
		out = append(out, p)
	}
	return out
}

// Start starts the process (again), waiting until it accepts connections.
func (p *Process) Start(t testing.TB) {
	t.Helper()
	p.cmd = exec.Command(p.bin, p.args...)
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("natstest: start %s: %v", p.Name, err)
	}
	addr := strings.TrimPrefix(p.URL, "nats://")
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("natstest: %s does not accept connections", p.Name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill sends SIGKILL and waits for the process to end.
func (p *Process) Kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	_ = p.cmd.Wait()
	p.cmd = nil
}

// ProcessURLs returns the client URLs of ps, comma separated.
func ProcessURLs(ps []*Process) string {
	var urls []string
	for _, p := range ps {
		urls = append(urls, p.URL)
	}
	return strings.Join(urls, ",")
}

// StartProcess starts one standalone JetStream nats-server process (no
// auth, 127.0.0.1, a fresh store) from the binary named by EnvServerBinary,
// killed at the end of the test; nil when the variable is unset. Benchmarks
// of client programs use it to measure them as they run in production: the
// server in a process of its own, not sharing the benchmark's.
func StartProcess(t testing.TB) *Process {
	t.Helper()
	bin := os.Getenv(EnvServerBinary)
	if bin == "" {
		return nil
	}
	port := freePort(t)
	p := &Process{Name: "nats", URL: fmt.Sprintf("nats://127.0.0.1:%d", port), bin: bin, args: []string{
		"-n", "nats", "-a", "127.0.0.1", "-p", fmt.Sprint(port), "-js", "-sd", t.TempDir(),
	}}
	p.Start(t)
	t.Cleanup(p.Kill)
	return p
}
