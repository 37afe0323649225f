// Package natstest starts real, in-process nats-servers with JetStream for
// tests. Nothing is mocked: the server is the same one tokenline embeds, on a
// random loopback port, with its file store in the test's temporary directory.
package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Server is a running test server.
type Server struct {
	*server.Server
	Dir string
}

// Start starts a JetStream server on 127.0.0.1 with a random port, storing
// under dir (t.TempDir() when dir is ""). It is shut down at the end of the test.
func Start(t testing.TB, dir string) *Server {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	s := StartOn(t, dir, -1)
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

// StartOn starts a server on the given port (-1: random); the caller shuts it
// down (for restart tests).
func StartOn(t testing.TB, dir string, port int) *Server {
	t.Helper()
	opts := &server.Options{
		Host:      "127.0.0.1",
		Port:      port,
		JetStream: true,
		StoreDir:  dir,
		NoLog:     true,
		NoSigs:    true,
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("natstest: new server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("natstest: server not ready in 10s")
	}
	return &Server{Server: s, Dir: dir}
}

// Connect opens a client connection closed at the end of the test.
func (s *Server) Connect(t testing.TB) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), nats.Name("natstest"), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("natstest: connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}
