package engine

import (
	"context"
	"net"
	"os/exec"
	"testing"
	"time"

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

// A process killed but not yet reaped by its parent (a zombie) is dead:
// kill(pid, 0) still succeeds on it, so a node restarted at once found its
// old self "alive" and waited for a second proof.
func TestProveDeadZombie(t *testing.T) {
	self := SelfIdentity("")
	if self.Host == "" {
		t.Fatal("no host identity on this system (no /proc?)")
	}
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reaped := false
	t.Cleanup(func() {
		if !reaped {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	id := self
	id.PID = int64(cmd.Process.Pid)
	if dead, how := ProveDead(context.Background(), id, self); dead {
		t.Fatalf("a running process proven dead (%s)", how)
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL, and no Wait: a zombie
		t.Fatal(err)
	}
	// The kernel makes it a zombie when the signal is handled: poll /proc.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		st, ok := procState(cmd.Process.Pid)
		if !ok {
			t.Fatal("/proc/PID/stat of an unreaped child unreadable")
		}
		if st == 'Z' {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("killed child still in state %c after 10s", st)
		}
	}
	if dead, how := ProveDead(context.Background(), id, self); !dead {
		t.Fatal("a zombie (killed, not yet reaped) not proven dead")
	} else {
		t.Logf("proven dead: %s", how)
	}
	_ = cmd.Wait()
	reaped = true
	if dead, _ := ProveDead(context.Background(), id, self); !dead {
		t.Fatal("a reaped process not proven dead")
	}
}

func TestParseProcState(t *testing.T) {
	for stat, want := range map[string]byte{
		"1234 (sleep) S 1 1234 1234 0 -1":         'S',
		"1234 (sleep) Z 1 1234":                   'Z',
		"77 (a) b) Z) R 1 77":                     'R', // the name holds ") Z)": the state follows the last ')'
		"77 (with space) X 1":                     'X',
		"77 (tricky (Z) name) D 1":                'D',
		"77 ()) S 1":                              'S',
		"no parens at all":                        0,
		"77 (cut)":                                0,
		"77 (cut)   ":                             0,
		"88 (kworker/0:1-events) I 2 0 0 0 -1 69": 'I',
	} {
		got, ok := parseProcState(stat)
		if ok != (want != 0) || got != want {
			t.Errorf("parseProcState(%q) = %q %v, want %q", stat, got, ok, want)
		}
	}
}
