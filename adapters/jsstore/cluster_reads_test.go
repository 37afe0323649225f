package jsstore_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/tokenline/tokenline/adapters/jsstore"
	"github.com/tokenline/tokenline/adapters/natstest"
	"github.com/tokenline/tokenline/domain"
)

// clusterStores starts a 3-node cluster and opens an R3 store on each node
// (each on its own connection to that node, failing over to the others).
func clusterStores(t testing.TB) ([]*natstest.Server, []*jsstore.Store) {
	t.Helper()
	nodes := natstest.StartCluster(t, 3)
	var stores []*jsstore.Store
	for i, n := range nodes {
		// The node's own URL first: the connection starts there.
		nc, err := nats.Connect(n.ClientURL()+","+natstest.URLs(nodes), nats.DontRandomize(),
			nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		var st *jsstore.Store
		deadline := time.Now().Add(30 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			st, err = jsstore.Open(ctx, nc, jsstore.Config{Replicas: 3, Actor: fmt.Sprintf("node/%d", i+1)})
			cancel()
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("open on node %d: %v", i+1, err)
		}
		stores = append(stores, st)
	}
	natstest.WaitCurrent(t, nodes, jsstore.DefaultStream)
	return nodes, stores
}

// A Load right after an append made on another connection, to another
// node, returns the event: the subject's last sequence comes from the
// stream's leader, and what the answering replica lacks is read from the
// leader too. Repeated, since a lagging follower is a race.
func TestClusterLoadSeesAppendOnAnotherNode(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	_, stores := clusterStores(t)
	ctx := ctxT(t)
	for i := range 150 {
		w, r := stores[i%3], stores[(i+1)%3]
		id := uuid.NewString()
		created, err := w.Append(ctx, id, 0, ev(domain.ConnectionCreated{Provider: "sandbox", Scopes: []string{"users:read"}}))
		if err != nil {
			t.Fatal(err)
		}
		c, err := r.Load(ctx, id)
		if err != nil || c.Version != created.Seq {
			t.Fatalf("round %d: load on another node after create: version %d, want %d: %v", i, c.Version, created.Seq, err)
		}
		updated, err := w.Append(ctx, id, created.Seq, ev(domain.ConnectionUpdated{Config: map[string]string{"n": fmt.Sprint(i)}}))
		if err != nil {
			t.Fatal(err)
		}
		// r now has the aggregate cached one event behind: it reads the tail.
		c, err = r.Load(ctx, id)
		if err != nil || c.Version != updated.Seq || c.Config["n"] != fmt.Sprint(i) {
			t.Fatalf("round %d: load on another node after update: version %d, want %d: %v", i, c.Version, updated.Seq, err)
		}
		h, err := stores[(i+2)%3].History(ctx, id)
		if err != nil || len(h) != 2 {
			t.Fatalf("round %d: history on the third node: %d events: %v", i, len(h), err)
		}
	}
}

// Killing the stream's leader: an append and loads through the surviving
// nodes, and through a connection to the node that is gone, succeed once a
// new leader is elected, within the caller's 30 s deadline (a scheduled
// refresh's lease), each request trying again every 2 s at most instead of
// waiting the whole deadline for a node that is gone.
func TestClusterLeaderKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	d := leaderKill(t)
	t.Logf("after the leader's shutdown: append %v, load on a survivor %v, load through the dead node's connection %v", d[0], d[1], d[2])
}

// BenchmarkClusterLeaderElection prints how long after the stream leader's
// shutdown (in-process 3-node cluster, R3) the first append, a load on a
// surviving node and a load through the dead node's connection succeed.
//
//	go test -run '^$' -bench ClusterLeaderElection -benchtime 1x ./adapters/jsstore/
func BenchmarkClusterLeaderElection(b *testing.B) {
	var sum [3]time.Duration
	n := 0
	for b.Loop() {
		d := leaderKill(b)
		for i := range d {
			sum[i] += d[i]
		}
		n++
	}
	b.ReportMetric(float64(sum[0].Milliseconds())/float64(n), "ms-to-append")
	b.ReportMetric(float64(sum[1].Milliseconds())/float64(n), "ms-to-load")
	b.ReportMetric(float64(sum[2].Milliseconds())/float64(n), "ms-to-load-via-dead-node")
}

func leaderKill(t testing.TB) [3]time.Duration {
	nodes, stores := clusterStores(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	id := uuid.NewString()
	e, err := stores[0].Append(ctx, id, 0, ev(domain.ConnectionCreated{Provider: "sandbox", Scopes: []string{"users:read"}}))
	if err != nil {
		t.Fatal(err)
	}
	natstest.WaitCurrent(t, nodes, jsstore.DefaultStream)
	leader := natstest.StreamLeader(t, nodes, jsstore.DefaultStream)
	dead := 0
	for i, n := range nodes {
		if n == leader {
			dead = i
		}
	}
	w, r := stores[(dead+1)%3], stores[(dead+2)%3]
	leader.Shutdown()
	killed := time.Now()
	var out [3]time.Duration
	lease, cancelLease := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelLease()
	e2, err := w.Append(lease, id, e.Seq, ev(domain.ConnectionUpdated{Config: map[string]string{"after": "kill"}}))
	if err != nil {
		t.Fatalf("append after the leader's shutdown (%v): %v", time.Since(killed), err)
	}
	out[0] = time.Since(killed)
	start := time.Now()
	c, err := r.Load(lease, id)
	if err != nil || c.Version != e2.Seq {
		t.Fatalf("load on a survivor after the leader's shutdown: version %d want %d: %v", c.Version, e2.Seq, err)
	}
	out[1] = time.Since(start)
	start = time.Now()
	c, err = stores[dead].Load(lease, id)
	if err != nil || c.Version != e2.Seq {
		t.Fatalf("load through the dead node's connection: version %d want %d: %v", c.Version, e2.Seq, err)
	}
	out[2] = time.Since(start)
	if errors.Is(lease.Err(), context.DeadlineExceeded) {
		t.Fatal("the caller's whole deadline was used")
	}
	return out
}

// BenchmarkClusterKill9 prints how long after SIGKILL of the stream
// leader's process (3 nats-server processes, R3) the first append succeeds,
// and a Load on a survivor and through the dead node's connection then
// take. It needs a nats-server binary:
//
//	go build -o /tmp/nats-server github.com/nats-io/nats-server/v2
//	TOKENLINE_NATS_SERVER=/tmp/nats-server go test -run '^$' -bench ClusterKill9 -benchtime 3x ./adapters/jsstore/
func BenchmarkClusterKill9(b *testing.B) {
	procs := natstest.StartProcessCluster(b, 3)
	var stores []*jsstore.Store
	for i, p := range procs {
		nc, err := nats.Connect(p.URL+","+natstest.ProcessURLs(procs), nats.DontRandomize(),
			nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(nc.Close)
		var st *jsstore.Store
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			st, err = jsstore.Open(ctx, nc, jsstore.Config{Replicas: 3})
			cancel()
			if err == nil || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			b.Fatalf("open on node %d: %v", i+1, err)
		}
		stores = append(stores, st)
	}
	// leader waits for the stream's leader with both followers current.
	leader := func() int {
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			s, err := stores[0].JetStream().Stream(ctx, jsstore.DefaultStream)
			cancel()
			if err != nil || s.CachedInfo().Cluster == nil || len(s.CachedInfo().Cluster.Replicas) != 2 {
				continue
			}
			current := true
			for _, r := range s.CachedInfo().Cluster.Replicas {
				current = current && r.Current
			}
			for i, p := range procs {
				if current && p.Name == s.CachedInfo().Cluster.Leader {
					return i
				}
			}
		}
		b.Fatal("no stream leader with current followers in 60s")
		return 0
	}
	var sum [3]time.Duration
	n := 0
	for b.Loop() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		id := uuid.NewString()
		e, err := stores[0].Append(ctx, id, 0, ev(domain.ConnectionCreated{Provider: "sandbox", Scopes: []string{"users:read"}}))
		if err != nil {
			b.Fatal(err)
		}
		dead := leader()
		procs[dead].Kill()
		killed := time.Now()
		lease, cancelLease := context.WithTimeout(ctx, 30*time.Second)
		e2, err := stores[(dead+1)%3].Append(lease, id, e.Seq, ev(domain.ConnectionUpdated{Config: map[string]string{"after": "kill"}}))
		if err != nil {
			b.Fatalf("append %v after SIGKILL of the leader: %v", time.Since(killed), err)
		}
		d := [3]time.Duration{time.Since(killed)}
		for k, st := range []*jsstore.Store{stores[(dead+2)%3], stores[dead]} {
			start := time.Now()
			c, err := st.Load(lease, id)
			if err != nil || c.Version != e2.Seq {
				b.Fatalf("load %d after SIGKILL of the leader: version %d want %d: %v", k, c.Version, e2.Seq, err)
			}
			d[1+k] = time.Since(start)
		}
		cancelLease()
		cancel()
		for k := range d {
			sum[k] += d[k]
		}
		n++
		procs[dead].Start(b)
	}
	b.ReportMetric(float64(sum[0].Milliseconds())/float64(n), "ms-to-append")
	b.ReportMetric(float64(sum[1].Milliseconds())/float64(n), "ms-to-load")
	b.ReportMetric(float64(sum[2].Milliseconds())/float64(n), "ms-to-load-via-dead-node")
}
