package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kinactor/kinactor/actors"
	"github.com/kinactor/kinactor/cluster"
	"github.com/kinactor/kinactor/internal/gossip"
	"github.com/kinactor/kinactor/messages"
)

// The --test-faults flag of `kinactor node` is for chaos runs only (see
// `kinactor chaos`): the node gossips through a gossip.DropTransport over
// memberlist's own TCP/UDP transport, and its --http server gets
//
//	POST /faults/partition?block=HOST:PORT,HOST:PORT  drop gossip to and from those addresses
//	POST /faults/heal                                 stop dropping anything
//	POST /faults/hang?for=DURATION                    the processor stops answering for DURATION (0 ends a hang)
//	POST /faults/refuse?for=DURATION                  the gossip port refuses TCP for DURATION (UDP goes on); watch connections reset
//
// While a hang is in force, the processor function (ledger or log) blocks
// before it writes anything, until the hang ends — then it processes the
// batch as usual — or until its context is cancelled (the node gives up on
// the batch after --process-timeout) — then it returns ctx.Err() having
// written nothing.
//
// A DropTransport prepends a preamble to every stream it dials, so every
// member of such a cluster must run with --test-faults. Without the flag
// the endpoints do not exist (404). The gossip transport under the
// DropTransport is a refusingTransport (testfaults_net.go), not
// memberlist's own.
const testFaultsFlag = "test-faults"

// newTestFaultsTransport binds a refusingTransport on bind (host:port;
// port 0 picks one, used for TCP and UDP alike) and wraps it in a
// gossip.DropTransport (partitions).
func newTestFaultsTransport(bind string) (*gossip.DropTransport, *refusingTransport, error) {
	host, portStr, err := net.SplitHostPort(bind)
	if err != nil {
		return nil, nil, err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, nil, fmt.Errorf("port %q: %v", portStr, err)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	rt, err := newRefusingTransport(host, port)
	if err != nil {
		return nil, nil, err
	}
	return gossip.NewDropTransport(rt), rt, nil
}

// handleRefuse adds POST /faults/refuse?for=DURATION: the gossip port
// refuses TCP connections for DURATION while UDP gossip goes on, and the
// early-detection connections this node holds are reset, as a firewall
// that REJECTs would do to them.
func handleRefuse(mux *http.ServeMux, dt *gossip.DropTransport, rt *refusingTransport, logf func(msg string, args ...any)) {
	mux.HandleFunc("POST /faults/refuse", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("for"))
		if err != nil || d <= 0 {
			http.Error(w, fmt.Sprintf("for: want a positive duration such as 4s, got %q\n", r.URL.Query().Get("for")), http.StatusBadRequest)
			return
		}
		rt.refuseFor(d)
		dt.ResetWatchConns()
		logf("test fault: gossip port refuses TCP", "for", d)
		_, _ = io.WriteString(w, "ok\n")
	})
}

// processorHang makes a processor function stop answering for a while
// (POST /faults/hang). The zero value is ready, with no hang in force; its
// methods may be called concurrently.
type processorHang struct {
	mu      sync.Mutex
	until   time.Time
	changed chan struct{} // closed (and replaced) whenever until changes
}

// set starts a hang of d from now, replacing the one in force (d <= 0
// ends it).
func (h *processorHang) set(d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.until = time.Now().Add(d)
	if h.changed != nil {
		close(h.changed)
	}
	h.changed = make(chan struct{})
}

// wait blocks while a hang is in force; it returns ctx.Err() if ctx ends
// first, else nil.
func (h *processorHang) wait(ctx context.Context) error {
	for {
		h.mu.Lock()
		if h.changed == nil {
			h.changed = make(chan struct{})
		}
		left, changed := time.Until(h.until), h.changed
		h.mu.Unlock()
		if left <= 0 {
			return nil
		}
		t := time.NewTimer(left)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}

// wrap returns fn preceded by wait.
func (h *processorHang) wrap(fn actors.ProcessorFunc) actors.ProcessorFunc {
	return func(ctx context.Context, b messages.Batch) error {
		if err := h.wait(ctx); err != nil {
			return err
		}
		return fn(ctx, b)
	}
}

// handleTestFaults adds the /faults/ endpoints for dt and hang to mux (no
// /faults/hang when hang is nil).
func handleTestFaults(mux *http.ServeMux, dt *gossip.DropTransport, hang *processorHang, logf func(msg string, args ...any)) {
	if hang != nil {
		mux.HandleFunc("POST /faults/hang", func(w http.ResponseWriter, r *http.Request) {
			d, err := time.ParseDuration(r.URL.Query().Get("for"))
			if err != nil {
				http.Error(w, fmt.Sprintf("for: want a duration such as 20s: %v\n", err), http.StatusBadRequest)
				return
			}
			hang.set(d)
			logf("test fault: processor hangs", "for", d)
			_, _ = io.WriteString(w, "ok\n")
		})
	}
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
func dropTransportOf(cl *cluster.Config) *gossip.DropTransport {
	if cl == nil {
		return nil
	}
	dt, _ := cl.Transport.(*gossip.DropTransport)
	return dt
}
