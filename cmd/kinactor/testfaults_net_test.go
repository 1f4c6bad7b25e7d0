package main

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/kinactor/kinactor/internal/gossip"
)

// The refusing transport's TCP port refuses while a refusal is in force
// and accepts again after it, and UDP packets pass all along: what a
// firewall that REJECTs TCP looks like from a peer.
func TestRefusingTransport(t *testing.T) {
	rt, err := newRefusingTransport("127.0.0.1", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Shutdown()
	ip, port, err := rt.FinalAdvertiseAddr("", 0)
	if err != nil || !ip.Equal(net.IPv4(127, 0, 0, 1)) || port == 0 {
		t.Fatalf("advertise %v:%d %v", ip, port, err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	go func() {
		for c := range rt.StreamCh() {
			c.Close()
		}
	}()
	dial := func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(); err != nil {
		t.Fatalf("before the refusal: %v", err)
	}
	udpOK := func() {
		t.Helper()
		u, err := net.Dial("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer u.Close()
		if _, err := u.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		select {
		case p := <-rt.PacketCh():
			if string(p.Buf) != "ping" {
				t.Fatalf("packet %q", p.Buf)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no UDP packet")
		}
	}
	udpOK()

	rt.refuseFor(300 * time.Millisecond)
	if err := dial(); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("during the refusal, a dial: %v (want connection refused)", err)
	}
	udpOK()
	deadline := time.Now().Add(5 * time.Second)
	for dial() != nil {
		if time.Now().After(deadline) {
			t.Fatal("the port still refuses 5s after a 300ms refusal")
		}
		time.Sleep(20 * time.Millisecond) // polling a port: nothing to wait on
	}
}

// POST /faults/refuse needs a positive duration and starts a refusal.
func TestRefuseEndpoint(t *testing.T) {
	rt, err := newRefusingTransport("127.0.0.1", 0)
	if err != nil {
		t.Fatal(err)
	}
	dt := gossip.NewDropTransport(rt)
	defer dt.Shutdown()
	mux := http.NewServeMux()
	handleRefuse(mux, dt, rt, func(string, ...any) {})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for path, want := range map[string]int{"/faults/refuse": 400, "/faults/refuse?for=-1s": 400, "/faults/refuse?for=1h": 200} {
		resp, err := http.Post(srv.URL+path, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: HTTP %d, want %d", path, resp.StatusCode, want)
		}
	}
	_, port, _ := rt.FinalAdvertiseAddr("", 0)
	if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second); err == nil {
		c.Close()
		t.Fatal("the gossip port accepts during a refusal")
	}
}
