package jsstore_test

import (
	"errors"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/tokenline/tokenline/adapters/jsstore"
	"github.com/tokenline/tokenline/adapters/natstest"
	"github.com/tokenline/tokenline/domain"
)

// With a Seed, the cache is a small bound of recently used aggregates: a
// miss in LoadForAppend is taken from the seed without a request (cached
// true) and cached, so that appends advance it; the cache never holds more
// than CacheSize entries. A stale seed costs a conflict, never a wrong
// append, and the next LoadForAppend reads the stream.
func TestLoadForAppendTakesAMissFromTheSeedWithinTheBound(t *testing.T) {
	srv := natstest.Start(t, "")
	ctx := ctxT(t)
	writer := open(t, srv.Connect(t))
	var mu sync.Mutex
	seeds := map[string]domain.Connection{} // what the seed holds (a projection)
	seedCalls := 0
	seed := func(id string) (domain.Connection, bool) {
		mu.Lock()
		defer mu.Unlock()
		seedCalls++
		c, ok := seeds[id]
		return c.Clone(), ok
	}
	const n, bound = 6, 2
	ids := make([]string, n)
	for i := range ids {
		ids[i] = uuid.NewString()
		decideAppend(t, writer, ids[i], domain.Create{Provider: "sandbox", Scopes: []string{"users:read"}})
		c, err := writer.Load(ctx, ids[i])
		if err != nil {
			t.Fatal(err)
		}
		seeds[ids[i]] = c
	}

	def, err := jsstore.Open(ctx, srv.Connect(t), jsstore.Config{Actor: "test", Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	if def.CacheSize() != jsstore.DefaultSeededCacheSize {
		t.Fatalf("seeded store's default cache size %d, want %d", def.CacheSize(), jsstore.DefaultSeededCacheSize)
	}
	if plain := open(t, srv.Connect(t)); plain.CacheSize() != 10000 {
		t.Fatalf("unseeded store's default cache size %d, want 10000", plain.CacheSize())
	}

	st, err := jsstore.Open(ctx, srv.Connect(t), jsstore.Config{Actor: "test", Seed: seed, CacheSize: bound})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		c, cached, err := st.LoadForAppend(ctx, id)
		if err != nil || !cached || c.ID != id || c.Version != seeds[id].Version {
			t.Fatalf("LoadForAppend %s: %+v cached %v %v, want the seed's version %d without a request", id, c, cached, err, seeds[id].Version)
		}
		if got := st.CacheLen(); got > bound {
			t.Fatalf("cache holds %d aggregates, bound %d", got, bound)
		}
	}

	// An append against the seeded aggregate advances the cached entry:
	// the next LoadForAppend needs neither the seed nor the stream.
	id := ids[0]
	c, _, err := st.LoadForAppend(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	out, err := st.Append(ctx, id, c.Version, ev(domain.ConnectionUpdated{Config: map[string]string{"by": "st"}}))
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	calls := seedCalls
	mu.Unlock()
	c, cached, err := st.LoadForAppend(ctx, id)
	if err != nil || !cached || c.Version != out.Seq || c.Config["by"] != "st" {
		t.Fatalf("after its own append: %+v cached %v %v, want version %d from the cache", c, cached, err, out.Seq)
	}
	mu.Lock()
	after := seedCalls
	mu.Unlock()
	if after != calls {
		t.Fatalf("the seed was asked again (%d calls, want %d): the append did not advance the cache", after, calls)
	}

	// A stale seed (behind another writer's append) gives a conflict, the
	// refused event is nowhere, and the next LoadForAppend reads the stream.
	id = ids[n-1]
	c, err = writer.Load(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	second, err := writer.Append(ctx, id, c.Version, ev(domain.ConnectionUpdated{Config: map[string]string{"by": "writer"}}))
	if err != nil {
		t.Fatal(err)
	}
	for _, other := range ids[1 : n-1] { // push id out of the cache
		if _, _, err := st.LoadForAppend(ctx, other); err != nil {
			t.Fatal(err)
		}
	}
	stale, cached, err := st.LoadForAppend(ctx, id)
	if err != nil || !cached {
		t.Fatalf("LoadForAppend: %+v cached %v %v", stale, cached, err)
	}
	if stale.Version >= second.Seq { // the cache (if it kept the entry) and the seed are both behind
		t.Fatalf("LoadForAppend: version %d, want the stale %d", stale.Version, c.Version)
	}
	if _, err := st.Append(ctx, id, stale.Version, ev(domain.ConnectionUpdated{Config: map[string]string{"by": "st"}})); !errors.Is(err, domain.ErrConflict) {
		t.Fatalf("append against the stale seed: %v, want ErrConflict", err)
	}
	c, cached, err = st.LoadForAppend(ctx, id)
	if err != nil || cached || c.Version != second.Seq || c.Config["by"] != "writer" {
		t.Fatalf("after the conflict: %+v cached %v %v, want version %d read from the stream", c, cached, err, second.Seq)
	}
	expectHistory(t, st, id, 2)
}

// An append whose store has not cached the connection takes the chain head
// from the seed when the seed is at the expected version: one message
// (the publish) and no read; the chain it extends verifies on a fresh load.
// A seed behind the expected version is not used (the head is read).
func TestAppendTakesTheHeadFromASeedAtTheExpectedVersion(t *testing.T) {
	srv := natstest.Start(t, "")
	ctx := ctxT(t)
	writer := open(t, srv.Connect(t))
	id := uuid.NewString()
	decideAppend(t, writer, id, domain.Create{Provider: "sandbox", Scopes: []string{"users:read"}})
	seeded, err := writer.Load(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	nc := srv.Connect(t)
	st, err := jsstore.Open(ctx, nc, jsstore.Config{Actor: "test", Seed: func(string) (domain.Connection, bool) { return seeded.Clone(), true }})
	if err != nil {
		t.Fatal(err)
	}
	before := nc.Stats().OutMsgs
	if _, err := st.Append(ctx, id, seeded.Version, ev(domain.ConnectionUpdated{Config: map[string]string{"by": "seeded"}})); err != nil {
		t.Fatal(err)
	}
	if sent := nc.Stats().OutMsgs - before; sent != 1 {
		t.Fatalf("the append sent %d messages, want 1 (the publish): the head was read, not taken from the seed", sent)
	}
	c, err := open(t, srv.Connect(t)).Load(ctx, id)
	if err != nil || c.ChainBreaks != 0 || c.Events != 2 {
		t.Fatalf("fresh load: %+v %v, want 2 events and an unbroken chain", c, err)
	}
	// The seed is now one event behind: the next append on a store that
	// has not cached the connection must read the head.
	nc2 := srv.Connect(t)
	st2, err := jsstore.Open(ctx, nc2, jsstore.Config{Actor: "test", Seed: func(string) (domain.Connection, bool) { return seeded.Clone(), true }})
	if err != nil {
		t.Fatal(err)
	}
	before = nc2.Stats().OutMsgs
	if _, err := st2.Append(ctx, id, c.Version, ev(domain.ConnectionUpdated{Config: map[string]string{"by": "behind"}})); err != nil {
		t.Fatal(err)
	}
	if sent := nc2.Stats().OutMsgs - before; sent < 2 {
		t.Fatalf("the append sent %d messages: a stale seed's head was used", sent)
	}
	if c, err := open(t, srv.Connect(t)).Load(ctx, id); err != nil || c.ChainBreaks != 0 || c.Events != 3 {
		t.Fatalf("fresh load: %+v %v, want 3 events and an unbroken chain", c, err)
	}
}
