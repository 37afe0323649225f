package tests

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/oauth2"

	"github.com/tokenline/tokenline/cmd/tokenline/app"
	"github.com/tokenline/tokenline/domain"
)

func p50(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkRefreshCycle measures one full refresh through tokenline (load,
// append refresh.started with OCC, vault read, token request, vault write,
// append refresh.succeeded, the status projection, gate and scheduler
// following) against a bare golang.org/x/oauth2 refresh of another grant
// on the same sandbox token endpoint, with the production logging (info,
// JSON) and scheduler tick. The two alternate, each going first every
// other time, so that both see the same machine; it prints the p50 of
// each and the difference (tokenline's overhead per refresh), and, as the
// overhead's floor, the p50 of the three writes a refresh needs in
// sequence (lock, tokens, outcome) made as bare JetStream requests in the
// same loop.
//
//	go test -run '^$' -bench RefreshCycle -benchtime 1000x ./tests/
func BenchmarkRefreshCycle(b *testing.B) {
	in := startTB(b, func(c *app.Config) {
		c.LogLevel, c.LogFormat = "info", "json" // the defaults: production logging
		c.Tick = 250 * time.Millisecond
	})
	id, err := in.Lifecycle.Create(context.Background(), "sandbox", []string{"users:read"}, nil)
	if err != nil {
		b.Fatal(err)
	}
	authorise(b, in, id.ID)

	// A second grant, driven by bare x/oauth2 with the same client.
	cfg := oauth2.Config{
		ClientID: in.Sandbox.ClientID(), ClientSecret: in.Sandbox.ClientSecret(),
		RedirectURL: in.BaseURL + "/oauth/callback", Scopes: []string{"users:read"},
		Endpoint: oauth2.Endpoint{AuthURL: in.BaseURL + "/sandbox/oauth/authorize", TokenURL: in.BaseURL + "/sandbox/oauth/token", AuthStyle: oauth2.AuthStyleInHeader},
	}
	verifier := oauth2.GenerateVerifier()
	q := consent(b, cfg.AuthCodeURL("bench-state-0001", oauth2.S256ChallengeOption(verifier)))
	hc := &http.Client{Timeout: 10 * time.Second}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, hc)
	tok, err := cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		b.Fatal(err)
	}
	tlRefresh := func() time.Duration {
		t0 := time.Now()
		if err := in.Lifecycle.Refresh(context.Background(), id.ID, domain.TriggerManual); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	bareRefresh := func() time.Duration {
		t0 := time.Now()
		nt, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
		if err != nil {
			b.Fatal(err)
		}
		d := time.Since(t0)
		tok = nt
		return d
	}
	// The floor of the overhead: the three writes a refresh cannot do
	// without or overlap (the lock before the token request, the tokens
	// stored before the outcome is appended, the outcome), as bare
	// JetStream requests to the same server over tokenline's connection:
	// a publish with the expected last subject sequence, a KV put, a
	// second publish.
	js := in.Store.JetStream()
	fctx, fcancel := context.WithTimeout(context.Background(), time.Minute)
	defer fcancel()
	fstream, err := js.CreateStream(fctx, jetstream.StreamConfig{Name: "BENCH_FLOOR", Subjects: []string{"benchfloor.>"}, Storage: jetstream.FileStorage})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = js.DeleteStream(context.Background(), fstream.CachedInfo().Config.Name) }()
	fkv, err := js.CreateKeyValue(fctx, jetstream.KeyValueConfig{Bucket: "bench_floor", Storage: jetstream.FileStorage})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = js.DeleteKeyValue(context.Background(), "bench_floor") }()
	var floorSeq uint64
	body := make([]byte, 600) // about an event's size
	value := make([]byte, 300)
	floorWrites := func() time.Duration {
		t0 := time.Now()
		for k := range 3 {
			if k == 1 {
				if _, err := fkv.Put(fctx, "tokens", value); err != nil {
					b.Fatal(err)
				}
				continue
			}
			ack, err := js.Publish(fctx, "benchfloor.conn", body, jetstream.WithExpectLastSequencePerSubject(floorSeq))
			if err != nil {
				b.Fatal(err)
			}
			floorSeq = ack.Sequence
		}
		return time.Since(t0)
	}
	// Warm every path (connections, caches) before timing.
	for range 20 {
		tlRefresh()
		bareRefresh()
		floorWrites()
	}
	var tl, bare, floor []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%2 == 0 {
			tl = append(tl, tlRefresh())
			bare = append(bare, bareRefresh())
		} else {
			bare = append(bare, bareRefresh())
			tl = append(tl, tlRefresh())
		}
		floor = append(floor, floorWrites())
	}
	b.StopTimer()
	pt, pb, pf := p50(tl), p50(bare), p50(floor)
	b.ReportMetric(float64(pt.Microseconds())/1000, "tokenline-p50-ms")
	b.ReportMetric(float64(pb.Microseconds())/1000, "bare-p50-ms")
	b.ReportMetric(float64((pt-pb).Microseconds())/1000, "overhead-p50-ms")
	b.ReportMetric(float64(pf.Microseconds())/1000, "three-writes-p50-ms")
	fmt.Printf("refresh cycle (n=%d, log level info, JSON): tokenline p50 %v, bare x/oauth2 p50 %v, overhead %v (target <= 0.3ms); "+
		"the three writes a refresh needs, as bare JetStream requests: p50 %v\n", len(tl), pt, pb, pt-pb, pf)
}

func startB(b *testing.B) *instance {
	b.Helper()
	// start takes a *testing.T for its helpers; benchmarks share the code
	// through testing.TB where it matters.
	return startTB(b, nil)
}
