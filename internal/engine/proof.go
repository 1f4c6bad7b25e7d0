package engine

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kinactor/kinactor/internal/lease"
)

// SelfIdentity is where this process runs: gossipAddr ("" without
// gossip), this host, this process.
func SelfIdentity(gossipAddr string) lease.Identity {
	return lease.Identity{Address: gossipAddr, Host: hostIdentity(), PID: int64(os.Getpid())}
}

// hostIdentity names this host and its PID namespace: the hostname, the
// kernel's boot id and the PID namespace, so that a process id is only
// compared with one of the same kernel, boot and namespace (two containers
// may share a hostname). "" when the host cannot be told apart (a process
// id check is then never made).
func hostIdentity() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return ""
	}
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	ns, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return ""
	}
	return h + "/" + strings.TrimSpace(string(boot)) + "/" + ns
}

// ProofTimeout bounds a connection attempt of a proof of death.
const ProofTimeout = time.Second

// ProveDead reports whether the owner that ran as id is proven dead, and
// by what. What each proof relies on:
//
//   - the process is gone: the owner ran on this host (same hostname, boot
//     and PID namespace) and no process has its id (kill(pid, 0) answers
//     ESRCH), or the process with its id is a zombie (state Z or X in
//     /proc/PID/stat: it was killed and its parent has not reaped it yet; it
//     runs no code and holds no socket). A process that reused the id makes
//     the owner look alive, the safe side.
//   - its gossip address refuses connections: nothing listens on the port
//     its memberlist bound (TCP connection refused). A firewall that
//     rejects rather than drops would fool this check; an address that
//     does not answer at all (a partition, a dropped route) proves nothing.
//
// (The third proof, another member now at its gossip address, needs no
// call: the ownership machine sees it in the view.)
func ProveDead(ctx context.Context, id, self lease.Identity) (bool, string) {
	if id.Host != "" && id.Host == self.Host && id.PID > 0 && id.PID != self.PID {
		err := syscall.Kill(int(id.PID), 0)
		if errors.Is(err, syscall.ESRCH) {
			return true, "its process is gone from this host"
		}
		if err == nil || errors.Is(err, syscall.EPERM) {
			if st, ok := procState(int(id.PID)); ok && (st == 'Z' || st == 'X') {
				return true, "its process is a zombie on this host (killed, not yet reaped)"
			}
		}
	}
	if id.Address != "" && id.Address != self.Address {
		c, cancel := context.WithTimeout(ctx, ProofTimeout)
		defer cancel()
		var d net.Dialer
		conn, err := d.DialContext(c, "tcp", id.Address)
		if err == nil {
			conn.Close()
		} else if errors.Is(err, syscall.ECONNREFUSED) {
			return true, "its gossip address " + id.Address + " refuses connections"
		}
	}
	return false, ""
}

// procState returns the state letter of process pid from /proc/PID/stat
// ("R", "S", "Z" ...), false when it cannot be read (no /proc, or the
// process ended meanwhile). The second field, the command name, is in
// parentheses and may hold spaces and parentheses itself: the state is the
// field after the last ')'.
func procState(pid int) (byte, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	return parseProcState(string(b))
}

func parseProcState(stat string) (byte, bool) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, false
	}
	rest := strings.TrimLeft(stat[i+1:], " ")
	if rest == "" {
		return 0, false
	}
	return rest[0], true
}
