package jsstore_test

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/tokenline/tokenline/adapters/jsstore"
	"github.com/tokenline/tokenline/adapters/natstest"
	"github.com/tokenline/tokenline/domain"
)

// On a 3-node cluster with an R3 stream the server reports a wrong expected
// subject sequence with code 10164 (not 10071); both map to ErrConflict, and
// a writer connected to each node races: exactly one wins every round.
func TestClusterR3RacingWriters(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	nodes := natstest.StartCluster(t, 3)
	var stores []*jsstore.Store
	for i, n := range nodes {
		nc, err := nats.Connect(n.ClientURL(), nats.Name("cluster-writer"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		var st *jsstore.Store
		// A loaded machine (CI runs packages in parallel) can take tens of
		// seconds to form the cluster and elect the streams' leaders.
		deadline := time.Now().Add(60 * time.Second)
		for {
			st, err = jsstore.Open(ctxT(t), nc, jsstore.Config{Replicas: 3, Actor: "node"})
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("open on node %d: %v", i+1, err)
		}
		// Direct gets need the stream's replicas up: wait until a load of an
		// unknown connection answers "not found" rather than "no responders".
		for {
			_, err = st.Load(ctxT(t), uuid.NewString())
			if errors.Is(err, domain.ErrNotFound) || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("stream not ready on node %d: %v", i+1, err)
		}
		stores = append(stores, st)
	}
	info, err := stores[0].Stream().Info(ctxT(t))
	if err != nil || info.Config.Replicas != 3 {
		t.Fatalf("stream info: %v %+v", err, info)
	}
	id := create(t, stores[0])
	for round := 0; round < 10; round++ {
		c, err := stores[0].Load(ctxT(t), id)
		if err != nil {
			t.Fatal(err)
		}
		errs := make([]error, len(stores))
		var wg sync.WaitGroup
		for i, st := range stores {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = st.Append(ctxT(t), id, c.Version, ev(domain.ConnectionUpdated{Config: map[string]string{"n": "x"}}))
			}()
		}
		wg.Wait()
		wins := 0
		for _, err := range errs {
			switch {
			case err == nil:
				wins++
			case errors.Is(err, domain.ErrConflict):
				if strings.Contains(err.Error(), "10071") || strings.Contains(err.Error(), "10164") {
					t.Fatalf("conflict leaks the server error: %v", err)
				}
			default:
				t.Fatalf("round %d: %v", round, err)
			}
		}
		if wins != 1 {
			t.Fatalf("round %d: %d winners", round, wins)
		}
	}
	h, err := stores[2].History(ctxT(t), id)
	if err != nil || len(h) != 11 {
		t.Fatalf("history on node 3: %d events, %v", len(h), err)
	}
}
