package gossip

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/kinactor/kinactor/cluster"
)

// Early crash detection. Gossip needs about 1.3 s of missed probes to
// declare a node dead; the kernel closes a killed process's sockets at
// once. Every pair of members holds one plain TCP connection (the member
// with the lower name dials the other's watch address, gossiped in its
// meta), so each end sees the other's crash as an end of stream within
// milliseconds. An end of stream is only a suspicion: it is confirmed by
// dialing the member's gossip address, and only a refused connection
// (nothing listens there any more) declares it dead, ahead of memberlist,
// which agrees about a second later. A paused process keeps its sockets
// (no end of stream), a partition drops packets (no refusal), and a crash
// of the whole host sends nothing (gossip's probes find it): none of them
// is declared dead early. A refusal from a live process (a firewall that
// REJECTs, a listener briefly gone) is undone as soon as the member is
// heard alive (earlydead.go).

// watchConfirmTimeout bounds the confirming dials of a gossip address.
const watchConfirmTimeout = 500 * time.Millisecond

// The pause before dialing a watch connection again grows from
// watchRedialFirst to watchRedialMax while dials fail (a peer that does not
// know us yet refuses the handshake for a moment).
const (
	watchRedialFirst = 100 * time.Millisecond
	watchRedialMax   = time.Second
)

type watcher struct {
	m  *Membership
	ln net.Listener

	key []byte // HMAC key of the handshake (watchauth.go)

	mu       sync.Mutex
	conns    map[net.Conn]bool   // authenticated watch connections (dialed and accepted)
	shaking  map[net.Conn]bool   // connections in their handshake (dialed and accepted)
	accepted map[string]net.Conn // authenticated accepted connections, one per member
	pending  int                 // accepted connections not yet authenticated
	dialing  map[string]bool     // members this node dials (a goroutine each)
	closed   bool
	dials    int // watch connections dialed and authenticated

	// confirm dials a gossip address to confirm a suspicion (dialRefused;
	// tests replace it, under mu, to make a live member's port refuse).
	confirm func(addr string, timeout time.Duration) (refused bool, err error)
}

// redials counts the watch connections dialed after the first to a member.
func (w *watcher) redials() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.dials - len(w.dialing)
}

func newWatcher(m *Membership, bindHost string) (*watcher, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(bindHost, "0"))
	if err != nil {
		return nil, err
	}
	w := &watcher{
		m: m, ln: ln, key: watchKey(m.cfg.SecretKey, m.cfg.Label),
		conns: map[net.Conn]bool{}, shaking: map[net.Conn]bool{}, accepted: map[string]net.Conn{}, dialing: map[string]bool{},
		confirm: dialRefused,
	}
	go w.accept()
	return w, nil
}

// addr is the watch address to gossip: the advertised host, the port bound.
func (w *watcher) addr(advertise string) string {
	_, port, _ := net.SplitHostPort(w.ln.Addr().String())
	host, _, err := net.SplitHostPort(advertise)
	if err != nil || host == "" || host == "0.0.0.0" || host == "::" {
		host, _, _ = net.SplitHostPort(w.ln.Addr().String())
	}
	return net.JoinHostPort(host, port)
}

// track records a connection in its handshake, unless closed.
func (w *watcher) track(c net.Conn) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		c.Close()
		return false
	}
	w.shaking[c] = true
	return true
}

// promoteLocked records that c is authenticated; mu is held.
func (w *watcher) promoteLocked(c net.Conn) {
	delete(w.shaking, c)
	w.conns[c] = true
}

func (w *watcher) untrack(c net.Conn) {
	w.mu.Lock()
	delete(w.conns, c)
	delete(w.shaking, c)
	w.mu.Unlock()
	c.Close()
}

// all lists every connection held, in its handshake or not; mu is held.
func (w *watcher) allLocked() []net.Conn {
	out := make([]net.Conn, 0, len(w.conns)+len(w.shaking))
	for c := range w.conns {
		out = append(out, c)
	}
	for c := range w.shaking {
		out = append(out, c)
	}
	return out
}

func (w *watcher) close() {
	w.mu.Lock()
	w.closed = true
	conns := w.allLocked()
	w.mu.Unlock()
	w.ln.Close()
	for _, c := range conns {
		c.Close()
	}
}

// reset closes every watch connection, with a TCP reset where it can.
func (w *watcher) reset() {
	w.mu.Lock()
	conns := w.allLocked()
	w.mu.Unlock()
	for _, c := range conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // close with RST, as a REJECT firewall does
		}
		c.Close()
	}
}

// accept takes the connections of members that watch us (watchauth.go:
// at most maxWatchPending unauthenticated at once, more are closed at
// once); once authenticated, the dialer is watched in turn.
func (w *watcher) accept() {
	backoff := 5 * time.Millisecond
	for {
		c, err := w.ln.Accept()
		if err != nil {
			if w.isClosed() {
				return
			}
			// out of file descriptors or the like: keep listening
			w.m.log.Warn("watch port: accept", "err", err)
			select {
			case <-w.m.done:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		w.mu.Lock()
		if w.closed || w.pending >= maxWatchPending {
			w.mu.Unlock()
			c.Close()
			continue
		}
		w.pending++
		w.shaking[c] = true
		w.mu.Unlock()
		go w.serve(c)
	}
}

// serve authenticates an accepted connection, then holds it until its end,
// which suspects its member unless a newer connection of the same member
// replaced it.
func (w *watcher) serve(c net.Conn) {
	name, err := acceptHandshake(c, w.key, w.m.cfg.Label, w.m.cfg.Name, func(n string) bool {
		_, ok := w.m.addressable(n)
		return ok
	})
	w.mu.Lock()
	w.pending--
	if err != nil || w.closed {
		delete(w.shaking, c)
		w.mu.Unlock()
		c.Close()
		if err != nil {
			w.m.log.Debug("watch port: connection refused", "remote", c.RemoteAddr().String(), "err", err)
		}
		return
	}
	if old := w.accepted[name]; old != nil {
		old.Close() // replaced: its end suspects nobody
	}
	w.accepted[name] = c
	w.promoteLocked(c)
	w.mu.Unlock()
	w.m.heardAlive(name, "it authenticated on our watch port")

	_, _ = io.Copy(io.Discard, c)
	w.mu.Lock()
	current := w.accepted[name] == c
	if current {
		delete(w.accepted, name)
	}
	delete(w.conns, c)
	w.mu.Unlock()
	c.Close()
	if current {
		w.suspect(name)
	}
}

// watch makes sure this node watches mem, if it is its turn to dial (the
// lower name dials) and mem gossips a watch address.
func (w *watcher) watch(mem cluster.Member) {
	if mem.Name == w.m.cfg.Name || mem.Meta.Watch == "" || w.m.cfg.Name > mem.Name {
		return
	}
	w.mu.Lock()
	if w.closed || w.dialing[mem.Name] {
		w.mu.Unlock()
		return
	}
	w.dialing[mem.Name] = true
	w.mu.Unlock()
	go w.dialLoop(mem.Name)
}

// dialLoop keeps a watch connection to name while it is a member.
func (w *watcher) dialLoop(name string) {
	defer func() {
		w.mu.Lock()
		delete(w.dialing, name)
		w.mu.Unlock()
	}()
	retry := watchRedialFirst
	for {
		mem, ok := w.m.member(name)
		if !ok || w.isClosed() {
			return
		}
		d := net.Dialer{Timeout: time.Second}
		c, err := d.Dial("tcp", mem.Meta.Watch)
		if err == nil && w.track(c) {
			err = dialHandshake(c, w.key, w.m.cfg.Label, w.m.cfg.Name, name)
			if err != nil {
				// not watching yet: no suspicion (it may not know us
				// yet, or the port is not its own any more)
				w.untrack(c)
				w.m.log.Debug("watch connection not authenticated", "member", name, "err", err)
			} else {
				w.mu.Lock()
				w.dials++
				w.promoteLocked(c)
				w.mu.Unlock()
				retry = watchRedialFirst
				_, _ = io.Copy(io.Discard, c)
				w.untrack(c)
				if w.suspect(name) {
					return
				}
			}
		}
		select {
		case <-w.m.done:
			return
		case <-time.After(retry):
		}
		retry = min(2*retry, watchRedialMax)
	}
}

func (w *watcher) isClosed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.closed
}

// suspect confirms a suspicion of name's death by dialing its gossip
// address, and declares it dead when a dial is refused. A killed process's
// sockets are closed one by one as the kernel tears it down, so the watch
// connection may end a moment before the gossip listener does: a dial that
// connects, or fails otherwise (a reset while the listener closes, a
// timeout), is tried again, a few times over watchConfirmTimeout. It
// reports whether name is dead.
func (w *watcher) suspect(name string) bool {
	deadline := time.Now().Add(watchConfirmTimeout)
	for wait := watchRetryFirst; ; wait *= 2 {
		if w.isClosed() {
			return false
		}
		mem, ok := w.m.member(name)
		if !ok {
			return true // already gone
		}
		w.mu.Lock()
		confirm := w.confirm
		w.mu.Unlock()
		refused, err := confirm(mem.Addr, time.Until(deadline))
		if refused {
			ev, ok := w.m.declareEarlyDead(name)
			if ok {
				w.m.log.Info("member's sockets closed and its gossip port refuses: gone before gossip noticed", "member", name, "how", ev.Kind.String())
				w.m.early.Add(1)
			}
			return true
		}
		if time.Now().Add(wait).After(deadline) {
			// Never refused (it still listens, or no answer at all: a
			// partition): gossip's probes decide.
			w.m.log.Debug("watch connection ended, member's gossip port not refusing", "member", name, "last", err)
			return false
		}
		select {
		case <-w.m.done:
			return false
		case <-time.After(wait):
		}
	}
}

// watchRetryFirst is the first pause between confirming dials (doubling).
const watchRetryFirst = 10 * time.Millisecond

// dialRefused dials addr once: refused reports a refused connection;
// err is any other failure (nil when the dial connected).
func dialRefused(addr string, timeout time.Duration) (refused bool, err error) {
	if timeout <= 0 {
		return false, context.DeadlineExceeded
	}
	d := net.Dialer{Timeout: timeout}
	c, err := d.Dial("tcp", addr)
	if err == nil {
		c.Close()
		return false, nil
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return true, nil
	}
	return false, err
}
