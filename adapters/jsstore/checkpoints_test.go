package jsstore_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tokenline/tokenline/adapters/jsstore"
	"github.com/tokenline/tokenline/adapters/natstest"
)

var testKey = bytes.Repeat([]byte{7}, 32)

func putSnapshot(t *testing.T, cp *jsstore.Checkpoints, name string, pos uint64, body []byte) {
	t.Helper()
	if err := cp.PutSnapshot(ctxT(t), name, map[string]string{"position": strconv.FormatUint(pos, 10)}, bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
}

func readSnapshot(t *testing.T, cp *jsstore.Checkpoints, name string) ([]byte, error) {
	t.Helper()
	rc, err := cp.OpenSnapshot(ctxT(t), name)
	if err != nil || rc == nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// Three instances writing the same projection's snapshot many times at
// once leave one object in the object store (its chunks and meta), not
// the chunks of every write; the snapshot kept is the one at the latest
// position, and it reads back intact.
func TestSnapshotStorageStaysBounded(t *testing.T) {
	srv := natstest.Start(t, "")
	const writers, writes, size = 3, 12, 300 << 10
	var cps []*jsstore.Checkpoints
	for range writers {
		cp, err := open(t, srv.Connect(t)).CheckpointsWithKey(ctxT(t), testKey)
		if err != nil {
			t.Fatal(err)
		}
		cps = append(cps, cp)
	}
	bodies := map[uint64][]byte{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w, cp := range cps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range writes {
				pos := uint64(i*writers + w + 1)
				body := make([]byte, size)
				rand.Read(body)
				mu.Lock()
				bodies[pos] = body
				mu.Unlock()
				if err := cp.PutSnapshot(ctxT(t), "status", map[string]string{"position": strconv.FormatUint(pos, 10)}, bytes.NewReader(body)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	js, _ := jetstream.New(srv.Connect(t))
	st, err := js.Stream(ctxT(t), "OBJ_"+jsstore.SnapshotsBucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctxT(t), jetstream.WithSubjectFilter(">"))
	if err != nil {
		t.Fatal(err)
	}
	// One object: its chunks (up to 128 KiB each, one per read of the
	// snapshot) and one meta message.
	if info.State.Msgs > 6 || len(info.State.Subjects) != 2 || info.State.Bytes > size+64<<10 {
		t.Fatalf("after %d snapshot writes of %d KiB: %d messages, %d bytes stored: %v", writers*writes, size>>10, info.State.Msgs, info.State.Bytes, info.State.Subjects)
	}
	got, err := readSnapshot(t, cps[0], "status")
	if err != nil || !bytes.Equal(got, bodies[writers*writes]) {
		t.Fatalf("snapshot read back: %d bytes, %v (want the one at position %d)", len(got), err, writers*writes)
	}
}

// Positions and snapshots are authenticated: a value not written with the
// same key, or altered, is ErrUntrusted, never used.
func TestCheckpointsAuthenticated(t *testing.T) {
	srv := natstest.Start(t, "")
	st := open(t, srv.Connect(t))
	cp, err := st.CheckpointsWithKey(ctxT(t), testKey)
	if err != nil {
		t.Fatal(err)
	}
	other, err := st.CheckpointsWithKey(ctxT(t), bytes.Repeat([]byte{8}, 32))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CheckpointsWithKey(ctxT(t), []byte("short")); err == nil {
		t.Fatal("a 5-byte key was accepted")
	}
	if err := cp.SetPosition(ctxT(t), "status", 42); err != nil {
		t.Fatal(err)
	}
	if p, err := cp.Position(ctxT(t), "status"); err != nil || p != 42 {
		t.Fatalf("position %d %v", p, err)
	}
	if _, err := other.Position(ctxT(t), "status"); !errors.Is(err, jsstore.ErrUntrusted) {
		t.Fatalf("position under another key: %v", err)
	}
	js := st.JetStream()
	kv, err := js.KeyValue(ctxT(t), jsstore.PositionsBucket)
	if err != nil {
		t.Fatal(err)
	}
	for _, forged := range []string{"not-a-number", "43", "43." + "AAAA", "-1.x", string(make([]byte, 4096))} {
		if _, err := kv.Put(ctxT(t), "status", []byte(forged)); err != nil {
			t.Fatal(err)
		}
		if _, err := cp.Position(ctxT(t), "status"); !errors.Is(err, jsstore.ErrUntrusted) {
			t.Fatalf("forged position %.20q: %v", forged, err)
		}
	}

	body := []byte("a snapshot\n")
	putSnapshot(t, cp, "status", 5, body)
	if got, err := readSnapshot(t, cp, "status"); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("read back %q %v", got, err)
	}
	if _, err := readSnapshot(t, other, "status"); !errors.Is(err, jsstore.ErrUntrusted) {
		t.Fatalf("snapshot under another key: %v", err)
	}
	// An object put there by someone else, pointed at.
	obs, err := js.ObjectStore(ctxT(t), jsstore.SnapshotsBucket)
	if err != nil {
		t.Fatal(err)
	}
	for i, forged := range [][]byte{append([]byte("a snapshot\n"), make([]byte, 32)...), []byte("x"), {}} {
		name := fmt.Sprintf("status.forged%020d", i)
		if _, err := obs.PutBytes(ctxT(t), name, forged); err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctxT(t), "snapshot.status", []byte(name+" 9")); err != nil {
			t.Fatal(err)
		}
		if _, err := readSnapshot(t, cp, "status"); !errors.Is(err, jsstore.ErrUntrusted) {
			t.Fatalf("forged object %d: %v", i, err)
		}
	}
}

// Checkpoints raise buckets created with one replica to the store's
// replicas (an instance must start while a node is down).
func TestCheckpointsRaiseReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	_, stores := clusterStores(t)
	js := stores[0].JetStream()
	ctx, cancel := context.WithTimeout(context.Background(), 30e9)
	defer cancel()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: jsstore.PositionsBucket, History: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: jsstore.SnapshotsBucket}); err != nil {
		t.Fatal(err)
	}
	if _, err := stores[1].CheckpointsWithKey(ctx, testKey); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"KV_" + jsstore.PositionsBucket, "OBJ_" + jsstore.SnapshotsBucket} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if r := s.CachedInfo().Config.Replicas; r != 3 {
			t.Fatalf("%s has %d replicas", name, r)
		}
	}
}
