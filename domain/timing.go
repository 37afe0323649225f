package domain

import (
	"fmt"
	"time"
)

// TokenTiming is the one rule that ties together the gate margin (how long
// before its expiry an access token stops being handed out), the refresh
// lead time (how long before expiry the scheduler refreshes it) and the
// expected refresh latency, so that a healthy connection always has a
// usable token, for any lifetime from a few seconds to days:
//
//	margin(L) = min(MaxGateMargin, L/10)
//	need(L)   = margin(L) + RefreshLatency + RefreshLatency/2   (latency plus 50 % slack)
//	lead(L)   = max(min(clamp(L/5, 1 s, 5 min), L/2), need(L)/0.9)   (0.9: the scheduler's jitter is ±10 %)
//
// The scheduler starts a refresh lead(L)·jitter ≥ need(L) before expiry, so
// the fresh token lands at least margin + slack before the gate would stop
// handing out the old one. The rule holds for a lifetime L when
// need(L) ≤ L/2 (the refresh never starts in the first half of a token's
// life); Check says when it does not. docs/transitions.md ("Token
// lifetimes") explains it with worked examples.
//
// The zero value uses DefaultMaxGateMargin and DefaultRefreshLatency.
type TokenTiming struct {
	// MaxGateMargin caps the gate margin (tokenline serve
	// --gate-expiry-margin). Default DefaultMaxGateMargin.
	MaxGateMargin time.Duration
	// RefreshLatency is how long a refresh is expected to take from its
	// planned start to the fresh token in the gate (--refresh-latency).
	// Default DefaultRefreshLatency.
	RefreshLatency time.Duration
}

// Defaults of TokenTiming.
const (
	DefaultMaxGateMargin  = 10 * time.Second
	DefaultRefreshLatency = 500 * time.Millisecond
)

func (t TokenTiming) maxMargin() time.Duration {
	if t.MaxGateMargin <= 0 {
		return DefaultMaxGateMargin
	}
	return t.MaxGateMargin
}

func (t TokenTiming) latency() time.Duration {
	if t.RefreshLatency <= 0 {
		return DefaultRefreshLatency
	}
	return t.RefreshLatency
}

// GateMargin is how long before its expiry a token of lifetime L stops
// being handed out: L/10, at most MaxGateMargin. An unknown lifetime
// (L ≤ 0) gets MaxGateMargin.
func (t TokenTiming) GateMargin(lifetime time.Duration) time.Duration {
	if lifetime <= 0 {
		return t.maxMargin()
	}
	return min(t.maxMargin(), lifetime/10)
}

// NoRefreshMargin caps the gate margin of an access token nothing will
// renew (a grant without a refresh token): see GateMarginWithoutRefresh.
const NoRefreshMargin = time.Second

// GateMarginWithoutRefresh is how long before its expiry an access token
// of lifetime L that no refresh will replace (its grant has no refresh
// token) stops being handed out: min(GateMargin(L), NoRefreshMargin). The
// gate margin of a renewable token leaves room for its refresh to land;
// with no refresh to wait for, the token is handed out for all of its life
// but this safety margin (a call in flight, clock skew with the provider),
// and refused after it as a connection a person must reconnect
// (refresh_not_granted), never as a refresh in progress.
func (t TokenTiming) GateMarginWithoutRefresh(lifetime time.Duration) time.Duration {
	return min(t.GateMargin(lifetime), NoRefreshMargin)
}

// Need is the least time before expiry at which a refresh must start:
// the gate margin, the expected latency and half of it again as slack.
func (t TokenTiming) Need(lifetime time.Duration) time.Duration {
	return t.GateMargin(lifetime) + t.latency() + t.latency()/2
}

// Lead is how long before expiry a token of lifetime L is refreshed
// (before the scheduler's ±10 % jitter): L/5 clamped to [1 s, 5 min] (and
// to L/2 for lifetimes under 2 s), but never less than Need/0.9, so that
// even the earliest jitter leaves Need.
func (t TokenTiming) Lead(lifetime time.Duration) time.Duration {
	base := min(max(lifetime/5, time.Second), 5*time.Minute)
	if lifetime > 0 {
		base = min(base, lifetime/2)
	}
	floor := t.Need(lifetime)*10/9 + time.Microsecond // rounding: 0.9·floor ≥ Need
	return max(base, floor)
}

// Check reports whether the rule holds for access tokens of this lifetime
// (need(L) ≤ L/2); the error says by how much it does not and what to
// change. A lifetime ≤ 0 (unknown) is not checked.
func (t TokenTiming) Check(lifetime time.Duration) error {
	if lifetime <= 0 {
		return nil
	}
	if need := t.Need(lifetime); need > lifetime/2 {
		return fmt.Errorf("access tokens living %s leave no window to refresh in: gate margin %s + refresh latency %s + slack %s = %s is more than half the lifetime (%s); the shortest lifetime these settings support is %s: lower the refresh latency or the gate margin",
			lifetime, t.GateMargin(lifetime), t.latency(), t.latency()/2, need, lifetime/2, t.MinLifetime())
	}
	return nil
}

// MinLifetime is the shortest access-token lifetime the rule holds for.
func (t TokenTiming) MinLifetime() time.Duration {
	l := t.latency() + t.latency()/2
	// With margin L/10: L/10 + l ≤ L/2, so L ≥ 2.5·l (valid while L/10 ≤ max margin).
	if short := l * 5 / 2; short/10 <= t.maxMargin() {
		return short
	}
	// With the capped margin M: M + l ≤ L/2.
	return 2 * (t.maxMargin() + l)
}

// TokensIssuedAt is when a connection's current tokens were stored: its
// last successful refresh, or else when it became active. With the access
// token's expiry it gives the token's lifetime.
func TokensIssuedAt(c *Connection) time.Time {
	if c.LastRefreshAt.IsZero() || !c.LastRefreshOK {
		return c.Since
	}
	return c.LastRefreshAt
}
