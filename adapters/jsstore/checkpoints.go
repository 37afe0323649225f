package jsstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
)

// Bucket names of the projections' durable state.
const (
	// PositionsBucket is the KV bucket holding, under a projection's name,
	// the last stream sequence the projection applied (decimal).
	PositionsBucket = "tokenline_positions"
	// SnapshotsBucket is the object store holding, under a projection's
	// name, its latest snapshot.
	SnapshotsBucket = "tokenline_snapshots"
)

// Checkpoints keeps the projections' durable state on JetStream: each
// projection's latest snapshot in the object store SnapshotsBucket and its
// position in the KV bucket PositionsBucket (implements
// projections.Checkpoints). It is safe for concurrent use.
type Checkpoints struct {
	kv  jetstream.KeyValue
	obs jetstream.ObjectStore
}

// Checkpoints opens (creating them if needed) the positions KV bucket and
// the snapshots object store.
func (s *Store) Checkpoints(ctx context.Context) (*Checkpoints, error) {
	js := s.js
	kv, err := js.KeyValue(ctx, PositionsBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: PositionsBucket, Description: "tokenline projection positions", History: 1})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, PositionsBucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("jsstore: positions bucket: %w", err)
	}
	obs, err := js.ObjectStore(ctx, SnapshotsBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		obs, err = js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: SnapshotsBucket, Description: "tokenline projection snapshots"})
		if errors.Is(err, jetstream.ErrBucketExists) || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			obs, err = js.ObjectStore(ctx, SnapshotsBucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("jsstore: snapshots bucket: %w", err)
	}
	return &Checkpoints{kv: kv, obs: obs}, nil
}

// Position returns the position recorded for a projection (0: none).
func (c *Checkpoints) Position(ctx context.Context, name string) (uint64, error) {
	e, err := c.kv.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("jsstore: read position: %w", err)
	}
	n, err := strconv.ParseUint(string(e.Value()), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("jsstore: position %q: %w", e.Value(), err)
	}
	return n, nil
}

// SetPosition records a projection's position.
func (c *Checkpoints) SetPosition(ctx context.Context, name string, pos uint64) error {
	if _, err := c.kv.Put(ctx, name, []byte(strconv.FormatUint(pos, 10))); err != nil {
		return fmt.Errorf("jsstore: write position: %w", err)
	}
	return nil
}

// OpenSnapshot opens a projection's latest snapshot; it returns nil and no
// error when there is none. Reading it to EOF verifies its digest (an error
// at the end then means the object is damaged). The caller closes it.
func (c *Checkpoints) OpenSnapshot(ctx context.Context, name string) (io.ReadCloser, error) {
	res, err := c.obs.Get(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("jsstore: read snapshot: %w", err)
	}
	return res, nil
}

// PutSnapshot stores what r yields up to EOF as a projection's latest
// snapshot, with meta as the object's metadata, replacing the previous one.
func (c *Checkpoints) PutSnapshot(ctx context.Context, name string, meta map[string]string, r io.Reader) error {
	_, err := c.obs.Put(ctx, jetstream.ObjectMeta{Name: name, Description: "tokenline projection snapshot", Metadata: meta}, r)
	if err != nil {
		return fmt.Errorf("jsstore: write snapshot: %w", err)
	}
	return nil
}
