package lifecycle

import (
	"context"
	"time"
)

// gateWaiter is the gate's optional waiting capability
// (projections.(*Gate).Wait): call check again at each change of the
// connection while its refusal is one that time cures.
type gateWaiter interface {
	Wait(ctx context.Context, connectionID string, check func(context.Context) (string, error)) (string, error)
}

// Await is Check that waits, while ctx lasts, for a refresh that is due or
// in flight (or a token not loaded yet) instead of refusing at once: it
// returns the token, a refusal a person must act on, or, when ctx ends
// first, the refusal that waiting would have cured
// ((*domain.GateError).RetryLater). With a gate that cannot wait it is
// Check. The RoundTripper calls it after Check refused.
func (s *Service) Await(ctx context.Context, connectionID string) (string, error) {
	w, ok := s.cfg.Gate.(gateWaiter)
	if !ok {
		return s.Check(ctx, connectionID)
	}
	return w.Wait(ctx, connectionID, func(ctx context.Context) (string, error) { return s.Check(ctx, connectionID) })
}

// TokenWait is Token that waits up to wait (and while ctx lasts) as Await
// does. wait ≤ 0 does not wait.
func (s *Service) TokenWait(ctx context.Context, id string, wait time.Duration) (string, time.Time, error) {
	tok, exp, err := s.Token(ctx, id)
	w, ok := s.cfg.Gate.(gateWaiter)
	if err == nil || wait <= 0 || !ok {
		return tok, exp, err
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	tok, err = w.Wait(ctx, id, func(ctx context.Context) (string, error) {
		var err error
		tok, exp, err = s.Token(ctx, id)
		return tok, err
	})
	return tok, exp, err
}
