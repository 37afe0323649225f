package projections

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"reflect"
	"runtime"
	"slices"
	"testing"
	"time"
	"unsafe"

	"github.com/tokenline/tokenline/domain"
)

// sampleConnection is a connection with the fields a real one has set.
func sampleConnection(i int) *domain.Connection {
	t := time.Unix(1700000000+int64(i), int64(i)*1000).UTC()
	return &domain.Connection{
		ID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), Provider: []string{"pleo", "sandbox"}[i%2],
		Scopes: []string{"expenses:read", "users:read"}, Config: map[string]string{"team": "finance"},
		State: domain.StateActive, Since: t, Version: uint64(i + 1), Events: 3, Created: t.Add(-time.Hour),
		Tokens: domain.TokenInfo{AccessTokenFP: fmt.Sprintf("sha256:%012x", i), RefreshTokenFP: fmt.Sprintf("sha256:%012x", i+1<<40),
			AccessTokenExpiresAt: t.Add(time.Hour), Scopes: []string{"expenses:read", "users:read"}},
		TokensHeld: true, LastRefreshAt: t, LastRefreshOK: true,
		Head: domain.ChainHead{Seq: uint64(i + 1), Hash: [32]byte{byte(i), 1, 2}, Chained: true},
	}
}

func sampleSnapshot(t testing.TB, n int) []byte {
	t.Helper()
	var conns []*domain.Connection
	for i := range n {
		conns = append(conns, sampleConnection(i))
	}
	var b bytes.Buffer
	h := snapshotHeader{Projection: "status", Stream: "TOKENLINE", StreamCreated: time.Unix(1700000000, 0).UTC(), Position: uint64(n + 5)}
	if err := writeSnapshot(&b, h, entriesOf(conns)); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// withHeader returns snap with its header block replaced by one for h.
func withHeader(t testing.TB, snap []byte, h snapshotHeader) []byte {
	t.Helper()
	at := len(snapshotMagic) + 1
	n, k := binary.Uvarint(snap[at:])
	if k <= 0 {
		t.Fatal("no header block")
	}
	rest := snap[at+k+int(n):]
	body := appendHeader(nil, h)
	out := append([]byte(snapshotMagic+"H"), binary.AppendUvarint(nil, uint64(len(body)))...)
	return append(append(out, body...), rest...)
}

// A snapshot round-trips every field of domain.Connection: this fails when
// a field is added to the aggregate that the snapshot does not write.
func TestSnapshotCoversConnection(t *testing.T) {
	var c domain.Connection
	n := 0
	var fill func(v reflect.Value)
	fill = func(v reflect.Value) {
		n++
		switch {
		case v.Type() == reflect.TypeOf(time.Time{}):
			v.Set(reflect.ValueOf(time.Unix(1700000000+int64(n), int64(n)).UTC()))
		case v.Kind() == reflect.Struct:
			for i := range v.NumField() {
				fill(v.Field(i))
			}
		case v.Kind() == reflect.String:
			v.SetString(fmt.Sprintf("value-%d", n))
		case v.Kind() == reflect.Bool:
			v.SetBool(true)
		case v.CanInt():
			v.SetInt(int64(n))
		case v.CanUint():
			v.SetUint(uint64(n))
		case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.String:
			v.Set(reflect.ValueOf([]string{fmt.Sprintf("a-%d", n), "b"}))
		case v.Kind() == reflect.Map:
			v.Set(reflect.ValueOf(map[string]string{fmt.Sprintf("k-%d", n): "v", "x": ""}))
		case v.Kind() == reflect.Array && v.Type().Elem().Kind() == reflect.Uint8:
			for i := range v.Len() {
				v.Index(i).SetUint(uint64(n + i))
			}
		default:
			t.Fatalf("the test does not know how to fill a %s", v.Type())
		}
	}
	fill(reflect.ValueOf(&c).Elem())
	c.Version = 3
	var b bytes.Buffer
	if err := writeSnapshot(&b, snapshotHeader{Position: 3}, entriesOf([]*domain.Connection{&c, {ID: "empty", Scopes: []string{}, Config: map[string]string{}}})); err != nil {
		t.Fatal(err)
	}
	_, st, err := readSnapshot(&b)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.conns[c.ID].connection(); !reflect.DeepEqual(got, c) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, c)
	}
	// nil and empty lists and maps stay apart.
	if e := st.conns["empty"].connection(); e.Scopes == nil || e.Config == nil || e.Tokens.Scopes != nil {
		t.Fatalf("empty values: %#v %#v %#v", e.Scopes, e.Config, e.Tokens.Scopes)
	}
}

// A header claiming 2^26 connections over a few bytes of body is refused
// without allocating for them; malformed and old-format (JSON Lines)
// snapshots are refused as unusable.
func TestReadSnapshotForgedCount(t *testing.T) {
	good := sampleSnapshot(t, 2)
	h := snapshotHeader{Projection: "status", Stream: "TOKENLINE", StreamCreated: time.Unix(1700000000, 0).UTC(), Position: 7, Schema: connectionSchema}
	h.Connections = 1 << 26
	forged := withHeader(t, good, h)
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
	h.Connections = 3
	beyond := h
	beyond.Position = 1
	oldJSON := []byte(`{"format":"tokenline.projection.status/1","projection":"status","position":7,"connections":0}` + "\n")
	for name, bad := range map[string][]byte{
		"more connections claimed": withHeader(t, good, h),
		"position before versions": withHeader(t, good, beyond),
		"truncated":                good[:len(good)/2],
		"no end":                   good[:len(good)-2],
		"trailing data":            append(bytes.Clone(good), 'E', 0),
		"a block claiming 1 GB":    append([]byte(snapshotMagic+"H"), binary.AppendUvarint(nil, 1<<30)...),
		"empty":                    {},
		"old JSON Lines format":    oldJSON,
		"another schema":           withHeader(t, good, snapshotHeader{Position: 7, Connections: 2, Schema: "0"}),
		"flipped byte in a connection": func() []byte {
			b := bytes.Clone(good)
			b[len(b)-40] ^= 0xff
			return b
		}(),
	} {
		if _, _, err := readSnapshot(bytes.NewReader(bad)); !errors.Is(err, errSnapshotUnusable) {
			if name == "flipped byte in a connection" && err == nil {
				continue // may still decode: the MAC catches it in production
			}
			t.Fatalf("%s: %v", name, err)
		}
	}
	hd, st, err := readSnapshot(bytes.NewReader(good))
	if err != nil || hd.Position != 7 || len(st.conns) != 2 {
		t.Fatalf("good snapshot: %+v %v", hd, err)
	}
	for i := range 2 {
		want := sampleConnection(i)
		if got := st.conns[want.ID]; got == nil || !reflect.DeepEqual(got.connection(), *want) {
			t.Fatalf("connection %d differs:\n got %+v\nwant %+v", i, got, want)
		}
	}
	// Repeated values are held once.
	a, b := st.conns[sampleConnection(0).ID].c, st.conns[sampleConnection(1).ID].c
	if &a.Scopes[0] != &b.Scopes[0] || &a.Scopes[0] != &a.Tokens.Scopes[0] {
		t.Fatal("equal scope lists are not shared")
	}
	if ca, cb := st.conns[sampleConnection(0).ID].cfg, st.conns[sampleConnection(1).ID].cfg; ca == "" || unsafe.StringData(ca) != unsafe.StringData(cb) {
		t.Fatal("equal configs are not shared")
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
	f.Add(withHeader(f, sampleSnapshot(f, 1), snapshotHeader{Position: 6, Connections: 1 << 26, Schema: connectionSchema}))
	f.Add([]byte("{}\n"))
	f.Add([]byte(snapshotMagic))
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

// snapshotBlocks splits a snapshot into its blocks (kind and body).
func snapshotBlocks(t testing.TB, snap []byte) (kinds []byte, bodies [][]byte) {
	t.Helper()
	b := snap[len(snapshotMagic):]
	for len(b) > 0 {
		kind := b[0]
		n, k := binary.Uvarint(b[1:])
		if k <= 0 || uint64(len(b)-1-k) < n {
			t.Fatal("not a snapshot")
		}
		kinds, bodies = append(kinds, kind), append(bodies, b[1+k:1+k+int(n)])
		b = b[1+k+int(n):]
	}
	return kinds, bodies
}

// joinBlocks is the inverse of snapshotBlocks.
func joinBlocks(kinds []byte, bodies [][]byte) []byte {
	out := []byte(snapshotMagic)
	for i, k := range kinds {
		out = append(append(append(out, k), binary.AppendUvarint(nil, uint64(len(bodies[i])))...), bodies[i]...)
	}
	return out
}

// A snapshot of many connection blocks (more than the decoding workers
// hold in flight) reads back whole, in parallel; a connection repeated in
// another block, and a table block after the connections (a writer writes
// none: the workers read the tables), are refused.
func TestReadSnapshotManyBlocks(t *testing.T) {
	n := (4*snapshotWorkers + 3) * connectionsPerBlock
	good := sampleSnapshot(t, n)
	_, st, err := readSnapshot(bytes.NewReader(good))
	if err != nil || len(st.conns) != n {
		t.Fatalf("%d blocks: %v", n/connectionsPerBlock, err)
	}
	for _, i := range []int{0, connectionsPerBlock - 1, connectionsPerBlock, n / 2, n - 1} {
		want := sampleConnection(i)
		if got := st.conns[want.ID]; got == nil || !reflect.DeepEqual(got.connection(), *want) {
			t.Fatalf("connection %d differs:\n got %+v\nwant %+v", i, got, want)
		}
	}
	kinds, bodies := snapshotBlocks(t, good)
	first := bytes.IndexByte(kinds, 'C')
	last := bytes.LastIndexByte(kinds, 'C')
	if first < 0 || last == first {
		t.Fatalf("blocks %q", kinds)
	}
	// The last connection block again in place of the one before it: the
	// count stays right, a connection is repeated.
	dupBodies := slices.Clone(bodies)
	dupBodies[last-1] = bodies[last]
	late := slices.Insert(slices.Clone(kinds), first+1, 'S')
	lateBodies := slices.Insert(slices.Clone(bodies), first+1, binary.AppendUvarint(nil, 0))
	for name, bad := range map[string][]byte{
		"a connection repeated in another block": joinBlocks(kinds, dupBodies),
		"symbols after the connections":          joinBlocks(late, lateBodies),
	} {
		if _, _, err := readSnapshot(bytes.NewReader(bad)); !errors.Is(err, errSnapshotUnusable) {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if _, _, err := readSnapshot(bytes.NewReader(joinBlocks(kinds, bodies))); err != nil {
		t.Fatalf("the blocks joined again: %v", err)
	}
}

// TestSnapshotWriterMemoryBounded checks that the writer streams the
// connection blocks: what it allocates does not grow with the number of
// connections (the encoding of every connection held until the tables were
// written took some 200 B per connection).
func TestSnapshotWriterMemoryBounded(t *testing.T) {
	alloc := func(n int) uint64 {
		conns := make([]*domain.Connection, n)
		for i := range conns {
			conns[i] = sampleConnection(i)
		}
		ents := entriesOf(conns)
		h := snapshotHeader{Projection: "status", Stream: "S", Position: uint64(n + 1)}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		if err := writeSnapshot(io.Discard, h, ents); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	small, large := alloc(2*connectionsPerBlock), alloc(20*connectionsPerBlock)
	per := (float64(large) - float64(small)) / float64(18*connectionsPerBlock)
	t.Logf("writer allocations: %d B for %d connections, %d B for %d (%.1f B per further connection)",
		small, 2*connectionsPerBlock, large, 20*connectionsPerBlock, per)
	if per > 16 {
		t.Fatalf("the writer allocates %.1f B per connection: it holds the connections' encoding", per)
	}
}
