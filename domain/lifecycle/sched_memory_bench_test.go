package lifecycle

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tokenline/tokenline/domain"
)

// BenchmarkSchedulerMemory measures the live heap the scheduler and the
// prober hold per connection: 100k active connections with 15-minute
// tokens observed one by one (as the status projection's hook does),
// without a prober (serve's default: the prober still keeps each
// connection's provider) and with one for their provider (every
// connection planned in the probe heap). The connections' ids are held by
// the benchmark (the status projection holds them in production).
//
//	go test -run '^$' -bench SchedulerMemory -benchtime 1x ./domain/lifecycle/
func BenchmarkSchedulerMemory(b *testing.B) {
	const conns = 100_000
	const life = 15 * time.Minute
	live := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	for _, probed := range []bool{false, true} {
		b.Run(fmt.Sprintf("prober=%v", probed), func(b *testing.B) {
			for range b.N {
				now := time.Unix(1_700_000_000, 0)
				cs := make([]*domain.Connection, conns)
				for i := range cs {
					cs[i] = activeConn(strings.Clone(uuid.NewString()), 3, now.Add(-life+time.Duration(i)*life/conns), life)
					cs[i].Provider = "p"
				}
				before := live()
				s := &Service{cfg: Config{Margin: DefaultMargin, Concurrency: 16, Lease: 30 * time.Second, LeaseGrace: 30 * time.Second},
					clock: benchClock{&now}, sched: map[string]*schedEntry{}, inflight: map[string]bool{}, spread: newSpreader(16)}
				if probed {
					s.cfg.Probers = map[string]domain.Prober{"p": everyProber(5 * time.Minute)}
				}
				for _, c := range cs {
					s.Observe(nil, c)
				}
				if probed {
					s.probes.take(now, s.cfg.Probers, func(string) bool { return true })
				}
				per := float64(live()-before) / conns
				b.ReportMetric(per, "live-B/conn")
				fmt.Printf("scheduler and prober, %d connections (prober %v): live heap %.0f B/conn\n", conns, probed, per)
				runtime.KeepAlive(s)
				runtime.KeepAlive(cs)
			}
		})
	}
}
