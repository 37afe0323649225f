// Package natstest starts real, in-process nats-servers with JetStream for
// tests. Nothing is mocked: the server is the same one tokenline embeds, on a
// random loopback port, with its file store in the test's temporary directory.
package natstest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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

// StartCluster starts an n-node JetStream cluster of in-process servers on
// 127.0.0.1 (random client ports, fixed-at-start route ports) and waits for
// it to elect a meta leader. The servers are shut down at the end of the test.
func StartCluster(t testing.TB, n int) []*Server {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		ports[i] = freePort(t)
	}
	var routes []*url.URL
	for _, p := range ports {
		u, _ := url.Parse(fmt.Sprintf("nats-route://127.0.0.1:%d", p))
		routes = append(routes, u)
	}
	var out []*Server
	for i := 0; i < n; i++ {
		dir := t.TempDir()
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1",
			Port:       -1,
			JetStream:  true,
			StoreDir:   dir,
			NoLog:      true,
			NoSigs:     true,
			Cluster:    server.ClusterOpts{Name: "tokenline-test", Host: "127.0.0.1", Port: ports[i]},
			Routes:     routes,
		}
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatalf("natstest: cluster node %d: %v", i+1, err)
		}
		go s.Start()
		srv := &Server{Server: s, Dir: dir}
		t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
		out = append(out, srv)
	}
	// 60 s: on a loaded 2-core machine (CI runs packages side by side) the
	// meta leader's election alone has taken over 30 s.
	deadline := time.Now().Add(60 * time.Second)
	for {
		ready := true
		for _, s := range out {
			if !s.ReadyForConnections(100*time.Millisecond) || !s.JetStreamIsCurrent() {
				ready = false
			}
		}
		if ready && metaLeader(out) {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatal("natstest: cluster did not form in 60s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func metaLeader(ss []*Server) bool {
	for _, s := range ss {
		if s.JetStreamIsLeader() {
			return true
		}
	}
	return false
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// URLs returns the client URLs of servers, comma separated (nats.Connect
// accepts the list and fails over between them).
func URLs(servers []*Server) string {
	var s string
	for i, srv := range servers {
		if i > 0 {
			s += ","
		}
		s += srv.ClientURL()
	}
	return s
}

// StreamLeader returns the server leading stream (in the global account),
// waiting up to 30 s for one.
func StreamLeader(t testing.TB, servers []*Server, stream string) *Server {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, s := range servers {
			if s.Running() && s.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("natstest: stream %s has no leader after 30s", stream)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitCurrent waits (up to 30 s) until every running server's replica of
// stream has applied all its writes (the stream's replicas are caught up).
func WaitCurrent(t testing.TB, servers []*Server, stream string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok := true
		for _, s := range servers {
			if s.Running() && !s.JetStreamIsStreamCurrent(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("natstest: stream %s not current after 30s", stream)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ReadAll reads the first n messages of st from its beginning (all of
// them, for a stream of n) with an ordered consumer, taking them in its
// callback as tokenline's reads do (Consume, which arms no timer per
// message as Messages' Next does) and doing nothing with them, not even
// parsing their metadata: the floor any reader of the stream pays, for
// benchmarks to compare with. It returns how long the read took, consumer
// creation included, or an error if the n messages did not come within
// timeout.
func ReadAll(ctx context.Context, st jetstream.Stream, n uint64, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return 0, err
	}
	done := make(chan struct{})
	var got atomic.Uint64
	cc, err := cons.Consume(func(jetstream.Msg) {
		if got.Add(1) == n {
			close(done)
		}
	}, jetstream.PullMaxMessages(8192)) // as jsstore's reads pull
	if err != nil {
		return 0, err
	}
	defer cc.Stop()
	select {
	case <-done:
		return time.Since(start), nil
	case <-time.After(timeout):
		return 0, fmt.Errorf("natstest: read %d of %d messages in %v", got.Load(), n, timeout)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}
