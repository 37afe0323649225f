package vault

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/jsreq"
	"github.com/tokenline/tokenline/domain"
)

// Prefetch starts reading the connection's token set and returns a
// function that waits for it, with Get's answers. The read's request is
// sent before Prefetch returns, from the caller's goroutine, so that it
// overlaps a request the caller has on its way on the same connection (a
// refresh calls it right behind its lock's append: jsstore.AppendThen)
// without a goroutine of the caller's, whose start (it runs only once the
// caller blocks, behind whatever the caller's requests woke) made the read
// start tens of microseconds late (BenchmarkRefreshCycle). The answer is
// opened on the vault's reply subscription's goroutine.
//
// The function must be called once; it honours ctx. A bucket with more than
// one replica is read by Get (from its leader) on a goroutine meanwhile; an
// answer other than the message or "not found" (no responders during an
// election, say), or no answer within a try (jsreq.TryTimeout), is read
// again by Get, which retries as every vault read does: the answer is
// always the one Get gives.
func (v *Vault) Prefetch(ctx context.Context, connectionID string) func() (domain.Tokens, error) {
	get := func() (domain.Tokens, error) { return v.Get(ctx, connectionID) }
	if err := validateID(connectionID); err != nil {
		return func() (domain.Tokens, error) { return domain.Tokens{}, err }
	}
	if v.replicas > 1 {
		return v.getMeanwhile(ctx, connectionID) // from the leader, as Get reads
	}
	r, err := v.replies()
	if err != nil {
		return v.getMeanwhile(ctx, connectionID)
	}
	token := strconv.FormatUint(r.next.Add(1), 36)
	w := &prefetch{id: connectionID, done: make(chan struct{})}
	r.waiting.Store(token, w)
	nc := v.js.Conn()
	subject := jsreq.DirectGetSubject(v.js, "KV_"+v.bucket, "$KV."+v.bucket+"."+connectionID)
	if err := nc.PublishRequest(subject, r.prefix+token, nil); err != nil {
		r.waiting.Delete(token)
		return v.getMeanwhile(ctx, connectionID)
	}
	return func() (domain.Tokens, error) {
		t := time.NewTimer(jsreq.TryTimeout)
		defer t.Stop()
		select {
		case <-w.done:
			if !w.retry {
				return w.toks, w.err
			}
		case <-t.C:
			r.waiting.Delete(token)
		case <-ctx.Done():
			r.waiting.Delete(token)
		}
		return get()
	}
}

// getMeanwhile is Prefetch by a Get on a goroutine of its own, which runs
// before this call returns (the caller hands over to it until it starts).
func (v *Vault) getMeanwhile(ctx context.Context, connectionID string) func() (domain.Tokens, error) {
	w := &prefetch{done: make(chan struct{})}
	started := make(chan struct{})
	go func() {
		defer close(w.done)
		close(started)
		w.toks, w.err = v.Get(ctx, connectionID)
	}()
	<-started
	return func() (domain.Tokens, error) {
		<-w.done
		return w.toks, w.err
	}
}

// prefetch is one read Prefetch sent: its answer, set before done closes.
type prefetch struct {
	id    string
	done  chan struct{}
	toks  domain.Tokens
	err   error
	retry bool // no usable answer: read again (Get)
}

// replySub is the vault's subscription for Prefetch's answers: one
// subject per read under an inbox of the connection's (its inbox prefix,
// which a NATS account's permissions allow).
type replySub struct {
	sub     *nats.Subscription
	prefix  string
	next    atomic.Uint64
	waiting sync.Map // token -> *prefetch
}

// replies returns the reply subscription, subscribing once; a failed
// subscription is tried again at the next call.
func (v *Vault) replies() (*replySub, error) {
	v.replyMu.Lock()
	defer v.replyMu.Unlock()
	if v.reply != nil {
		return v.reply, nil
	}
	nc := v.js.Conn()
	if nc == nil {
		return nil, errors.New("vault: no NATS connection")
	}
	r := &replySub{prefix: nc.NewInbox() + "."}
	sub, err := nc.Subscribe(r.prefix+"*", func(m *nats.Msg) { v.answer(r, m) })
	if err != nil {
		return nil, err
	}
	r.sub = sub
	v.reply = r
	return r, nil
}

// answer hands a direct get's answer to the read waiting for it, opened.
func (v *Vault) answer(r *replySub, m *nats.Msg) {
	x, ok := r.waiting.LoadAndDelete(m.Subject[len(r.prefix):])
	if !ok {
		return // given up on (it read again)
	}
	w := x.(*prefetch)
	defer close(w.done)
	entry, err := jsreq.ParseDirectGet("KV_"+v.bucket, m)
	if err == nil && isDeletion(entry) {
		err = jetstream.ErrMsgNotFound
	}
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		w.err = noTokens(w.id)
	case err != nil:
		w.retry = true
	default:
		w.toks, w.err = v.decode(w.id, entry)
	}
}
