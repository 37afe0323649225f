package jsreq

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Replies sends requests whose answer is waited for later: Send writes
// the request to the connection and returns at once, so that the caller
// can send another request before it waits (nats.go's Request sends and
// waits in one call). Each request borrows a channel subscription of its
// own, from a pool, whose channel the connection's reader fills: the
// answer goes to the goroutine waiting for it without passing through
// another goroutine (nats.go's Request hands every answer to a shared
// subscription's goroutine first). The channel holds replyBuffer messages
// (a synchronous subscription's would hold the connection's SubChanLen,
// 65,536 by default: 512 KiB for each subscription kept).
//
// Each subscription covers an inbox of its own (<inbox>.*) and every
// request gets the next reply subject under it, so a late answer to an
// earlier request that gave up is recognised and dropped. Safe for
// concurrent use.
type Replies struct {
	nc   *nats.Conn
	mu   sync.Mutex
	idle []*replyBox
}

// maxIdleReplies bounds the subscriptions a Replies keeps between
// requests (as many as requests were in flight at once; those beyond it
// are unsubscribed).
const maxIdleReplies = 64

// replyBuffer is the messages a reply subscription's channel holds: the
// answer and a few late answers to earlier requests that gave up. Beyond
// it nats.go drops a message (a slow consumer); a request whose answer
// was dropped ends with its context, as one whose answer never came.
const replyBuffer = 8

// waitBound bounds Wait when its context has no deadline: a channel
// subscription is not closed when the connection closes.
const waitBound = time.Minute

// replyBox is one reply subscription.
type replyBox struct {
	sub    *nats.Subscription
	ch     chan *nats.Msg
	prefix string // <inbox>.
	n      uint64
}

// NewReplies returns a Replies sending on nc.
func NewReplies(nc *nats.Conn) *Replies { return &Replies{nc: nc} }

// Pending is a request sent and not answered yet. Wait must be called
// once.
type Pending struct {
	r     *Replies
	b     *replyBox
	reply string
}

func (r *Replies) box() (*replyBox, error) {
	r.mu.Lock()
	if n := len(r.idle); n > 0 {
		b := r.idle[n-1]
		r.idle = r.idle[:n-1]
		r.mu.Unlock()
		return b, nil
	}
	r.mu.Unlock()
	inbox := r.nc.NewInbox()
	ch := make(chan *nats.Msg, replyBuffer)
	sub, err := r.nc.ChanSubscribe(inbox+".*", ch)
	if err != nil {
		return nil, err
	}
	return &replyBox{sub: sub, ch: ch, prefix: inbox + "."}, nil
}

func (r *Replies) release(b *replyBox) {
	r.mu.Lock()
	if len(r.idle) < maxIdleReplies {
		r.idle = append(r.idle, b)
		b = nil
	}
	r.mu.Unlock()
	if b != nil {
		_ = b.sub.Unsubscribe()
	}
}

// Send publishes m as a request (m.Reply is set for the call and restored)
// and returns it pending.
func (r *Replies) Send(m *nats.Msg) (*Pending, error) {
	b, err := r.box()
	if err != nil {
		return nil, err
	}
	b.n++
	p := &Pending{r: r, b: b, reply: b.prefix + strconv.FormatUint(b.n, 36)}
	old := m.Reply
	m.Reply = p.reply
	err = r.nc.PublishMsg(m)
	m.Reply = old
	if err != nil {
		r.release(b)
		return nil, err
	}
	return p, nil
}

// Request is Send and Wait.
func (r *Replies) Request(ctx context.Context, m *nats.Msg) (*nats.Msg, error) {
	p, err := r.Send(m)
	if err != nil {
		return nil, err
	}
	return p.Wait(ctx)
}

// Wait returns the answer, ctx's error if ctx ends first, or
// nats.ErrNoResponders when the server reports that nobody listens on the
// request's subject (as nats.go's Request does).
func (p *Pending) Wait(ctx context.Context) (*nats.Msg, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, waitBound)
		defer cancel()
	}
	for {
		select {
		case <-ctx.Done():
			if p.r.nc.IsClosed() || !p.b.sub.IsValid() {
				_ = p.b.sub.Unsubscribe() // closed: not reused
			} else {
				p.r.release(p.b) // a late answer is told apart by its subject
			}
			return nil, ctx.Err()
		case m := <-p.b.ch:
			if m.Subject != p.reply {
				continue // the answer to an earlier request that gave up
			}
			p.r.release(p.b)
			if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
				return nil, nats.ErrNoResponders
			}
			return m, nil
		}
	}
}
