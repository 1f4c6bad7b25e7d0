package main

import (
	"bytes"
	"flag"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/kinactor/kinactor/cluster"
)

func TestTestFaultsEndpoints(t *testing.T) {
	var mn memberlist.MockNetwork
	inner, peer := mn.NewTransport("a"), mn.NewTransport("b")
	dt := cluster.NewDropTransport(inner)
	defer dt.Shutdown()
	defer peer.Shutdown()
	mux := http.NewServeMux()
	handleTestFaults(mux, dt, func(string, ...any) {})
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
