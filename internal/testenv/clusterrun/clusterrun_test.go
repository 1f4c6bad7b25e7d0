package clusterrun

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// fakeNode is a stand-in for `kinactor node`: it writes its ready file and
// the NODE_ENV it was given, then sleeps until killed.
const fakeNode = `#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in
    --ready-file) ready="$2"; shift;;
    --name) name="$2"; shift;;
  esac
  shift
done
printf '%s' "$NODE_ENV" > "$(dirname "$ready")/$name.env"
printf '{"node":"%s","gossip":"","http":"127.0.0.1:1","pid":%d}' "$name" $$ > "$ready.tmp"
mv "$ready.tmp" "$ready"
exec sleep 600
`

// procState returns the state letter of /proc/PID/stat (R, S, T, ...).
func procState(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])[0]
}

func TestNodeEnvAndPauseResume(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "fake-node")
	if err := os.WriteFile(bin, []byte(fakeNode), 0o755); err != nil {
		t.Fatal(err)
	}
	c, err := Start(context.Background(), Options{Bin: bin, Dir: dir, App: "a", Stream: "s", Nodes: 2,
		Env: []string{"NODE_ENV=shared"}, ReadyTimeout: 10 * time.Second,
		NodeEnv: func(name string) ([]string, error) { return []string{"NODE_ENV=" + name + "-only"}, nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, n := range []string{"n1", "n2"} {
		b, err := os.ReadFile(filepath.Join(dir, "ready", n+".env"))
		if err != nil || string(b) != n+"-only" {
			t.Fatalf("%s got NODE_ENV %q (%v), want its own", n, b, err)
		}
	}
	p := c.Nodes()[1]
	if err := c.Pause(p); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for procState(t, p.PID) != "T" {
		if time.Now().After(deadline) {
			t.Fatalf("%s not stopped after SIGSTOP: state %s", p.Name, procState(t, p.PID))
		}
		<-tick.C
	}
	if !p.Paused() || !p.Running() || len(c.Nodes()) != 2 {
		t.Fatalf("paused %v running %v nodes %d", p.Paused(), p.Running(), len(c.Nodes()))
	}
	if err := c.Resume(p); err != nil {
		t.Fatal(err)
	}
	for procState(t, p.PID) == "T" {
		if time.Now().After(deadline) {
			t.Fatalf("%s still stopped after SIGCONT", p.Name)
		}
		<-tick.C
	}
	if p.Paused() {
		t.Fatal("still marked paused")
	}
	var kinds []EventKind
	for _, e := range c.Events() {
		kinds = append(kinds, e.Kind)
	}
	if fmt.Sprint(kinds) != "[start start pause resume]" {
		t.Fatalf("events %v", kinds)
	}
	// Close kills a paused node too.
	if err := c.Pause(p); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { c.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end a paused node")
	}
	if err := c.Pause(p); err == nil {
		t.Fatal("pausing an exited node succeeded")
	}

	bad := Options{Bin: bin, Dir: t.TempDir(), App: "a", Stream: "s", Nodes: 1,
		NodeEnv: func(string) ([]string, error) { return nil, fmt.Errorf("no proxies") }}
	if _, err := Start(context.Background(), bad); err == nil || !strings.Contains(err.Error(), "no proxies") {
		t.Fatalf("NodeEnv error: %v", err)
	}
}
