package app

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenline/tokenline/adapters/httpapi"
	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
	"github.com/tokenline/tokenline/adapters/jsstore"
	"github.com/tokenline/tokenline/adapters/vault"
	"github.com/tokenline/tokenline/events"
)

// Tamper evidence and the stream's shape (docs/operations.md, "Tamper
// evidence"): the signing key, the checkpoint writer, the periodic shape
// check behind /readyz and their metrics.

// EnvSigningKey may hold the checkpoint signing key's 32-byte seed (64 hex
// digits or base64), as TOKENLINE_VAULT_KEY holds the vault key.
const EnvSigningKey = "TOKENLINE_SIGNING_KEY"

// shapeInterval is how often the stream's shape is checked again.
const shapeInterval = time.Minute

// Metric names.
const (
	MetricStreamShapeOK = "tokenline_stream_shape_ok"
	MetricChainBreaks   = "tokenline_chain_breaks_total"
	MetricCheckpoints   = "tokenline_checkpoints_written_total"
)

// integrity holds the state of the checks.
type integrity struct {
	key         ed25519.PrivateKey
	checkpoints prometheus.Counter

	mu       sync.Mutex
	shapeErr error // nil: the stream is as required
	checked  bool
}

// signingKey loads the checkpoint signing key: TOKENLINE_SIGNING_KEY, or
// the key file (default <data-dir>/signing.key, created with mode 0600 like
// the vault key). Instances that share a stream share this key, as they
// share the vault key.
func (m *Main) signingKey() (ed25519.PrivateKey, error) {
	var seed []byte
	var err error
	if v := os.Getenv(EnvSigningKey); v != "" {
		seed, err = vault.KeyFromEnv(v)
	} else {
		seed, err = vault.LoadOrCreateKey(cmp.Or(m.Config.SigningKeyFile, filepath.Join(m.Config.DataDir, "signing.key")))
	}
	if err != nil {
		return nil, err
	}
	defer clear(seed)
	return ed25519.NewKeyFromSeed(seed), nil
}

// startIntegrity loads the key, checks the stream's shape once, registers
// the metrics and starts the checkpoint writer and the periodic check.
func (m *Main) startIntegrity(ctx context.Context) error {
	key, err := m.signingKey()
	if err != nil {
		return err
	}
	m.integrity = &integrity{key: key}
	ig := m.integrity
	m.checkShape(ctx)
	ig.checkpoints = prometheus.NewCounter(prometheus.CounterOpts{Name: MetricCheckpoints, Help: "Signed checkpoints this instance wrote."})
	for _, c := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: MetricStreamShapeOK, Help: "1 when the event stream, the checkpoint stream and the buckets are configured as tokenline requires, 0 when someone changed them (see /readyz)."}, func() float64 {
			if ig.shape() != nil {
				return 0
			}
			return 1
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: MetricChainBreaks, Help: "Stream events the status projection refused since start because they do not extend their connection's hash chain (forged, altered or out of order)."}, func() float64 {
			return float64(m.Proj.Status.ChainBreaks())
		}),
		ig.checkpoints,
	} {
		if err := m.registry.Register(c); err != nil {
			return err
		}
	}
	interval := m.Config.CheckpointInterval
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		shape := time.NewTicker(shapeInterval)
		defer shape.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-shape.C:
				m.checkShape(ctx)
			case now := <-t.C:
				if ig.shape() != nil {
					continue // do not sign heads of a stream someone reconfigured
				}
				n, err := m.Store.WriteCheckpoint(ctx, key, now)
				ig.checkpoints.Add(float64(n))
				if err != nil && ctx.Err() == nil {
					m.Logger.Error("checkpoint not written", "error", err.Error())
				}
			}
		}
	}()
	return nil
}

// checkShape compares the streams and buckets with the configuration and
// logs a change (once per change).
func (m *Main) checkShape(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := m.Store.CheckShape(cctx, map[string]time.Duration{
		vault.DefaultBucket:              0,
		vault.DefaultAttemptsBucket:      m.attemptsTTL(),
		jsstore.PositionsBucket:          0,
		"OBJ_" + jsstore.SnapshotsBucket: 0,
	})
	if err != nil && !errors.Is(err, jsstore.ErrShape) {
		if ctx.Err() != nil {
			return
		}
		// Could not read the configuration (NATS down): the nats check
		// says so; keep the last verdict.
		m.Logger.Warn("stream shape not checked", "error", err.Error())
		return
	}
	ig := m.integrity
	ig.mu.Lock()
	changed := !ig.checked || (err == nil) != (ig.shapeErr == nil) || err != nil && err.Error() != ig.shapeErr.Error()
	ig.shapeErr, ig.checked = err, true
	ig.mu.Unlock()
	switch {
	case changed && err != nil:
		m.Logger.Error("stream configuration changed: tokenline is not ready until it is restored", "error", err.Error())
	case changed && ig.checked:
		m.Logger.Info("stream configuration is as required")
	}
}

func (ig *integrity) shape() error {
	ig.mu.Lock()
	defer ig.mu.Unlock()
	return ig.shapeErr
}

// shapeReady is the /readyz check "stream".
func (m *Main) shapeReady() httpapi.Check {
	return httpapi.Check{Name: "stream", Probe: httpapi.ReadinessFunc(func(context.Context) error {
		return m.integrity.shape()
	})}
}

// signingKeyInfo is what GET /v1/signing-key serves.
func (m *Main) signingKeyInfo() *apitypes.SigningKey {
	return &apitypes.SigningKey{
		Key:               events.FormatKey(m.integrity.key.Public().(ed25519.PublicKey)),
		Algorithm:         "Ed25519",
		CheckpointStream:  jsstore.CheckpointStreamConfig(jsstore.Config{Stream: m.Store.StreamName()}).Name,
		CheckpointSubject: events.CheckpointSubject,
	}
}
