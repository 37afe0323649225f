package app

import (
	"strings"
	"testing"
	"time"
)

// The token-timing rule is checked at start-up for every provider whose
// access-token lifetime is known; the error names the provider and the
// flags, and the timing flags are bounded.
func TestValidateLifetimes(t *testing.T) {
	env := func(string) (string, bool) { return "", false }
	c := DefaultConfig()
	c.DataDir = t.TempDir()
	for _, ttl := range []time.Duration{5 * time.Second, 20 * time.Second, 15 * time.Minute, time.Hour, 24 * time.Hour} {
		c.SandboxAccessTTL = ttl
		specs, err := c.ProviderSpecs(env)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.ValidateLifetimes(specs); err != nil {
			t.Errorf("sandbox tokens of %v with the defaults: %v", ttl, err)
		}
	}
	c.SandboxAccessTTL = time.Second
	specs, _ := c.ProviderSpecs(env)
	err := c.ValidateLifetimes(specs)
	for _, want := range []string{"provider sandbox", "--sandbox-access-ttl 1s", "--gate-expiry-margin", "--refresh-latency", "shortest lifetime"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("1 s sandbox tokens: %v; want it to say %q", err, want)
		}
	}
	// Pleo's 15 minutes are known: a latency that leaves no window is refused.
	c = DefaultConfig()
	c.DataDir, c.Provider, c.ClientID, c.ClientSecret = t.TempDir(), "pleo", "id", "secret"
	c.RefreshLatency = 5 * time.Minute
	if specs, err = c.ProviderSpecs(env); err != nil {
		t.Fatal(err)
	}
	if err := c.ValidateLifetimes(specs); err == nil || !strings.Contains(err.Error(), "provider pleo") {
		t.Errorf("pleo with a 5 min refresh latency: %v", err)
	}
	for _, bad := range []func(*Config){
		func(c *Config) { c.GateExpiryMargin = time.Millisecond },
		func(c *Config) { c.GateExpiryMargin = 2 * time.Hour },
		func(c *Config) { c.RefreshLatency = 0 },
		func(c *Config) { c.RefreshLatency = time.Hour },
	} {
		c := DefaultConfig()
		c.DataDir = t.TempDir()
		bad(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}
