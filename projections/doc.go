// Package projections holds tokenline's read models, built only from the
// event stream (plus, for the gate, the access tokens the lifecycle hands
// over: tokens never travel in events).
//
//   - Status is the durable per-connection read model for the API and the UI
//     (the domain.Connection aggregates; the HTTP API describes them), restored from snapshots and kept up to date by a
//     Runner. It is the only place here that applies events, with
//     domain.Connection.Apply, and it tells observers of every change as a
//     (before, after) pair of connections (Status.OnChange).
//   - Gate answers on every outbound API call whether a connection may be
//     used now and with which access token: lock-free, allocation-free when
//     open (see Gate). It derives each entry from the connection after a
//     change (Gate.Observe, registered with Status.OnChange) and implements
//     domain.GateWriter for the lifecycle (CloseAfter, Reopen, SetToken).
//   - The audit log (AuditEvents) and incident replay (StateAt, Timeline)
//     read the stream on demand instead of holding events in memory; the
//     replay folds with domain.Connection.Apply as well.
//
// # Inputs
//
// The package is pure: it imports no adapter, no NATS client and no HTTP.
// It reads the stream through the Source interface (Info, Read, Follow),
// whose records are events.Record values (sequence, subject, storage time,
// event or decoding error), and keeps a projection's snapshot and position
// through the Checkpoints interface. adapters/jsstore implements both on
// JetStream (*jsstore.Store, *jsstore.Checkpoints): ordered consumers with
// parallel decoding, the object store and the KV bucket live there. A
// record that does not decode or that the aggregate refuses is logged
// (never its payload) and passed over.
//
// # One write path
//
// This instance's appends reach Status through jsstore's OnAppend hook
// (Status.Apply, before Append returns); the stream's records reach it
// through the Runner. Either way Status folds the event and tells its
// observers, the gate among them, of the change: the gate has no other
// input of events. Status.OnChange documents when observers are told,
// including the start-up seeding at the end of the Runner's catch-up.
//
// # Reading the stream fast
//
// jsstore's Read decodes events on several goroutines between the reading
// goroutine and the (single, ordered) applying goroutine, with
// events.Decoder, which parses the canonical form events.Encode writes and
// falls back to events.Decode for anything else (BenchmarkDecoder).
// BenchmarkRebuild compares a Runner's rebuild without a snapshot with a
// raw ordered-consumer read of the same stream; BenchmarkDecodeApply
// measures the decoding and folding per event, allocations included.
//
// # Memory
//
// Status keeps one 512-byte entry per connection, its config packed in a
// string beside the aggregate (config.go: a one-entry map takes about 360
// bytes, its packed form about 16); equal scope lists and configs are held
// once (sharedValues), and at the end of a catch-up the
// live entries and their own strings are allocated afresh (compact) so
// that the heap in use after GC stays close to the live heap
// (BenchmarkMemoryPerConnection prints both).
//
// # Durability
//
// The Runner writes a snapshot of Status (a compact binary format, see
// snapshotFormat: a header with the stream position, tables of the
// repeated values, then the aggregates in blocks) and then the position to
// its Checkpoints every RunnerConfig.SnapshotEvery records (at least half
// as many records as connections) or
// SnapshotInterval and on Close. At start it restores the snapshot and
// replays only the tail after it.
package projections
