package lifecycle

import (
	"fmt"
	"hash/fnv"
	"slices"
	"testing"
	"time"

	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/domain/domaintest"
)

// Seeding BenchmarkColdStart's mix at once (Seed: entries from one slab,
// the prober's providers looked up once per run of the same provider)
// leaves the scheduler and the prober exactly as one Observe per
// connection does: every entry's fields, the queue's order, the spreading
// load, the prober's entries, providers and connections waiting to be
// planned, and what the prober's first look then plans. The mix includes a
// connection seen deleted before any other of its provider,
// connections given twice (one of them deleted the second time, one moved
// to a provider without a prober; some twice in one batch of Seed's), nil
// and id-less ones.
func TestSeedColdMixAsObserve(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0).UTC()
	conns := domaintest.ColdMix(3000, t0)
	conns[10].Provider = "other" // a third provider, with a prober
	first := *conns[0]           // seen deleted before any other of its provider
	first.ID, first.Provider, first.Deleted = "deleted-first", "other", true
	conns = append([]*domain.Connection{&first}, conns...)
	again := *conns[21]
	again.Deleted = true
	moved := *conns[31]
	moved.Provider = "pleo-eu"
	if conns[31].Provider == "pleo-eu" {
		moved.Provider = "sandbox"
	}
	again2 := again // given twice in the same batch of Seed's
	again2.Version++
	again2.Deleted = false
	fresh := *activeConn("fresh", 3, t0.Add(-time.Minute), time.Hour) // first seen in the last batch, given twice in it
	fresh.Provider = "sandbox"
	fresh2 := fresh
	fresh2.Version++
	fresh2.State, fresh2.LeaseUntil = domain.StateRefreshing, t0.Add(time.Minute)
	conns = conns[:len(conns)/seedBatch*seedBatch] // the rest in one batch
	conns = append(conns, nil, &fresh, &domain.Connection{}, &again, &moved, conns[41], &again2, &fresh2)
	newService := func() *Service {
		s := spreadService(t0, 2, 100*time.Millisecond) // spreading moves refreshes
		s.cfg.Lease, s.cfg.LeaseGrace = 30*time.Second, 30*time.Second
		s.cfg.Probers = map[string]domain.Prober{"sandbox": everyProber(5 * time.Minute), "other": everyProber(time.Minute)}
		return s
	}
	one, bulk := newService(), newService()
	for _, c := range conns {
		one.Observe(nil, c)
	}
	bulk.Seed(conns)

	if len(one.sched) != len(bulk.sched) || len(one.sched) < 2900 {
		t.Fatalf("entries: Observe %d, Seed %d", len(one.sched), len(bulk.sched))
	}
	kinds := map[jobKind]int{}
	for id, a := range one.sched {
		b := bulk.sched[id]
		if b == nil {
			t.Fatalf("%s: not seeded", id)
		}
		x, y := *a, *b
		x.idx, y.idx = 0, 0 // positions in the heap: compared by the order below
		if x != y {
			t.Errorf("%s: Observe %+v, Seed %+v", id, x, y)
		}
		if (a.idx >= 0) != (b.idx >= 0) || b.idx >= 0 && bulk.dueQ[b.idx] != b {
			t.Errorf("%s: queued at %d by Observe, %d by Seed", id, a.idx, b.idx)
		}
		kinds[a.job]++
	}
	for _, k := range []jobKind{jobNone, jobRefresh, jobRecover, jobExpire, jobInvalidate} {
		if kinds[k] == 0 {
			t.Errorf("no %q job in the mix: %v", k, kinds)
		}
	}
	if len(one.dueQ) != len(bulk.dueQ) {
		t.Errorf("queued: Observe %d, Seed %d", len(one.dueQ), len(bulk.dueQ))
	}
	for _, en := range bulk.dueQ {
		if bulk.sched[en.id] != en {
			t.Errorf("%s: queued entry is not the connection's", en.id)
		}
	}
	_, orderOne := plans(t, one)
	_, orderBulk := plans(t, bulk)
	if !slices.Equal(orderOne, orderBulk) {
		t.Error("queue order differs")
	}
	if fmt.Sprint(one.spread.load) != fmt.Sprint(bulk.spread.load) {
		t.Error("spreading load differs")
	}
	po, pb := &one.probes, &bulk.probes
	if len(po.conns) != len(pb.conns) || len(po.conns) < 1000 {
		t.Fatalf("prober entries: Observe %d, Seed %d", len(po.conns), len(pb.conns))
	}
	for id, a := range po.conns {
		if b, ok := pb.conns[id]; !ok || a != b {
			t.Errorf("prober entry %s: Observe %+v, Seed %+v", id, a, b)
		}
	}
	if !slices.Equal(po.providers.list, pb.providers.list) || !slices.Equal(po.unplanned, pb.unplanned) || len(po.due) != len(pb.due) {
		t.Errorf("prober: providers %v / %v, %d / %d unplanned, %d / %d planned", po.providers.list, pb.providers.list,
			len(po.unplanned), len(pb.unplanned), len(po.due), len(pb.due))
	}
	all := func(string) bool { return true }
	po.take(t0, one.cfg.Probers, all) // plans the first probes
	pb.take(t0, bulk.cfg.Probers, all)
	later := t0.Add(10 * time.Minute) // past every first probe
	if a, b := po.take(later, one.cfg.Probers, all), pb.take(later, bulk.cfg.Probers, all); !slices.Equal(a, b) || len(a) == 0 {
		t.Errorf("first probes: Observe %d, Seed %d (or none)", len(a), len(b))
	}
}

// jitter hashes the id with FNV-1a as hash/fnv does: the factor, and so
// every planned refresh, stays what it was.
func TestJitterIsFNV1a(t *testing.T) {
	for _, id := range []string{"", "a", "burst-001", "00000000-0000-4000-8000-000000000000", "3f2a9c4e-1b7d-4e8a-9f0c-5d6e7a8b9c0d", "é-ü"} {
		h := fnv.New32a()
		_, _ = h.Write([]byte(id))
		if want := 0.9 + float64(h.Sum32()%1000)/5000; jitter(id) != want {
			t.Errorf("jitter(%q) = %v, want %v", id, jitter(id), want)
		}
	}
}
