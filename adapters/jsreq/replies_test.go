package jsreq_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tokenline/tokenline/adapters/jsreq"
	"github.com/tokenline/tokenline/adapters/natstest"
)

// Requests sent one after the other and waited for in the other order
// each get their own answer; a subject nobody listens on is reported as
// nats.ErrNoResponders.
func TestRepliesMatchAnswersToRequests(t *testing.T) {
	srv := natstest.Start(t, "")
	nc, peer := srv.Connect(t), srv.Connect(t)
	answer(t, peer, "echo", func(m *nats.Msg) { _ = m.Respond(append([]byte("re:"), m.Data...)) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := jsreq.NewReplies(nc)
	var pending []*jsreq.Pending
	for i := range 5 {
		p, err := r.Send(&nats.Msg{Subject: "echo", Data: fmt.Appendf(nil, "%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		pending = append(pending, p)
	}
	for i := len(pending) - 1; i >= 0; i-- {
		m, err := pending[i].Wait(ctx)
		if err != nil || string(m.Data) != fmt.Sprintf("re:%d", i) {
			t.Fatalf("request %d: %v %q", i, err, m.Data)
		}
	}
	if _, err := r.Request(ctx, &nats.Msg{Subject: "nobody.listens"}); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("no responders: %v", err)
	}
}

// A request that gave up leaves its subscription to the next request,
// which gets its own answer, not the late one; subscriptions beyond the
// idle bound are unsubscribed once their requests are answered.
func TestRepliesDropLateAnswersAndBoundSubscriptions(t *testing.T) {
	srv := natstest.Start(t, "")
	nc, peer := srv.Connect(t), srv.Connect(t)
	release := make(chan struct{})
	if _, err := peer.Subscribe("slow", func(m *nats.Msg) {
		<-release
		_ = m.Respond([]byte("late"))
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := peer.Subscribe("fast", func(m *nats.Msg) { _ = m.Respond([]byte("fast")) }); err != nil {
		t.Fatal(err)
	}
	if err := peer.Flush(); err != nil {
		t.Fatal(err)
	}
	r := jsreq.NewReplies(nc)
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := r.Request(short, &nats.Msg{Subject: "slow"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow request: %v", err)
	}
	subs := nc.NumSubscriptions()
	p, err := r.Send(&nats.Msg{Subject: "fast"})
	if err != nil {
		t.Fatal(err)
	}
	close(release) // the late answer now lands in the same subscription
	if err := peer.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if m, err := p.Wait(ctx); err != nil || string(m.Data) != "fast" {
		t.Fatalf("after a request that gave up: %v %q", err, m.Data)
	}
	if nc.NumSubscriptions() != subs {
		t.Fatalf("%d subscriptions, want %d (the one reused)", nc.NumSubscriptions(), subs)
	}

	// 100 requests in flight at once: 100 subscriptions, 64 kept after.
	var wg sync.WaitGroup
	gate := make(chan struct{})
	var held []*jsreq.Pending
	var mu sync.Mutex
	for range 100 {
		p, err := r.Send(&nats.Msg{Subject: "fast"})
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, p)
	}
	for _, p := range held {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			m, err := p.Wait(ctx)
			mu.Lock()
			defer mu.Unlock()
			if err != nil || string(m.Data) != "fast" {
				t.Errorf("%v %q", err, m.Data)
			}
		}()
	}
	close(gate)
	wg.Wait()
	if got := nc.NumSubscriptions(); got != subs-1+64 {
		t.Fatalf("%d subscriptions after 100 requests at once, want %d", got, subs-1+64)
	}
}

// The subscriptions a Replies keeps cost little memory: each holds a
// channel of a few messages, not the connection's SubChanLen (65,536
// pointers, 512 KiB, for a synchronous subscription: 32 MiB for the 64
// kept, found in the 10k scale run's heap).
func TestRepliesKeptSubscriptionsAreSmall(t *testing.T) {
	srv := natstest.Start(t, "")
	nc, peer := srv.Connect(t), srv.Connect(t)
	answer(t, peer, "fast", func(m *nats.Msg) { _ = m.Respond([]byte("ok")) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := jsreq.NewReplies(nc)
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	var held []*jsreq.Pending
	for range 64 {
		p, err := r.Send(&nats.Msg{Subject: "fast"})
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, p)
	}
	for _, p := range held {
		if m, err := p.Wait(ctx); err != nil || string(m.Data) != "ok" {
			t.Fatalf("%v", err)
		}
	}
	grew := int64(heap()) - int64(before)
	if grew > 4<<20 {
		t.Fatalf("64 kept reply subscriptions hold %d bytes, want under 4 MiB", grew)
	}
	t.Logf("64 kept reply subscriptions: %d bytes", grew)
	runtime.KeepAlive(r)
}

// answer subscribes fn to subject on peer and flushes, so that requests
// sent afterwards find it.
func answer(t *testing.T, peer *nats.Conn, subject string, fn nats.MsgHandler) {
	t.Helper()
	if _, err := peer.Subscribe(subject, fn); err != nil {
		t.Fatal(err)
	}
	if err := peer.Flush(); err != nil {
		t.Fatal(err)
	}
}
