package tests

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/natstest"
	"github.com/tokenline/tokenline/cmd/tokenline/app"
	"github.com/tokenline/tokenline/domain"
)

func freeLoopbackPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func readyz(in *instance) int {
	resp, err := http.Get(in.BaseURL + "/readyz")
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// NATS goes away under a running tokenline (external server) and comes
// back: /readyz reports it, requests fail cleanly meanwhile, nothing
// crashes, and afterwards the projections follow the stream again and new
// work succeeds.
func TestNATSOutageAndRecovery(t *testing.T) {
	dir := t.TempDir()
	port := freeLoopbackPort(t)
	srv := natstest.StartOn(t, dir, port)
	in := start(t, func(c *app.Config) { c.NATSURL = "nats://127.0.0.1:" + strconv.Itoa(port) })
	id := create(t, in, map[string]string{"team": "finance"})
	authorise(t, in, id)
	if readyz(in) != 200 {
		t.Fatal("not ready before the outage")
	}

	srv.Shutdown()
	srv.WaitForShutdown()
	eventually(t, 10*time.Second, "/readyz to report the outage", func() bool { return readyz(in) == http.StatusServiceUnavailable })
	// Without a deadline of its own, a request fails within the store's
	// request timeout instead of hanging.
	began := time.Now()
	if _, err := in.Lifecycle.Create(context.Background(), "sandbox", []string{"users:read"}, nil); err == nil {
		t.Fatal("create succeeded without NATS")
	}
	if took := time.Since(began); took > 15*time.Second {
		t.Fatalf("create without NATS took %v", took)
	}

	srv2 := natstest.StartOn(t, dir, port)
	defer func() { srv2.Shutdown(); srv2.WaitForShutdown() }()
	eventually(t, 20*time.Second, "/readyz to recover", func() bool { return readyz(in) == 200 })
	if c := load(t, in, id); c.State != domain.StateActive {
		t.Fatalf("connection after the outage: %s", c.State)
	}
	other := create(t, in, map[string]string{"team": "ops"})
	authorise(t, in, other)
	eventually(t, 10*time.Second, "the status projection to follow again", func() bool {
		st, ok := in.Proj.Status.Connection(other)
		return ok && st.State == domain.StateActive
	})
	if tok, _, err := in.Lifecycle.Token(ctxT(t), other); err != nil || tok == "" {
		t.Fatalf("token after recovery: %v", err)
	}
}
