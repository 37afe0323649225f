// Package natsserver runs the NATS server that tokenline keeps its state in,
// and connects to one.
//
// Most installations run tokenline as a single process with NATS embedded:
// Start launches nats-server inside the process with JetStream enabled and a
// file store under Config.DataDir, waits until it accepts clients, and returns
// a Server. Server.Connect hands out client connections to it that go through
// an in-process pipe rather than TCP, so the embedded server costs no socket
// round trips. The server also listens on Config.Listen (loopback by default)
// so that operators and consumers can reach it with the nats CLI.
//
// # Data directory
//
// The data directory belongs to exactly one running server. Start takes an
// exclusive advisory lock (flock(2)) on DataDir/LOCK before it touches the
// JetStream store and writes its process id into that file. A second Start on
// the same directory, from this process or from another, fails at once with a
// *DataDirInUseError that names the holder's pid, instead of letting two
// servers write the same store files and corrupt them. Shutdown releases the
// lock; if the process dies, the operating system releases it.
//
// The layout is:
//
//	DataDir/                   created with mode 0700 if missing
//	DataDir/LOCK               the lock file (holds the pid of the owner)
//	DataDir/jetstream          the JetStream file store
//	DataDir/nats-tokenline.nk  tokenline's nkey seed (mode 0600)
//	DataDir/nats-reader.nk     the reader's nkey seed (mode 0600)
//
// # Authentication
//
// The embedded server refuses anonymous clients. It knows two nkey users,
// whose seeds Start creates on first use and reuses after; an existing seed
// file that group or others may access stops Start. tokenline's own
// identity has every right; Server.Connect uses it, with reply subjects
// under InboxPrefix. The reader identity, for downstream consumers, has
// ReaderPermissions: it may read the TOKENLINE stream, create and use
// consumers on it and subscribe to the event subjects, and nothing else.
//
// # External NATS
//
// Larger installations point tokenline at an existing NATS system instead.
// The package-level Connect function dials such a server with NATS
// credentials and/or mutual TLS and with reconnect settings suited to a
// long-running service. Its errors never contain passwords or tokens that
// were embedded in the server URL.
package natsserver
