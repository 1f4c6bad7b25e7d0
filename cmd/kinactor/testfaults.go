package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/hashicorp/memberlist"

	"github.com/kinactor/kinactor"
	"github.com/kinactor/kinactor/cluster"
)

// The --test-faults flag of `kinactor node` is for chaos runs only (see
// `kinactor chaos`): the node gossips through a cluster.DropTransport over
// memberlist's own TCP/UDP transport, and its --http server gets
//
//	POST /faults/partition?block=HOST:PORT,HOST:PORT  drop gossip to and from those addresses
//	POST /faults/heal                                 stop dropping anything
//
// A DropTransport prepends a preamble to every stream it dials, so every
// member of such a cluster must run with --test-faults. Without the flag
// the endpoints do not exist (404).
const testFaultsFlag = "test-faults"

// newTestFaultsTransport binds memberlist's network transport on bind
// (host:port; port 0 picks one, used for TCP and UDP alike) and wraps it.
func newTestFaultsTransport(bind string, logw io.Writer) (*cluster.DropTransport, error) {
	host, portStr, err := net.SplitHostPort(bind)
	if err != nil {
		return nil, err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("port %q: %v", portStr, err)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{host},
		BindPort:  port,
		Logger:    log.New(logw, "memberlist transport: ", log.LstdFlags),
	})
	if err != nil {
		return nil, err
	}
	return cluster.NewDropTransport(nt), nil
}

// handleTestFaults adds the /faults/ endpoints for dt to mux.
func handleTestFaults(mux *http.ServeMux, dt *cluster.DropTransport, logf func(msg string, args ...any)) {
	mux.HandleFunc("POST /faults/partition", func(w http.ResponseWriter, r *http.Request) {
		var addrs []string
		for a := range strings.SplitSeq(r.URL.Query().Get("block"), ",") {
			if a = strings.TrimSpace(a); a == "" {
				continue
			}
			if _, _, err := net.SplitHostPort(a); err != nil {
				http.Error(w, fmt.Sprintf("block: %q is not host:port\n", a), http.StatusBadRequest)
				return
			}
			addrs = append(addrs, a)
		}
		if len(addrs) == 0 {
			http.Error(w, "block: want HOST:PORT,HOST:PORT\n", http.StatusBadRequest)
			return
		}
		dt.Block(addrs...)
		logf("test fault: gossip blocked", "addrs", strings.Join(addrs, ","))
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("POST /faults/heal", func(w http.ResponseWriter, _ *http.Request) {
		dt.UnblockAll()
		logf("test fault: gossip healed")
		_, _ = io.WriteString(w, "ok\n")
	})
}

// printDefaultsExcept prints fs's flags like PrintDefaults, leaving out
// the named ones (test-only flags).
func printDefaultsExcept(fs *flag.FlagSet, hidden ...string) {
	shown := flag.NewFlagSet(fs.Name(), flag.ContinueOnError)
	shown.SetOutput(fs.Output())
	fs.VisitAll(func(f *flag.Flag) {
		for _, h := range hidden {
			if f.Name == h {
				return
			}
		}
		shown.Var(f.Value, f.Name, f.Usage)
	})
	shown.PrintDefaults()
}

// dropTransportOf returns the transport --test-faults installed, or nil.
func dropTransportOf(cl *kinactor.ClusterConfig) *cluster.DropTransport {
	if cl == nil {
		return nil
	}
	dt, _ := cl.Transport.(*cluster.DropTransport)
	return dt
}
