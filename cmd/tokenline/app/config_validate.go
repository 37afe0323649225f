package app

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"time"
)

// validateValues checks the values of serve's flags that are not about
// providers, so that a bad one is refused before anything starts: no
// embedded NATS, no data dir written (Main.Run validates first). Zero
// durations and counts that the lifecycle would silently replace by a
// default are refused too: a flag says what it does or is refused.
func (c *Config) validateValues() error {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", c.LogLevel)
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		return fmt.Errorf("--log-format %q: want json or text", c.LogFormat)
	}
	if err := hostPort("--http", c.HTTPAddr); err != nil {
		return err
	}
	if c.NATSURL == "" {
		if err := hostPort("--nats-listen", c.NATSListen); err != nil {
			return err
		}
	}
	if c.PublicURL != "" {
		u, err := url.Parse(c.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("--public-url %q: want an absolute http or https URL without query or fragment", c.PublicURL)
		}
	}
	for _, n := range []struct {
		flag string
		v    int
	}{{"--max-attempts", c.MaxAttempts}, {"--concurrency", c.Concurrency}} {
		if n.v < 1 || n.v > 100000 {
			return fmt.Errorf("%s %d: want 1 to 100000", n.flag, n.v)
		}
	}
	// 0 would be replaced by the projections' default (10000) without a
	// word: refused like the other zero counts.
	if c.SnapshotEvery < 1 {
		return fmt.Errorf("--snapshot-every %d: want 1 or more", c.SnapshotEvery)
	}
	if _, err := probeOwner(c.ProbeShard); err != nil { // providers_detect.go
		return err
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{
		{"--backoff-base", c.BackoffBase}, {"--refresh-lease", c.RefreshLease}, {"--tick", c.Tick},
		{"--authorisation-ttl", c.AuthorisationTTL}, {"--sandbox-refresh-ttl", c.SandboxRefreshTTL},
		// --sandbox-access-ttl: 0s means tokens without expiry (validateSandboxGrant).
	} {
		if d.v <= 0 {
			return fmt.Errorf("%s %s: want a positive duration", d.flag, d.v)
		}
	}
	if c.GateExpiryMargin < 0 {
		return fmt.Errorf("--gate-expiry-margin %s: want 0 or more", c.GateExpiryMargin)
	}
	if err := c.Webhooks.validate(); err != nil { // webhooks.go
		return err
	}
	switch c.SandboxConsent {
	case "prompt", "approve", "deny":
	default:
		return fmt.Errorf("--sandbox-consent %q: want prompt, approve or deny", c.SandboxConsent)
	}
	return nil
}

// hostPort checks a listen address: host:port with a port of 0 to 65535.
func hostPort(flag, addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err == nil {
		var n uint64
		if n, err = strconv.ParseUint(port, 10, 16); err == nil && n > 65535 {
			err = fmt.Errorf("port out of range")
		}
	}
	if err != nil {
		return fmt.Errorf("%s %q: want host:port (port 0 to 65535): %v", flag, addr, err)
	}
	return nil
}
