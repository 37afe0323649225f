package projections

import (
	"bufio"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tokenline/tokenline/domain"
)

// snapshotFormat names the snapshot layout: JSON Lines, a snapshotHeader
// line and then one domain.Connection per line (encoding/json field names).
const snapshotFormat = "tokenline.projection.status/1"

type snapshotHeader struct {
	Format     string `json:"format"`
	Projection string `json:"projection"`
	Stream     string `json:"stream"`
	// StreamCreated identifies the stream: a stream deleted and created
	// again under the same name makes the snapshot worthless.
	StreamCreated time.Time `json:"stream_created"`
	Position      uint64    `json:"position"`
	Connections   int       `json:"connections"`
	// Schema fingerprints the Go shape of domain.Connection: a snapshot
	// written by a build whose aggregate had other fields is not trusted.
	Schema    string    `json:"schema"`
	WrittenAt time.Time `json:"written_at"`
}

// connectionSchema fingerprints the fields of domain.Connection (names and
// types, recursively through structs of the domain package).
var connectionSchema = func() string {
	var b strings.Builder
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			fmt.Fprintf(&b, "%s:%s;", f.Name, f.Type)
			if f.Type.Kind() == reflect.Struct && f.Type.PkgPath() == t.PkgPath() {
				b.WriteString("{")
				walk(f.Type)
				b.WriteString("}")
			}
		}
	}
	walk(reflect.TypeOf(domain.Connection{}))
	h := fnv.New64a()
	h.Write([]byte(b.String()))
	return strconv.FormatUint(h.Sum64(), 16)
}()

// writeSnapshot encodes conns as a snapshot into w.
func writeSnapshot(w io.Writer, h snapshotHeader, conns []*domain.Connection) error {
	bw := bufio.NewWriterSize(w, 256<<10)
	enc := json.NewEncoder(bw)
	h.Format, h.Schema, h.Connections = snapshotFormat, connectionSchema, len(conns)
	if err := enc.Encode(h); err != nil {
		return err
	}
	for _, c := range conns {
		if err := enc.Encode(c); err != nil {
			return err
		}
	}
	return bw.Flush()
}

var errSnapshotUnusable = errors.New("projections: snapshot unusable")

// readSnapshot decodes a snapshot into a fresh Status. The lines are
// decoded on every core (JSON decoding is most of a cold start), then
// inserted in order. Whatever r yields is treated as untrusted input (the
// caller uses the result only once r reached EOF and its authentication
// passed): a malformed snapshot is an error wrapping errSnapshotUnusable,
// and memory grows with the bytes read, never with what the header
// claims.
func readSnapshot(r io.Reader) (snapshotHeader, *Status, error) {
	sc := bufio.NewScanner(bufio.NewReaderSize(r, 1<<20))
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	var h snapshotHeader
	if !sc.Scan() {
		return h, nil, fmt.Errorf("%w: header: %v", errSnapshotUnusable, cmp.Or(sc.Err(), io.ErrUnexpectedEOF))
	}
	if err := json.Unmarshal(sc.Bytes(), &h); err != nil {
		return h, nil, fmt.Errorf("%w: header: %v", errSnapshotUnusable, err)
	}
	if h.Format != snapshotFormat || h.Schema != connectionSchema {
		return h, nil, fmt.Errorf("%w: format %q schema %q (this build writes %q %q)", errSnapshotUnusable, h.Format, h.Schema, snapshotFormat, connectionSchema)
	}
	if h.Connections < 0 || h.Connections > 1<<26 {
		return h, nil, fmt.Errorf("%w: %d connections", errSnapshotUnusable, h.Connections)
	}
	// The header is not trusted until the whole snapshot is (its MAC is
	// checked at EOF): the count it claims bounds the loop, not the
	// allocation, which grows with the lines actually present.
	lines := make([][]byte, 0, min(h.Connections, 1<<14))
	for len(lines) < h.Connections && sc.Scan() {
		lines = append(lines, slices.Clone(sc.Bytes()))
	}
	if len(lines) != h.Connections {
		return h, nil, fmt.Errorf("%w: %d of %d connections present (%v)", errSnapshotUnusable, len(lines), h.Connections, sc.Err())
	}
	ents := make([]statusEntry, len(lines))
	workers := max(runtime.GOMAXPROCS(0), 1)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(lines); i += workers {
				if err := json.Unmarshal(lines[i], &ents[i].c); err != nil {
					errs[w] = fmt.Errorf("%w: connection %d: %v", errSnapshotUnusable, i, err)
					return
				}
				lines[i] = nil
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return h, nil, err
	}
	st := NewStatus()
	st.conns = make(map[string]*statusEntry, len(ents))
	for i := range ents {
		ent := &ents[i]
		if ent.c.ID == "" || st.conns[ent.c.ID] != nil || ent.c.Version > h.Position {
			return h, nil, fmt.Errorf("%w: connection %d is invalid", errSnapshotUnusable, i)
		}
		st.conns[ent.c.ID] = ent
	}
	return h, st, nil
}
