package jsstore_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/jsstore"
	"github.com/tokenline/tokenline/adapters/natstest"
	"github.com/tokenline/tokenline/domain"
	"github.com/tokenline/tokenline/events"
)

// Verify's read hands messages to its workers in chunks of 512 and folds
// them in stream order: over 1,543 events (three full chunks and a part)
// of 7 connections it reads every event, in order, and reports an event
// altered in the third chunk at the event after it, and no other
// connection.
func TestVerifyReadsEveryChunkInOrder(t *testing.T) {
	const conns, n = 7, 1543
	for _, alterAt := range []int{-1, 1100} {
		t.Run(fmt.Sprintf("alter %d", alterAt), func(t *testing.T) {
			nc := natstest.Start(t, "").Connect(t)
			js := open(t, nc).JetStream()
			now := time.Now().UTC()
			heads := make([][32]byte, conns)
			var ids []string
			for i := range conns {
				ids = append(ids, fmt.Sprintf("2f9c4a4e-6a55-4c0e-a8a5-%012d", i))
			}
			broken := uint64(0) // the seq of the event after the altered one
			for i := range n {
				c := i % conns
				var p domain.Payload = domain.ConnectionUpdated{Config: map[string]string{"v": fmt.Sprint(i)}}
				if i < conns {
					p = domain.ConnectionCreated{Provider: "pleo"}
				}
				e := domain.Event{ID: fmt.Sprint("e", i), ConnectionID: ids[c], Time: now, Actor: "instance/test", Payload: p}
				events.Chain(&e, domain.ChainHead{Hash: heads[c]})
				b, err := events.Encode(e)
				if err != nil {
					t.Fatal(err)
				}
				heads[c] = events.HashOf(b) // the genuine chain
				if i == alterAt {
					e.Actor = "user"
					if b, err = events.Encode(e); err != nil {
						t.Fatal(err)
					}
					broken = uint64(i + conns + 1)
				}
				if _, err := js.Publish(ctxT(t), events.Subject(ids[c]), b); err != nil {
					t.Fatal(err)
				}
			}
			r, err := jsstore.OpenReader(ctxT(t), nc, jsstore.Config{})
			if err != nil {
				t.Fatal(err)
			}
			rep, err := r.Verify(ctxT(t), events.NewVerifier(nil, ""), "")
			if err != nil {
				t.Fatal(err)
			}
			if rep.Events != n || rep.Connections != conns || rep.Refused != 0 {
				t.Fatalf("events %d connections %d refused %d, want %d %d 0", rep.Events, rep.Connections, rep.Refused, n, conns)
			}
			if broken == 0 {
				if len(rep.Breaks) != 0 {
					t.Fatalf("breaks in an intact stream: %v", rep.Breaks)
				}
				return
			}
			// The first break is the event after the altered one; every
			// later genuine event of that connection links to the genuine
			// chain and breaks too; no other connection breaks.
			if len(rep.Breaks) == 0 || rep.Breaks[0].Kind != events.BreakChain || rep.Breaks[0].Seq != broken {
				t.Fatalf("breaks %v, want the first a chain break at seq %d", rep.Breaks, broken)
			}
			for _, b := range rep.Breaks {
				if b.Connection != ids[alterAt%conns] || b.Kind != events.BreakChain {
					t.Fatalf("break %v: not of connection %s", b, ids[alterAt%conns])
				}
			}
		})
	}
}
