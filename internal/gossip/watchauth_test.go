package gossip

import (
	"bytes"
	"errors"
	"io"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// heldConns counts the connections a node's watch port holds,
// authenticated or in their handshake.
func heldConns(n *node) int {
	n.m.watch.mu.Lock()
	defer n.m.watch.mu.Unlock()
	return len(n.m.watch.conns) + len(n.m.watch.shaking)
}

// strangers opens n connections to addr, each sending line, and returns
// them (closed at cleanup).
func strangers(t *testing.T, addr string, n int, line string) []net.Conn {
	t.Helper()
	var out []net.Conn
	t.Cleanup(func() {
		for _, c := range out {
			c.Close()
		}
	})
	for range n {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			t.Fatalf("stranger dial: %v", err)
		}
		out = append(out, c)
		_, _ = io.WriteString(c, line)
	}
	return out
}

// closedByPeer reports whether the peer closed c (a read ends in EOF or a
// reset rather than timing out).
func closedByPeer(c net.Conn, within time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(within))
	var buf [512]byte
	for {
		_, err := c.Read(buf[:])
		if err == nil {
			continue // the acceptor's greeting
		}
		var ne net.Error
		return !(errors.As(err, &ne) && ne.Timeout())
	}
}

// Strangers on the watch port are not held: 300 of them, half sending a
// line naming a member, half silent (held only until the handshake
// deadline), leave no goroutine and no connection behind.
func TestWatchPortHoldsNoStrangers(t *testing.T) {
	a := start(t, Config{Name: "a", BindAddr: "127.0.0.1:0", Watch: true})
	b := start(t, Config{Name: "b", BindAddr: "127.0.0.1:0", Watch: true, Seeds: []string{a.m.Addr()}})
	eventually(t, 5*time.Second, "a watches b", func() bool { return watchConns(a) == 1 && watchConns(b) == 1 })
	runtime.GC()
	base := runtime.NumGoroutine()
	addr := b.m.watchAddr
	cs := strangers(t, addr, 150, "") // silent: held until the handshake deadline at most
	eventually(t, 2*time.Second, "the acceptor took the silent strangers", func() bool {
		b.m.watch.mu.Lock()
		defer b.m.watch.mu.Unlock()
		return b.m.watch.pending == maxWatchPending
	})
	if held := heldConns(b); held > 1+maxWatchPending {
		t.Fatalf("%d watch connections held with 150 silent strangers, want at most 1+%d", held, maxWatchPending)
	}
	cs = append(cs, strangers(t, addr, 150, "a\n")...)
	deadline := time.Now().Add(6 * time.Second)
	for {
		g, held := runtime.NumGoroutine(), heldConns(b)
		if g <= base+2 && held == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 6s: %d goroutines (baseline %d), %d watch connections held (want 1, a's)", g, base, held)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i, c := range cs {
		if !closedByPeer(c, 2*time.Second) {
			t.Fatalf("stranger %d: connection still open", i)
		}
	}
	if !sees(a.m, "a", "b") || !sees(b.m, "a", "b") || a.m.EarlyDeaths()+b.m.EarlyDeaths() != 0 {
		t.Fatal("strangers disturbed the members")
	}
}

// A stranger's connection naming a member, when it ends, makes the
// acceptor suspect nobody: no confirming dial.
func TestWatchStrangerTriggersNoConfirmingDial(t *testing.T) {
	a := start(t, Config{Name: "a", BindAddr: "127.0.0.1:0", Watch: true})
	b := start(t, Config{Name: "b", BindAddr: "127.0.0.1:0", Watch: true, Seeds: []string{a.m.Addr()}})
	eventually(t, 5*time.Second, "a watches b", func() bool { return watchConns(a) == 1 && watchConns(b) == 1 })
	var confirms atomic.Int64
	setConfirm(b, func(addr string, timeout time.Duration) (bool, error) {
		confirms.Add(1)
		return dialRefused(addr, timeout)
	})
	cs := strangers(t, b.m.watchAddr, 5, "a\n")
	for _, c := range cs { // the lines are in the acceptor's socket before the FIN
		c.Close()
	}
	never(t, time.Second, "a stranger's line made b dial a's gossip port", func() bool { return confirms.Load() > 0 })
}

// The watch port closes connections that do not prove the cluster's key
// and label, or that name no member, and authenticates itself to dialers;
// members with the right key and label watch each other (and a crash is
// still detected early).
func TestWatchHandshakeNeedsKeyAndLabel(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	label := "kinactor-test"
	cfg := func(name string, seeds ...string) Config {
		return Config{Name: name, BindAddr: "127.0.0.1:0", Watch: true, SecretKey: key, Label: label, Seeds: seeds}
	}
	a := start(t, cfg("a"))
	b := start(t, cfg("b", a.m.Addr()))
	c := start(t, cfg("c", a.m.Addr()))
	for _, n := range []*node{a, b, c} {
		eventually(t, 5*time.Second, n.m.Name()+" sees a,b,c", func() bool { return sees(n.m, "a", "b", "c") })
	}
	// a dials b and c, b dials c: 2 each
	eventually(t, 5*time.Second, "the members watch each other", func() bool {
		return watchConns(a) == 2 && watchConns(b) == 2 && watchConns(c) == 2
	})
	var confirms atomic.Int64
	setConfirm(b, func(addr string, timeout time.Duration) (bool, error) {
		confirms.Add(1)
		return dialRefused(addr, timeout)
	})
	// b dials c, so b holds no accepted connection from c: pretend to be c.
	try := func(key []byte, label, from string) (net.Conn, error) {
		conn, err := net.DialTimeout("tcp", b.m.watchAddr, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn, dialHandshake(conn, key, label, from, "b")
	}
	for _, tc := range []struct {
		what  string
		key   []byte
		label string
		from  string
	}{
		{"wrong key", bytes.Repeat([]byte{8}, 32), label, "c"},
		{"no key", nil, label, "c"},
		{"wrong label", key, "other", "c"},
		{"not a member", key, label, "zz"},
		{"our own name", key, label, "b"},
	} {
		conn, err := try(tc.key, tc.label, tc.from)
		if err == nil {
			t.Fatalf("%s: handshake succeeded", tc.what)
		}
		if !closedByPeer(conn, 3*time.Second) {
			t.Fatalf("%s: b did not close the connection", tc.what)
		}
	}
	if got := watchConns(b); got != 2 {
		t.Fatalf("b holds %d watch connections after the rejected ones, want 2", got)
	}
	// The right key and label, as a member: accepted and held.
	conn, err := try(key, label, "c")
	if err != nil {
		t.Fatalf("handshake with the right key and label: %v", err)
	}
	eventually(t, 2*time.Second, "b holds the authenticated connection", func() bool { return watchConns(b) == 3 })
	if closedByPeer(conn, 200*time.Millisecond) {
		t.Fatal("b closed an authenticated connection")
	}
	// A second connection from the same member replaces the first; the
	// replaced one's end suspects nobody.
	conn2, err := try(key, label, "c")
	if err != nil {
		t.Fatalf("second handshake as c: %v", err)
	}
	if !closedByPeer(conn, 3*time.Second) {
		t.Fatal("b kept the first connection of c after a second one")
	}
	eventually(t, 2*time.Second, "b holds one connection of c", func() bool { return watchConns(b) == 3 })
	if closedByPeer(conn2, 200*time.Millisecond) {
		t.Fatal("b closed the newer connection of c")
	}
	if confirms.Load() != 0 {
		t.Fatalf("rejected or replaced connections made b dial %d times", confirms.Load())
	}
	conn2.Close() // c's (fake) watch connection ends: b confirms, c's port answers
	eventually(t, 3*time.Second, "b suspects c once its connection ends", func() bool { return confirms.Load() > 0 })
	if b.m.EarlyDeaths() != 0 {
		t.Fatal("b declared the live c dead")
	}

	// The dialer authenticates the acceptor: a port that greets like a
	// watch port but cannot prove the key is not watched.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		sc, err := ln.Accept()
		if err != nil {
			return
		}
		defer sc.Close()
		_, _ = sc.Write(append([]byte(watchMagic), make([]byte, watchNonceSize)...))
		_, _ = io.ReadFull(sc, make([]byte, 2+1+watchNonceSize+32)) // "a", its nonce and MAC
		_, _ = sc.Write(bytes.Repeat([]byte{1}, 32))                // not the acceptor's MAC
		_, _ = io.Copy(io.Discard, sc)
	}()
	fake, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	if err := dialHandshake(fake, key, label, "a", "b"); !errors.Is(err, errWatchAuth) {
		t.Fatalf("dialing an acceptor with another key: err = %v, want %v", err, errWatchAuth)
	}

	// Members with the key still detect a crash early.
	_ = c.m.Shutdown()
	for _, n := range []*node{a, b} {
		eventually(t, 5*time.Second, n.m.Name()+" sees c die", func() bool { return n.log.has(MemberDied, "c") })
	}
	if a.m.EarlyDeaths() != 1 || b.m.EarlyDeaths() != 1 {
		t.Fatalf("early deaths a=%d b=%d, want 1 each", a.m.EarlyDeaths(), b.m.EarlyDeaths())
	}
}
