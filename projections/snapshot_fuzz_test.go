package projections

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/tokenline/tokenline/domain"
)

func sampleSnapshot(t testing.TB, n int) []byte {
	t.Helper()
	var conns []*domain.Connection
	for i := range n {
		conns = append(conns, &domain.Connection{ID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), Version: uint64(i + 1)})
	}
	var b bytes.Buffer
	h := snapshotHeader{Projection: "status", Stream: "TOKENLINE", StreamCreated: time.Unix(1700000000, 0).UTC(), Position: uint64(n + 5)}
	if err := writeSnapshot(&b, h, conns); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// A header claiming 2^26 connections over a few bytes of body is refused
// without allocating for them.
func TestReadSnapshotForgedCount(t *testing.T) {
	good := sampleSnapshot(t, 2)
	forged := bytes.Replace(good, []byte(`"connections":2`), []byte(`"connections":67108864`), 1)
	var before, after testingMemStats
	before.read()
	_, _, err := readSnapshot(bytes.NewReader(forged))
	after.read()
	if !errors.Is(err, errSnapshotUnusable) {
		t.Fatalf("forged count: %v", err)
	}
	if grew := after.total - before.total; grew > 64<<20 {
		t.Fatalf("reading a forged header allocated %d MB", grew>>20)
	}
	for _, bad := range [][]byte{
		bytes.Replace(good, []byte(`"position":7`), []byte(`"position":"x"`), 1),
		bytes.Replace(good, []byte(`"position":7`), []byte(`"position":-1`), 1),
		good[:len(good)/2],
		{},
	} {
		if _, _, err := readSnapshot(bytes.NewReader(bad)); !errors.Is(err, errSnapshotUnusable) {
			t.Fatalf("malformed snapshot %q: %v", bad, err)
		}
	}
	h, st, err := readSnapshot(bytes.NewReader(good))
	if err != nil || h.Position != 7 || len(st.conns) != 2 {
		t.Fatalf("good snapshot: %+v %v", h, err)
	}
}

// FuzzReadSnapshot feeds readSnapshot arbitrary bytes: it never panics,
// and what it accepts is consistent (as many distinct connections as the
// header says, none beyond its position).
//
//	go test -run '^$' -fuzz '^FuzzReadSnapshot$' -fuzztime 5s ./projections/
func FuzzReadSnapshot(f *testing.F) {
	f.Add(sampleSnapshot(f, 0))
	f.Add(sampleSnapshot(f, 3))
	f.Add(bytes.Replace(sampleSnapshot(f, 1), []byte(`"connections":1`), []byte(`"connections":67108864`), 1))
	f.Add([]byte("{}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, st, err := readSnapshot(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, errSnapshotUnusable) {
				t.Fatalf("error not marked unusable: %v", err)
			}
			return
		}
		if len(st.conns) != h.Connections {
			t.Fatalf("%d connections, header says %d", len(st.conns), h.Connections)
		}
		for id, e := range st.conns {
			if id == "" || e.c.ID != id || e.c.Version > h.Position {
				t.Fatalf("inconsistent entry %q: %+v", id, e.c)
			}
		}
	})
}

type testingMemStats struct{ total uint64 }

func (m *testingMemStats) read() {
	var s runtime.MemStats
	runtime.ReadMemStats(&s)
	m.total = s.TotalAlloc
}
