package projections

import (
	"bytes"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/tokenline/tokenline/adapters/jsstore"
	"github.com/tokenline/tokenline/adapters/natstest"
)

// A position or snapshot that is malformed, forged or written under
// another key means "rebuild from the stream", never "cannot start"; an
// authentic snapshot next to a forged position is still used.
func TestRunnerRebuildsFromUntrustedCheckpoints(t *testing.T) {
	srv := natstest.Start(t, "")
	st := openStore(t, srv, "instance/a")
	key := bytes.Repeat([]byte{1}, 32)
	cp, err := st.CheckpointsWithKey(ctxT(t), key)
	if err != nil {
		t.Fatal(err)
	}
	d := newDriver(t, st)
	populate(t, d, 6, 20, 3)
	last, _ := st.LastSeq(ctxT(t))
	r := startRunner(t, RunnerConfig{Source: st, Checkpoints: cp})
	if err := r.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	built, _, _, err := Build(ctxT(t), st)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := st.JetStream().KeyValue(ctxT(t), jsstore.PositionsBucket)
	if err != nil {
		t.Fatal(err)
	}

	// A non-numeric position: ignored, the snapshot is used (no record read).
	if _, err := kv.Put(ctxT(t), "status", []byte("not-a-number")); err != nil {
		t.Fatal(err)
	}
	src := &countingSource{Source: st}
	r = startRunner(t, RunnerConfig{Source: src, Checkpoints: cp})
	if n := src.read.Load(); n != 0 || !reflect.DeepEqual(r.Status().List(), built.List()) {
		t.Fatalf("with a forged position: read %d records", n)
	}
	r.Close(ctxT(t))

	// The snapshot under another key: rebuilt from the stream.
	other, err := st.CheckpointsWithKey(ctxT(t), bytes.Repeat([]byte{2}, 32))
	if err != nil {
		t.Fatal(err)
	}
	src = &countingSource{Source: st}
	r = startRunner(t, RunnerConfig{Source: src, Checkpoints: other})
	if n := src.read.Load(); n != int64(last) || !reflect.DeepEqual(r.Status().List(), built.List()) {
		t.Fatalf("with a snapshot under another key: read %d records, want all %d", n, last)
	}
	r.Close(ctxT(t))

	// An authentic snapshot in the format of earlier versions (JSON Lines):
	// not read, rebuilt from the stream.
	oldJSON := fmt.Sprintf(`{"format":"tokenline.projection.status/1","projection":"status","stream":"TOKENLINE","position":%d,"connections":0}`+"\n", last)
	if err := cp.PutSnapshot(ctxT(t), "status", map[string]string{"position": strconv.FormatUint(last, 10), "format": "tokenline.projection.status/1"}, strings.NewReader(oldJSON)); err != nil {
		t.Fatal(err)
	}
	src = &countingSource{Source: st}
	r = startRunner(t, RunnerConfig{Source: src, Checkpoints: cp})
	if n := src.read.Load(); n != int64(last) || !reflect.DeepEqual(r.Status().List(), built.List()) {
		t.Fatalf("with a JSON Lines snapshot: read %d records, want all %d", n, last)
	}
	r.Close(ctxT(t))

	// A pointer to an object that is not there: rebuilt as well.
	if _, err := kv.Put(ctxT(t), "snapshot.status", []byte("status.abcdefghijklmnopqrstuvwxyz 3")); err != nil {
		t.Fatal(err)
	}
	src = &countingSource{Source: st}
	r = startRunner(t, RunnerConfig{Source: src, Checkpoints: cp})
	if n := src.read.Load(); n != int64(last) || !reflect.DeepEqual(r.Status().List(), built.List()) {
		t.Fatalf("with a dangling pointer: read %d records, want all %d", n, last)
	}
}
