// Package projections holds tokenline's read models, built only from the
// event stream (plus, for the gate, the access tokens the lifecycle hands
// over: tokens never travel in events).
//
//   - Gate answers on every outbound API call whether a connection may be
//     used now and with which access token: lock-free, allocation-free when
//     open (see Gate).
//   - Status is the durable per-connection read model for the API and the UI
//     (the domain.Connection aggregates; the HTTP API describes them), restored
//     from snapshots and kept up to date by a Runner.
//   - The audit log (Audit, AuditEach, AuditEvents, ExportJSONL) and
//     incident replay (StateAt, Timeline) read the stream on demand instead
//     of holding events in memory.
//
// # Inputs
//
// Gate and Status take domain.Event values: they know nothing of NATS, so
// the lifecycle service can feed the gate directly (jsstore's OnAppend hook)
// and tests can feed both without a server. Reading the stream is the job of
// the Runner, Build, the audit and replay functions, which take a
// *jsstore.Store and work with jsstore.Record (sequence, subject, storage
// time, event or decoding error); a record that does not decode or that the
// aggregate refuses is logged (never its payload), counted and passed over.
//
// # Reading the stream fast
//
// Replays decode events on several goroutines between the reading
// goroutine and the (single, ordered) applying goroutine, and use a decoder
// for the canonical form events.Encode writes that falls back to
// events.Decode for anything else (see decodeEvent). On a 2-core machine a
// full rebuild runs at roughly two thirds of the speed of a raw
// ordered-consumer read of the same stream (BenchmarkRebuild).
//
// # Durability
//
// The Runner writes a snapshot of Status (JSON Lines: a header with the
// stream position, then one aggregate per line) to the object store bucket
// SnapshotsBucket and then the position to the KV bucket PositionsBucket,
// every RunnerConfig.SnapshotEvery records or SnapshotInterval and on Close.
// At start it restores the snapshot and replays only the tail after it. The
// Gate is derived from Status at start-up (Gate.Seed), then follows the
// stream and the OnAppend hook.
package projections
