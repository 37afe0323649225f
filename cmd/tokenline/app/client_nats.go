package app

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/spf13/pflag"

	"github.com/tokenline/tokenline/adapters/natsserver"
)

// readerNATS is how the commands that read the stream straight from NATS
// (events tail, verify) reach it: --nats-url and --creds, else
// TOKENLINE_NATS_URL and TOKENLINE_NATS_CREDS, else the embedded server's
// default URL without credentials. The reader identity suffices for both.
type readerNATS struct{ url, creds string }

func (r *readerNATS) register(fs *pflag.FlagSet) {
	fs.StringVar(&r.url, "nats-url", "", "NATS URL, or a comma-separated list (env "+envClientNATSURL+", default "+DefaultNATSURL+")")
	fs.StringVar(&r.creds, "creds", "", "NATS credentials: a .creds file or a user nkey seed file such as <data dir>/nats-reader.nk (env "+envNATSCreds+")")
}

// connect connects as client name; the error says which flags to set.
func (r *readerNATS) connect(ctx context.Context, name string) (*nats.Conn, error) {
	url := cmp.Or(r.url, strings.TrimSpace(os.Getenv(envClientNATSURL)), DefaultNATSURL)
	creds := cmp.Or(r.creds, strings.TrimSpace(os.Getenv(envNATSCreds)))
	nc, err := natsserver.Connect(ctx, url, natsserver.ConnectOptions{CredsFile: creds, Name: name})
	if err != nil {
		return nil, fmt.Errorf("%w (set --nats-url or %s to tokenline's NATS, and --creds or %s to the reader nkey seed file)", err, envClientNATSURL, envNATSCreds)
	}
	return nc, nil
}
