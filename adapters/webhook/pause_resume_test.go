package webhook_test

import (
	"context"
	"testing"
	"time"

	"github.com/tokenline/tokenline/adapters/webhook"
)

// A subscription paused and resumed at once delivers what was stored
// meanwhile without waiting out the pin of the stopped deliverer's pull
// request (PinnedTTL, 10 minutes here: the wait below is far shorter).
func TestQuickPauseResumeDoesNotWaitForThePin(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t)
	m := e.open(t, func(c *webhook.Config) { c.PinnedTTL = 10 * time.Minute })
	w := subscribe(t, m, r, webhook.CreateRequest{})
	cs := conns(1)
	ctx := context.Background()
	for round := range 3 {
		// The deliverer has a pull request waiting (nothing to deliver
		// yet, so it never got an event).
		for i := 0; ; i++ {
			c, err := e.js.Consumer(ctx, "TOKENLINE", webhook.ConsumerPrefix+w.ID)
			if err == nil && c.CachedInfo().NumWaiting > 0 {
				break
			}
			if i == 1000 {
				t.Fatalf("no pull request waiting: %v", err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if _, err := m.Pause(ctx, w.ID, "test"); err != nil {
			t.Fatal(err)
		}
		e.publish(t, cs[0], round, 1)
		if _, err := m.Resume(ctx, w.ID, "test"); err != nil {
			t.Fatal(err)
		}
		r.wait(t, 1+round) // at most 60 s (receiver.wait)
	}
	r.checkOrder(t, cs, 3)
}
