package vault

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/natstest"
	"github.com/tokenline/tokenline/domain"
)

// clusterVaults starts a 3-node cluster and opens an R3 vault and attempts
// bucket on each node, each on its own connection to that node (failing
// over to the others).
func clusterVaults(t testing.TB) ([]*natstest.Server, []*Vault, []*Attempts) {
	t.Helper()
	nodes := natstest.StartCluster(t, 3)
	key := make([]byte, KeySize)
	var vs []*Vault
	var as []*Attempts
	for i, n := range nodes {
		nc, err := nats.Connect(n.ClientURL()+","+natstest.URLs(nodes), nats.DontRandomize(),
			nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		var v *Vault
		var a *Attempts
		deadline := time.Now().Add(30 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			v, err = Open(ctx, js, Config{Key: key, Replicas: 3})
			if err == nil {
				a, err = OpenAttempts(ctx, js, key, time.Hour, 3)
			}
			cancel()
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("open on node %d: %v", i+1, err)
		}
		vs, as = append(vs, v), append(as, a)
	}
	natstest.WaitCurrent(t, nodes, "KV_"+DefaultBucket)
	natstest.WaitCurrent(t, nodes, "KV_"+DefaultAttemptsBucket)
	return nodes, vs, as
}

// A Get (or Prefetch) on another node right after a Put never returns the token set the
// Put replaced (on a rotating provider, a refresh token that no longer
// works), and an attempt put on one node is taken on another right away.
func TestClusterGetAfterPutOnAnotherNode(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	_, vs, as := clusterVaults(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id := uuid.NewString()
	for i := range 500 {
		w, r := vs[i%3], vs[(i+1)%3]
		want := fmt.Sprintf("refresh-%d", i)
		if err := w.Put(ctx, id, domain.Tokens{AccessToken: "a", RefreshToken: want}); err != nil {
			t.Fatal(err)
		}
		got, err := r.Get(ctx, id)
		if err != nil || got.RefreshToken != want {
			t.Fatalf("round %d: get on another node: %q, want %q: %v", i, got.RefreshToken, want, err)
		}
		if got, err := r.Prefetch(ctx, id)(); err != nil || got.RefreshToken != want {
			t.Fatalf("round %d: prefetch on another node: %q, want %q: %v", i, got.RefreshToken, want, err)
		}
		key := fmt.Sprintf("%064x", i+1)
		if err := as[i%3].Put(ctx, key, domain.Attempt{ConnectionID: id, AttemptID: "a", Verifier: "v", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if _, err := as[(i+2)%3].Take(ctx, key); err != nil {
			t.Fatalf("round %d: take on another node: %v", i, err)
		}
		if _, err := as[i%3].Take(ctx, key); !errors.Is(err, ErrNoAttempt) {
			t.Fatalf("round %d: second take: %v", i, err)
		}
	}
	if err := vs[0].Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := vs[1].Get(ctx, id); !errors.Is(err, domain.ErrNoTokens) {
		t.Fatalf("get on another node after delete: %v", err)
	}
}

// Killing the bucket's stream leader: a Put and Gets through the
// surviving nodes and through the dead node's connection succeed after the
// election, within the caller's 30 s deadline.
func TestClusterVaultLeaderKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	d := vaultLeaderKill(t)
	t.Logf("after the leader's shutdown: put %v, get on a survivor %v, get through the dead node's connection %v", d[0], d[1], d[2])
}

// BenchmarkClusterVaultLeaderElection prints how long after the token
// bucket's leader's shutdown (in-process 3-node cluster, R3) the first Put,
// a Get on a survivor and a Get through the dead node's connection succeed.
//
//	go test -run '^$' -bench ClusterVaultLeaderElection -benchtime 1x ./adapters/vault/
func BenchmarkClusterVaultLeaderElection(b *testing.B) {
	var sum [3]time.Duration
	n := 0
	for b.Loop() {
		d := vaultLeaderKill(b)
		for i := range d {
			sum[i] += d[i]
		}
		n++
	}
	b.ReportMetric(float64(sum[0].Milliseconds())/float64(n), "ms-to-put")
	b.ReportMetric(float64(sum[1].Milliseconds())/float64(n), "ms-to-get")
	b.ReportMetric(float64(sum[2].Milliseconds())/float64(n), "ms-to-get-via-dead-node")
}

func vaultLeaderKill(t testing.TB) [3]time.Duration {
	nodes, vs, _ := clusterVaults(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id := uuid.NewString()
	if err := vs[0].Put(ctx, id, domain.Tokens{AccessToken: "a", RefreshToken: "before"}); err != nil {
		t.Fatal(err)
	}
	natstest.WaitCurrent(t, nodes, "KV_"+DefaultBucket)
	leader := natstest.StreamLeader(t, nodes, "KV_"+DefaultBucket)
	dead := 0
	for i, n := range nodes {
		if n == leader {
			dead = i
		}
	}
	w, r := vs[(dead+1)%3], vs[(dead+2)%3]
	leader.Shutdown()
	killed := time.Now()
	lease, cancelLease := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelLease()
	var out [3]time.Duration
	if err := w.Put(lease, id, domain.Tokens{AccessToken: "a", RefreshToken: "after"}); err != nil {
		t.Fatalf("put after the leader's shutdown (%v): %v", time.Since(killed), err)
	}
	out[0] = time.Since(killed)
	for i, v := range []*Vault{r, vs[dead]} {
		start := time.Now()
		got, err := v.Get(lease, id)
		if err != nil || got.RefreshToken != "after" {
			t.Fatalf("get %d after the leader's shutdown: %q: %v", i, got.RefreshToken, err)
		}
		out[1+i] = time.Since(start)
	}
	if lease.Err() != nil {
		t.Fatal("the caller's whole deadline was used")
	}
	return out
}
