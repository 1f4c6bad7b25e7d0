package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/kinactor/kinactor/internal/gossip"
	"github.com/kinactor/kinactor/messages"
)

func TestTestFaultsEndpoints(t *testing.T) {
	var mn memberlist.MockNetwork
	inner, peer := mn.NewTransport("a"), mn.NewTransport("b")
	dt := gossip.NewDropTransport(inner)
	defer dt.Shutdown()
	defer peer.Shutdown()
	mux := http.NewServeMux()
	handleTestFaults(mux, dt, nil, func(string, ...any) {})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	post := func(path string) int {
		resp, err := http.Post(srv.URL+path, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	ip, port, err := peer.FinalAdvertiseAddr("", 0)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort(ip.String(), strconv.Itoa(port))
	go func() { // the mock network's streams block until accepted
		for c := range peer.StreamCh() {
			go func() { _, _ = io.Copy(io.Discard, c) }()
		}
	}()
	if code := post("/faults/partition?block=" + addr); code != http.StatusOK {
		t.Fatalf("partition: HTTP %d", code)
	}
	if _, err := dt.DialTimeout(addr, time.Second); err == nil {
		t.Fatal("dial to a blocked address succeeded")
	}
	if code := post("/faults/heal"); code != http.StatusOK {
		t.Fatalf("heal: HTTP %d", code)
	}
	c, err := dt.DialTimeout(addr, time.Second)
	if err != nil {
		t.Fatalf("dial after heal: %v", err)
	}
	c.Close()
	if code := post("/faults/partition?block=nonsense"); code != http.StatusBadRequest {
		t.Fatalf("bad address: HTTP %d, want 400", code)
	}
	if code := post("/faults/partition"); code != http.StatusBadRequest {
		t.Fatalf("no address: HTTP %d, want 400", code)
	}
	if code := post("/faults/hang?for=1s"); code != http.StatusNotFound && code != http.StatusMethodNotAllowed {
		t.Fatalf("hang without a processorHang: HTTP %d, want 404", code)
	}
}

// A hang makes the processor function block before it writes anything,
// until the hang ends (then the batch is processed) or its context is
// cancelled (then it returns ctx.Err() having written nothing).
func TestTestFaultsHang(t *testing.T) {
	var hang processorHang
	mux := http.NewServeMux()
	handleTestFaults(mux, gossip.NewDropTransport(new(memberlist.MockNetwork).NewTransport("a")), &hang, func(string, ...any) {})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	post := func(path string) int {
		t.Helper()
		resp, err := http.Post(srv.URL+path, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	var wrote atomic.Int64
	fn := hang.wrap(func(_ context.Context, b messages.Batch) error {
		wrote.Add(int64(len(b.Records)))
		return nil
	})
	batch := messages.Batch{ShardID: "s0", Records: []messages.Record{{SequenceNumber: "1"}}}

	// No hang: straight through.
	if err := fn(context.Background(), batch); err != nil || wrote.Load() != 1 {
		t.Fatalf("without a hang: %v, wrote %d", err, wrote.Load())
	}
	if code := post("/faults/hang?for=nonsense"); code != http.StatusBadRequest {
		t.Fatalf("bad duration: HTTP %d, want 400", code)
	}

	// Cancelled while hanging: ctx.Err(), nothing written.
	if code := post("/faults/hang?for=1h"); code != http.StatusOK {
		t.Fatalf("hang: HTTP %d", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := fn(ctx, batch); !errors.Is(err, context.DeadlineExceeded) || wrote.Load() != 1 {
		t.Fatalf("cancelled during a hang: %v, wrote %d", err, wrote.Load())
	}

	// Ended early (for=0): the blocked call goes on and writes.
	done := make(chan error, 1)
	go func() { done <- fn(context.Background(), batch) }()
	select {
	case err := <-done:
		t.Fatalf("returned during the hang: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	if code := post("/faults/hang?for=0s"); code != http.StatusOK {
		t.Fatalf("end hang: HTTP %d", code)
	}
	if err := <-done; err != nil || wrote.Load() != 2 {
		t.Fatalf("after the hang ended: %v, wrote %d", err, wrote.Load())
	}

	// A hang that runs out by itself.
	hang.set(150 * time.Millisecond)
	start := time.Now()
	if err := fn(context.Background(), batch); err != nil || wrote.Load() != 3 {
		t.Fatalf("after a hang ran out: %v, wrote %d", err, wrote.Load())
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("returned after %v, during a 150ms hang", d)
	}
}

func TestTestFaultsFlagHidden(t *testing.T) {
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	var b bytes.Buffer
	fs.SetOutput(&b)
	fs.String("app", "", "application name")
	fs.Bool(testFaultsFlag, false, "chaos only")
	printDefaultsExcept(fs, testFaultsFlag)
	if !strings.Contains(b.String(), "-app") || strings.Contains(b.String(), testFaultsFlag) {
		t.Fatalf("usage:\n%s", b.String())
	}
}
