package engine

import (
	"context"

	"net"
	"os/exec"
	"testing"

	"github.com/kinactor/kinactor/internal/lease"
)

func TestProveDead(t *testing.T) {
	self := SelfIdentity("")
	if self.Host == "" {
		t.Skip("no host identity on this system")
	}
	ctx := context.Background()
	// a process of this host that has exited
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	gone := self
	gone.PID = int64(cmd.Process.Pid)
	if dead, how := ProveDead(ctx, gone, self); !dead {
		t.Fatalf("an exited process on this host not proven dead (%s)", how)
	}
	// a live process of this host (this one's parent is alive, say: use a sleeping child)
	live := exec.Command("sleep", "30")
	if err := live.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = live.Process.Kill(); _ = live.Wait() })
	alive := self
	alive.PID = int64(live.Process.Pid)
	if dead, _ := ProveDead(ctx, alive, self); dead {
		t.Fatal("a live process proven dead")
	}
	// another host: the process id says nothing
	other := gone
	other.Host = "elsewhere/boot/ns"
	if dead, _ := ProveDead(ctx, other, self); dead {
		t.Fatal("a process of another host proven dead by its id")
	}
	// a gossip address with a listener: alive; without: refused, dead
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if dead, _ := ProveDead(ctx, lease.Identity{Address: addr, Host: "elsewhere/boot/ns"}, self); dead {
		t.Fatal("an address with a listener proven dead")
	}
	l.Close()
	if dead, how := ProveDead(ctx, lease.Identity{Address: addr, Host: "elsewhere/boot/ns"}, self); !dead {
		t.Fatalf("a refusing address not proven dead (%s)", how)
	}
}
