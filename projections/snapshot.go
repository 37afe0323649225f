package projections

import (
	"bufio"
	"encoding/binary"
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

// snapshotFormat names the snapshot layout (the object's "format"
// metadata). Version 2 is a compact binary encoding written and read by
// hand (encoding/binary varints); version 1 was JSON Lines, which a
// reader of version 2 refuses like any malformed snapshot: the Runner
// then rebuilds from the stream.
//
// The layout: snapshotMagic, then blocks, each a kind byte, a uvarint
// length and that many bytes:
//
//	'H' header     (once, first): projection, stream, stream created, position,
//	               connections, schema, written at
//	'S' symbols    count, then strings: appended to the symbol table
//	'L' lists      count, then each: n, n symbol refs: appended to the list table
//	'M' maps       count, then each: n, n (key, value) symbol refs: the map table
//	'C' connections a uvarint length and that many bytes of the connections'
//	               own strings (ids, fingerprints), then count, then each
//	               connection's fields (appendConnection)
//	'E' end        (empty): the snapshot is complete
//
// Strings are a uvarint length and bytes; a reference to a symbol, list or
// map is its index + 1 (0: the empty string, nil list, nil map); a time is
// a uvarint, 0 for the zero time or nanoseconds + 1, then a varint of Unix
// seconds (read back in UTC). Values that repeat across connections
// (provider, states, reasons, scopes, configs, codes) are written once.
const snapshotFormat = "tokenline.projection.status/2"

// snapshotMagic starts a version-2 snapshot.
const snapshotMagic = "TLSNAP\x00\x02"

// maxSnapshotBlock bounds a block's length: a reader allocates at most
// this much for a length it has not read the bytes of.
const maxSnapshotBlock = 16 << 20

// connectionsPerBlock is how many connections a writer puts in one block.
const connectionsPerBlock = 1024

// minConnectionBytes is the least a connection's fields take in a block:
// a count is checked against the bytes left before anything is allocated
// for it.
const minConnectionBytes = 60

type snapshotHeader struct {
	Projection string
	Stream     string
	// StreamCreated identifies the stream: a stream deleted and created
	// again under the same name makes the snapshot worthless.
	StreamCreated time.Time
	Position      uint64
	Connections   int
	// Schema fingerprints the Go shape of domain.Connection: a snapshot
	// written by a build whose aggregate had other fields is not trusted.
	Schema    string
	WrittenAt time.Time
}

// connectionSchema fingerprints the fields of domain.Connection (names and
// types, recursively through structs of the domain package).
// TestSnapshotCoversConnection fails when a field is added that
// appendConnection does not write.
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

// snapshotTables numbers the repeated values of the connections a writer
// encodes.
type snapshotTables struct {
	syms    map[string]uint64
	symList []string
	lists   map[string]uint64
	listVal [][]string
	maps    map[string]uint64
	mapVal  []string // packed configs (config.go)
	key     []byte
}

func (t *snapshotTables) sym(s string) uint64 {
	if s == "" {
		return 0
	}
	if i, ok := t.syms[s]; ok {
		return i
	}
	t.symList = append(t.symList, s)
	t.syms[s] = uint64(len(t.symList))
	return uint64(len(t.symList))
}

func (t *snapshotTables) list(v []string) uint64 {
	if v == nil {
		return 0
	}
	t.key = t.key[:0]
	for _, s := range v {
		t.key = binary.AppendUvarint(t.key, t.sym(s))
	}
	if i, ok := t.lists[string(t.key)]; ok {
		return i
	}
	t.listVal = append(t.listVal, v)
	t.lists[string(t.key)] = uint64(len(t.listVal))
	return uint64(len(t.listVal))
}

// config numbers a packed config (its pairs are in key order already).
func (t *snapshotTables) config(p string) uint64 {
	if p == "" {
		return 0
	}
	t.key = t.key[:0]
	configPairs(p, func(k, v string) {
		t.key = binary.AppendUvarint(t.key, t.sym(k))
		t.key = binary.AppendUvarint(t.key, t.sym(v))
	})
	if i, ok := t.maps[string(t.key)]; ok {
		return i
	}
	t.mapVal = append(t.mapVal, p)
	t.maps[string(t.key)] = uint64(len(t.mapVal))
	return uint64(len(t.mapVal))
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(t.Nanosecond())+1)
	return binary.AppendVarint(b, t.Unix())
}

// Flags of a connection.
const (
	flagDeleted = 1 << iota
	flagTokensHeld
	flagLastRefreshOK
	flagRefreshTokenKept
	flagRecoveringFromRejection
	flagChained
)

// appendConnection writes the fields of ent's aggregate and config to b and
// its own strings to strs.
func (t *snapshotTables) appendConnection(b, strs []byte, ent *statusEntry) ([]byte, []byte) {
	c := &ent.c
	own := func(s string) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		strs = append(strs, s...)
	}
	u := func(v uint64) { b = binary.AppendUvarint(b, v) }
	i := func(v int) { b = binary.AppendVarint(b, int64(v)) }
	own(c.ID)
	u(t.sym(c.Provider))
	u(t.list(c.Scopes))
	u(t.config(ent.cfg))
	u(t.sym(string(c.State)))
	u(t.sym(string(c.Reason)))
	b = appendTime(b, c.Since)
	u(c.Version)
	i(c.Events)
	b = appendTime(b, c.Created)
	var f uint64
	for bit, on := range []bool{c.Deleted, c.TokensHeld, c.LastRefreshOK, c.RefreshTokenKept, c.RecoveringFromRejection, c.Head.Chained} {
		if on {
			f |= 1 << bit
		}
	}
	u(f)
	own(c.Tokens.AccessTokenFP)
	own(c.Tokens.RefreshTokenFP)
	b = appendTime(b, c.Tokens.AccessTokenExpiresAt)
	u(t.list(c.Tokens.Scopes))
	own(c.AttemptID)
	b = appendTime(b, c.AttemptExpiresAt)
	b = appendTime(b, c.LeaseUntil)
	own(c.LeaseID)
	u(t.sym(c.RefreshTrigger))
	i(c.TransientFailures)
	i(c.ProviderWaits)
	b = appendTime(b, c.RetryAt)
	b = appendTime(b, c.LastRefreshAt)
	u(t.sym(c.LastErrorCode))
	u(c.Head.Seq)
	b = append(b, c.Head.Hash[:]...)
	i(c.ChainBreaks)
	return b, strs
}

func writeBlock(w *bufio.Writer, kind byte, body []byte) error {
	w.WriteByte(kind)
	var n [binary.MaxVarintLen64]byte
	w.Write(n[:binary.PutUvarint(n[:], uint64(len(body)))])
	_, err := w.Write(body)
	return err
}

func appendHeader(b []byte, h snapshotHeader) []byte {
	b = appendStr(b, h.Projection)
	b = appendStr(b, h.Stream)
	b = appendTime(b, h.StreamCreated)
	b = binary.AppendUvarint(b, h.Position)
	b = binary.AppendUvarint(b, uint64(h.Connections))
	b = appendStr(b, h.Schema)
	return appendTime(b, h.WrittenAt)
}

// writeSnapshot encodes conns as a snapshot into w.
//
// The tables must precede the connection blocks, and they are complete
// only once every connection was numbered: a first pass numbers the
// connections' shared values (encoding each into a scratch buffer that is
// reused), the tables are written, and a second pass encodes the
// connections again, block by block, writing each block before the next is
// encoded. The second pass finds every value numbered already, so the bytes
// are those a single pass would write; what the writer holds is the tables
// and one block's buffers, never the encoding of every connection. conns
// must not change between the passes (Status.capture hands out entries
// that no later event writes into).
func writeSnapshot(w io.Writer, h snapshotHeader, conns []*statusEntry) error {
	bw := bufio.NewWriterSize(w, 256<<10)
	h.Schema, h.Connections = connectionSchema, len(conns)
	bw.WriteString(snapshotMagic)
	if err := writeBlock(bw, 'H', appendHeader(nil, h)); err != nil {
		return err
	}
	t := &snapshotTables{syms: map[string]uint64{}, lists: map[string]uint64{}, maps: map[string]uint64{}}
	fields, strs := make([]byte, 0, 4<<10), make([]byte, 0, 2<<10)
	for _, c := range conns {
		fields, strs = t.appendConnection(fields[:0], strs[:0], c)
	}
	// Symbols, lists and maps, in blocks of bounded size.
	var body []byte
	n := 0
	flush := func(kind byte) error {
		if n == 0 {
			return nil
		}
		blk := append(binary.AppendUvarint(nil, uint64(n)), body...)
		body, n = body[:0], 0
		return writeBlock(bw, kind, blk)
	}
	for _, s := range t.symList {
		body = appendStr(body, s)
		if n++; len(body) > 1<<20 {
			if err := flush('S'); err != nil {
				return err
			}
		}
	}
	if err := flush('S'); err != nil {
		return err
	}
	for _, l := range t.listVal {
		body = binary.AppendUvarint(body, uint64(len(l)))
		for _, s := range l {
			body = binary.AppendUvarint(body, t.syms[s])
		}
		if n++; len(body) > 1<<20 {
			if err := flush('L'); err != nil {
				return err
			}
		}
	}
	if err := flush('L'); err != nil {
		return err
	}
	var pairs []byte
	for _, p := range t.mapVal {
		pairs = pairs[:0]
		k := configPairs(p, func(k, v string) {
			pairs = binary.AppendUvarint(pairs, t.syms[k])
			pairs = binary.AppendUvarint(pairs, t.syms[v])
		})
		body = binary.AppendUvarint(body, uint64(k))
		body = append(body, pairs...)
		if n++; len(body) > 1<<20 {
			if err := flush('M'); err != nil {
				return err
			}
		}
	}
	if err := flush('M'); err != nil {
		return err
	}
	body = nil
	// The connections, one block at a time, in the buffers of the first
	// pass (grown to a block's size by the first block).
	syms, lists, confs := len(t.symList), len(t.listVal), len(t.mapVal)
	var lenBuf []byte
	for start := 0; start < len(conns); start += connectionsPerBlock {
		part := conns[start:min(start+connectionsPerBlock, len(conns))]
		fields = binary.AppendUvarint(fields[:0], uint64(len(part)))
		strs = strs[:0]
		for _, c := range part {
			fields, strs = t.appendConnection(fields, strs, c)
		}
		lenBuf = binary.AppendUvarint(lenBuf[:0], uint64(len(strs)))
		bw.WriteByte('C')
		bw.Write(binary.AppendUvarint(nil, uint64(len(lenBuf)+len(strs)+len(fields))))
		bw.Write(lenBuf)
		bw.Write(strs)
		if _, err := bw.Write(fields); err != nil {
			return err
		}
	}
	if len(t.symList) != syms || len(t.listVal) != lists || len(t.mapVal) != confs {
		// A connection changed between the passes: its new value is in
		// no table written. Refused rather than written unreadable.
		return errors.New("projections: snapshot: a connection changed while it was written")
	}
	if err := writeBlock(bw, 'E', nil); err != nil {
		return err
	}
	return bw.Flush()
}

var errSnapshotUnusable = errors.New("projections: snapshot unusable")

// snapCursor reads a block. Every read checks the bytes left; a failed
// read sets bad and returns zero values.
type snapCursor struct {
	b   []byte
	bad bool
}

func (c *snapCursor) uvarint() uint64 {
	v, n := binary.Uvarint(c.b)
	if n <= 0 {
		c.bad = true
		c.b = nil
		return 0
	}
	c.b = c.b[n:]
	return v
}

func (c *snapCursor) varint() int64 {
	v, n := binary.Varint(c.b)
	if n <= 0 {
		c.bad = true
		c.b = nil
		return 0
	}
	c.b = c.b[n:]
	return v
}

func (c *snapCursor) int() int {
	v := c.varint()
	if int64(int(v)) != v {
		c.bad = true
		return 0
	}
	return int(v)
}

// count reads a count of items of at least per bytes each.
func (c *snapCursor) count(per int) int {
	v := c.uvarint()
	if v > uint64(len(c.b)/per) {
		c.bad = true
		return 0
	}
	return int(v)
}

func (c *snapCursor) bytes(n uint64) []byte {
	if n > uint64(len(c.b)) {
		c.bad = true
		c.b = nil
		return nil
	}
	v := c.b[:n]
	c.b = c.b[n:]
	return v
}

func (c *snapCursor) str() string { return string(c.bytes(c.uvarint())) }

func (c *snapCursor) time() time.Time {
	ns := c.uvarint()
	if ns == 0 {
		return time.Time{}
	}
	sec := c.varint()
	if ns > 1e9 || c.bad {
		c.bad = true
		return time.Time{}
	}
	return time.Unix(sec, int64(ns-1)).UTC()
}

// snapshotReader holds what a reader has decoded so far.
type snapshotReader struct {
	r      *bufio.Reader
	buf    []byte
	syms   []string
	lists  [][]string
	maps   []string // packed configs
	shared sharedValues
}

// block reads the next block: its kind and body (valid until the next).
func (sr *snapshotReader) block() (byte, []byte, error) {
	kind, err := sr.r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, err := binary.ReadUvarint(sr.r)
	if err != nil {
		return 0, nil, err
	}
	if n > maxSnapshotBlock {
		return 0, nil, fmt.Errorf("a block of %d bytes", n)
	}
	// Grows with the bytes actually read, not with the length claimed.
	sr.buf = sr.buf[:0]
	for uint64(len(sr.buf)) < n {
		k := min(n-uint64(len(sr.buf)), 1<<20)
		sr.buf = slices.Grow(sr.buf, int(k))
		m, err := io.ReadFull(sr.r, sr.buf[len(sr.buf):len(sr.buf)+int(k)])
		sr.buf = sr.buf[:len(sr.buf)+m]
		if err != nil {
			return 0, nil, err
		}
	}
	return kind, sr.buf, nil
}

func (sr *snapshotReader) sym(c *snapCursor) string {
	i := c.uvarint()
	if i == 0 {
		return ""
	}
	if i > uint64(len(sr.syms)) {
		c.bad = true
		return ""
	}
	return sr.syms[i-1]
}

func (sr *snapshotReader) list(c *snapCursor) []string {
	i := c.uvarint()
	if i == 0 {
		return nil
	}
	if i > uint64(len(sr.lists)) {
		c.bad = true
		return nil
	}
	return sr.lists[i-1]
}

func (sr *snapshotReader) config(c *snapCursor) string {
	i := c.uvarint()
	if i == 0 {
		return ""
	}
	if i > uint64(len(sr.maps)) {
		c.bad = true
		return ""
	}
	return sr.maps[i-1]
}

// connection reads one connection's fields into ent; own holds its own
// strings.
func (sr *snapshotReader) connection(c *snapCursor, own *string, ent *statusEntry) {
	x := &ent.c
	str := func() string {
		n := c.uvarint()
		if n > uint64(len(*own)) {
			c.bad = true
			return ""
		}
		s := (*own)[:n]
		*own = (*own)[n:]
		return s
	}
	x.ID = str()
	x.Provider = sr.sym(c)
	x.Scopes = sr.list(c)
	ent.cfg = sr.config(c)
	x.State = domain.State(sr.sym(c))
	x.Reason = domain.Reason(sr.sym(c))
	x.Since = c.time()
	x.Version = c.uvarint()
	x.Events = c.int()
	x.Created = c.time()
	f := c.uvarint()
	x.Deleted, x.TokensHeld, x.LastRefreshOK = f&flagDeleted != 0, f&flagTokensHeld != 0, f&flagLastRefreshOK != 0
	x.RefreshTokenKept, x.RecoveringFromRejection, x.Head.Chained = f&flagRefreshTokenKept != 0, f&flagRecoveringFromRejection != 0, f&flagChained != 0
	x.Tokens.AccessTokenFP = str()
	x.Tokens.RefreshTokenFP = str()
	x.Tokens.AccessTokenExpiresAt = c.time()
	x.Tokens.Scopes = sr.list(c)
	x.AttemptID = str()
	x.AttemptExpiresAt = c.time()
	x.LeaseUntil = c.time()
	x.LeaseID = str()
	x.RefreshTrigger = sr.sym(c)
	x.TransientFailures = c.int()
	x.ProviderWaits = c.int()
	x.RetryAt = c.time()
	x.LastRefreshAt = c.time()
	x.LastErrorCode = sr.sym(c)
	x.Head.Seq = c.uvarint()
	copy(x.Head.Hash[:], c.bytes(32))
	x.ChainBreaks = c.int()
}

// readSnapshot decodes a snapshot into a fresh Status. Whatever r yields
// is treated as untrusted input (the caller uses the result only once r
// reached EOF and its authentication passed): a malformed snapshot,
// including one in an older format, is an error wrapping
// errSnapshotUnusable, and memory grows with the bytes read, never with
// a length or count the snapshot claims. readSnapshot reads r to its end.
func readSnapshot(r io.Reader) (snapshotHeader, *Status, error) {
	var h snapshotHeader
	st, err := decodeSnapshot(r, &h)
	if err != nil {
		return h, nil, fmt.Errorf("%w: %v", errSnapshotUnusable, err)
	}
	return h, st, nil
}

func decodeSnapshot(r io.Reader, h *snapshotHeader) (*Status, error) {
	sr := &snapshotReader{r: bufio.NewReaderSize(r, 1<<20)}
	var magic [len(snapshotMagic)]byte
	if _, err := io.ReadFull(sr.r, magic[:]); err != nil {
		return nil, fmt.Errorf("magic: %w", err)
	}
	if string(magic[:]) != snapshotMagic {
		return nil, fmt.Errorf("not a %s snapshot (an older format?)", snapshotFormat)
	}
	kind, body, err := sr.block()
	if err != nil || kind != 'H' {
		return nil, fmt.Errorf("header: kind %q: %v", kind, err)
	}
	c := snapCursor{b: body}
	h.Projection, h.Stream, h.StreamCreated = c.str(), c.str(), c.time()
	h.Position = c.uvarint()
	n := c.uvarint()
	h.Schema, h.WrittenAt = c.str(), c.time()
	if c.bad || len(c.b) != 0 || n > 1<<26 {
		return nil, errors.New("header malformed")
	}
	h.Connections = int(n)
	if h.Schema != connectionSchema {
		return nil, fmt.Errorf("schema %q (this build writes %q)", h.Schema, connectionSchema)
	}
	st := NewStatus()
	st.conns = make(map[string]*statusEntry, min(h.Connections, 1<<16))
	// The connection blocks are decoded on snapshotWorkers goroutines
	// while this one reads (and, through r, authenticates) the next
	// blocks; their entries are checked and added in block order. The
	// tables come first (a writer writes them before any connection): one
	// after a connection block is refused, so the workers read tables that
	// no longer change.
	p := newConnPipeline(sr, h.Position)
	defer p.stop()
	add := func(b *connBlock) error {
		if b.err != nil {
			return b.err
		}
		for _, ent := range b.ents {
			if st.conns[ent.c.ID] != nil || len(st.conns) == h.Connections {
				return fmt.Errorf("connection %d is invalid", len(st.conns))
			}
			st.conns[ent.c.ID] = ent
		}
		return nil
	}
	for {
		kind, body, err := sr.block()
		if err != nil {
			return nil, fmt.Errorf("block: %v", cmpErr(err))
		}
		c := snapCursor{b: body}
		switch kind {
		case 'S', 'L', 'M':
			if p.started {
				return nil, fmt.Errorf("block %q after the connections", kind)
			}
		}
		switch kind {
		case 'S':
			for range c.count(1) {
				sr.syms = append(sr.syms, c.str())
			}
		case 'L':
			for range c.count(1) {
				l := make([]string, c.count(1))
				for i := range l {
					l[i] = sr.sym(&c)
				}
				sr.lists = append(sr.lists, sr.shared.list(l))
			}
		case 'M':
			for range c.count(1) {
				k := c.count(2)
				m := make(map[string]string, k)
				for range k {
					key := sr.sym(&c)
					m[key] = sr.sym(&c)
				}
				sr.maps = append(sr.maps, sr.shared.config(m))
			}
		case 'C':
			// Decoded by a worker, from a copy: body is reused.
			for _, b := range p.send(slices.Clone(body)) {
				if err := add(b); err != nil {
					return nil, err
				}
			}
			c.b = nil
		case 'E':
			for _, b := range p.drain() {
				if err := add(b); err != nil {
					return nil, err
				}
			}
			if len(st.conns) != h.Connections {
				return nil, fmt.Errorf("%d of %d connections present", len(st.conns), h.Connections)
			}
			if _, err := sr.r.ReadByte(); err != io.EOF {
				return nil, fmt.Errorf("data after the end (%v)", err)
			}
			st.shared = sr.shared
			return st, nil
		default:
			return nil, fmt.Errorf("unknown block kind %q", kind)
		}
		if c.bad || len(c.b) != 0 {
			return nil, fmt.Errorf("block %q malformed", kind)
		}
	}
}

// snapshotWorkers is how many goroutines decode a snapshot's connection
// blocks.
var snapshotWorkers = max(runtime.GOMAXPROCS(0), 1)

// connBlock is one connection block: its bytes, then its decoded entries
// or the error that stopped its decoding.
type connBlock struct {
	body []byte
	ents []*statusEntry
	err  error
	done chan struct{}
}

// connPipeline decodes connection blocks on workers; results come back in
// block order. At most 2*snapshotWorkers blocks are in flight, so the
// memory it holds grows with the bytes read, never with a count claimed.
type connPipeline struct {
	sr      *snapshotReader
	pos     uint64
	started bool
	work    chan *connBlock
	pending []*connBlock // in block order
	wg      sync.WaitGroup
}

func newConnPipeline(sr *snapshotReader, pos uint64) *connPipeline {
	return &connPipeline{sr: sr, pos: pos}
}

func (p *connPipeline) start() {
	p.started = true
	p.work = make(chan *connBlock, 2*snapshotWorkers)
	for range snapshotWorkers {
		p.wg.Go(func() {
			for b := range p.work {
				b.ents, b.err = p.sr.connections(b.body, p.pos)
				b.body = nil
				close(b.done)
			}
		})
	}
}

// send queues body for decoding and returns the blocks finished before it
// that had to be taken to keep the bound (in order).
func (p *connPipeline) send(body []byte) []*connBlock {
	if !p.started {
		p.start()
	}
	var out []*connBlock
	for len(p.pending) >= 2*snapshotWorkers {
		<-p.pending[0].done
		out = append(out, p.pending[0])
		p.pending = p.pending[1:]
	}
	b := &connBlock{body: body, done: make(chan struct{})}
	p.pending = append(p.pending, b)
	p.work <- b
	return out
}

// drain waits for every block queued and returns them in order.
func (p *connPipeline) drain() []*connBlock {
	out := p.pending
	for _, b := range out {
		<-b.done
	}
	p.pending = nil
	return out
}

// stop ends the workers (after the blocks queued are decoded).
func (p *connPipeline) stop() {
	if p.started {
		close(p.work)
		p.wg.Wait()
	}
}

// connections decodes a connection block. It only reads sr's tables.
func (sr *snapshotReader) connections(body []byte, pos uint64) ([]*statusEntry, error) {
	c := snapCursor{b: body}
	// The connections' own strings share one allocation per block.
	own := string(c.bytes(c.uvarint()))
	n := c.count(minConnectionBytes)
	ents := make([]*statusEntry, 0, n)
	for range n {
		ent := &statusEntry{}
		sr.connection(&c, &own, ent)
		if c.bad {
			break
		}
		if ent.c.ID == "" || ent.c.Version > pos {
			return nil, fmt.Errorf("a connection is invalid")
		}
		ents = append(ents, ent)
	}
	if c.bad || len(c.b) != 0 || len(own) != 0 {
		return nil, errors.New("block 'C' malformed")
	}
	return ents, nil
}

func cmpErr(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
