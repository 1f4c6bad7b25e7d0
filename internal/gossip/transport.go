package gossip

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// DropTransport wraps a memberlist transport and drops all traffic to and
// from chosen addresses. It is for tests and fault injection only: it makes
// partitions and crashes without touching sockets, typically on top of a
// transport from (&memberlist.MockNetwork{}).NewTransport(name).
//
// Outgoing packets to a blocked address are silently dropped and dials to
// it fail. Incoming packets are dropped by their From address. Incoming
// streams carry no usable sender address (a MockNetwork stream is a
// net.Pipe; a TCP stream comes from an ephemeral port), so every stream a
// DropTransport dials starts with a short preamble naming the dialer's
// advertised address; the accepting DropTransport reads and strips it and
// closes streams from blocked addresses. A stream without the preamble
// (dialed by a plain transport) is passed through unchanged, so the
// accepting side of a mixed network still works; but a DropTransport must
// only dial peers that also use a DropTransport.
//
// Before memberlist starts listening (asks for PacketCh/StreamCh, or
// Start has created the memberlist on this transport), packets
// are dropped and streams closed at once, as for a process not yet
// listening, so a peer joining a not-yet-started seed fails fast instead of
// waiting out its TCP timeout on the MockNetwork's pipe.
//
// After Shutdown the transport keeps draining and discarding what the inner
// transport receives, so that on a MockNetwork (whose channels are
// unbuffered) peers of a node shut down without Leave do not hang: Shutdown
// on a DropTransport behaves like a crash. Those drain goroutines live for
// the rest of the process.
//
// Block, Unblock and UnblockAll are safe for concurrent use.
type DropTransport struct {
	inner memberlist.NodeAwareTransport

	mu      sync.RWMutex
	blocked map[string]struct{}
	self    string // our advertised host:port, once memberlist asked for it

	packetCh  chan *memberlist.Packet
	streamCh  chan net.Conn
	listening atomic.Bool // memberlist has asked for our channels
	done      chan struct{}
	shutOnce  sync.Once

	resetMu    sync.Mutex
	watchReset func() // the Membership's ResetWatchConns, once it uses this transport
}

var _ memberlist.NodeAwareTransport = (*DropTransport)(nil)

// dropMagic starts the stream preamble; memberlist's own first byte is a
// small message type or its label marker (244), never this.
const dropMagic = 0xD7

// preambleTimeout bounds reading a stream preamble.
const preambleTimeout = 5 * time.Second

// errDropped is returned when dialing a blocked address.
var errDropped = errors.New("cluster: DropTransport: address blocked")

// NewDropTransport wraps inner and starts forwarding its packets and
// streams. Nothing is blocked at first.
func NewDropTransport(inner memberlist.NodeAwareTransport) *DropTransport {
	d := &DropTransport{
		inner:    inner,
		blocked:  make(map[string]struct{}),
		packetCh: make(chan *memberlist.Packet),
		streamCh: make(chan net.Conn),
		done:     make(chan struct{}),
	}
	go d.forwardPackets()
	go d.forwardStreams()
	return d
}

// Block drops traffic to and from the given host:port addresses (node
// names are also accepted for outgoing traffic).
func (d *DropTransport) Block(addrs ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, a := range addrs {
		d.blocked[a] = struct{}{}
	}
}

// Unblock lets traffic to and from the given addresses through again.
func (d *DropTransport) Unblock(addrs ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, a := range addrs {
		delete(d.blocked, a)
	}
}

// UnblockAll lets all traffic through again.
func (d *DropTransport) UnblockAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	clear(d.blocked)
}

func (d *DropTransport) isBlocked(keys ...string) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	for _, k := range keys {
		if k == "" {
			continue
		}
		if _, ok := d.blocked[k]; ok {
			return true
		}
	}
	return false
}

func (d *DropTransport) isShut() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// FinalAdvertiseAddr implements memberlist.Transport and records our address.
func (d *DropTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	aip, aport, err := d.inner.FinalAdvertiseAddr(ip, port)
	if err == nil {
		d.mu.Lock()
		d.self = net.JoinHostPort(aip.String(), strconv.Itoa(aport))
		d.mu.Unlock()
	}
	return aip, aport, err
}

// WriteTo implements memberlist.Transport.
func (d *DropTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return d.WriteToAddress(b, memberlist.Address{Addr: addr})
}

// WriteToAddress implements memberlist.NodeAwareTransport; a packet to a
// blocked address is dropped silently, as a lossy network would.
func (d *DropTransport) WriteToAddress(b []byte, addr memberlist.Address) (time.Time, error) {
	if d.isShut() || d.isBlocked(addr.Addr, addr.Name) {
		return time.Now(), nil
	}
	return d.inner.WriteToAddress(b, addr)
}

// PacketCh implements memberlist.Transport.
func (d *DropTransport) PacketCh() <-chan *memberlist.Packet {
	d.listening.Store(true)
	return d.packetCh
}

// StreamCh implements memberlist.Transport.
func (d *DropTransport) StreamCh() <-chan net.Conn {
	d.listening.Store(true)
	return d.streamCh
}

// DialTimeout implements memberlist.Transport.
func (d *DropTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return d.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

// DialAddressTimeout implements memberlist.NodeAwareTransport: it fails for
// a blocked address, and otherwise writes the preamble naming us.
func (d *DropTransport) DialAddressTimeout(addr memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if d.isShut() {
		return nil, errors.New("cluster: DropTransport: shut down")
	}
	if d.isBlocked(addr.Addr, addr.Name) {
		return nil, fmt.Errorf("%w: %s", errDropped, addr.String())
	}
	conn, err := d.inner.DialAddressTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	d.mu.RLock()
	self := d.self
	d.mu.RUnlock()
	if len(self) > 255 {
		self = self[:255]
	}
	pre := append([]byte{dropMagic, byte(len(self))}, self...)
	if timeout > 0 {
		_ = conn.SetWriteDeadline(time.Now().Add(timeout))
	}
	if _, err := conn.Write(pre); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("cluster: DropTransport: writing preamble: %w", err)
	}
	_ = conn.SetWriteDeadline(time.Time{})
	return conn, nil
}

// Shutdown implements memberlist.Transport. The transport keeps draining
// the inner one afterwards (see the type's doc).
func (d *DropTransport) Shutdown() error {
	var err error
	d.shutOnce.Do(func() {
		close(d.done)
		err = d.inner.Shutdown()
	})
	return err
}

func (d *DropTransport) forwardPackets() {
	for p := range d.inner.PacketCh() {
		from := ""
		if p.From != nil {
			from = p.From.String()
		}
		if !d.listening.Load() || d.isShut() || d.isBlocked(from) {
			continue
		}
		select {
		case d.packetCh <- p:
		case <-d.done:
		}
	}
}

func (d *DropTransport) forwardStreams() {
	for c := range d.inner.StreamCh() {
		if !d.listening.Load() || d.isShut() {
			_ = c.Close()
			continue
		}
		go d.accept(c)
	}
}

// accept reads the preamble (if any) and hands the stream on unless its
// sender is blocked.
func (d *DropTransport) accept(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(preambleTimeout))
	var first [1]byte
	if _, err := io.ReadFull(c, first[:]); err != nil {
		_ = c.Close()
		return
	}
	var conn net.Conn
	from := ""
	if first[0] == dropMagic {
		var n [1]byte
		if _, err := io.ReadFull(c, n[:]); err != nil {
			_ = c.Close()
			return
		}
		buf := make([]byte, n[0])
		if _, err := io.ReadFull(c, buf); err != nil {
			_ = c.Close()
			return
		}
		from = string(buf)
		conn = c
	} else {
		conn = &prefixedConn{Conn: c, prefix: first[:]}
		if ra := c.RemoteAddr(); ra != nil {
			from = ra.String()
		}
	}
	_ = c.SetReadDeadline(time.Time{})
	if d.isShut() || d.isBlocked(from) {
		_ = c.Close()
		return
	}
	select {
	case d.streamCh <- conn:
	case <-d.done:
		_ = c.Close()
	}
}

// prefixedConn gives back bytes already read from a conn.
type prefixedConn struct {
	net.Conn
	prefix []byte
}

func (p *prefixedConn) Read(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// ResetWatchConns resets every early-detection connection of the
// Membership that uses this transport (nothing before it started, or
// without early detection): a fault-injection hook, as a firewall that
// REJECTs resets established connections.
func (d *DropTransport) ResetWatchConns() {
	d.resetMu.Lock()
	f := d.watchReset
	d.resetMu.Unlock()
	if f != nil {
		f()
	}
}

func (d *DropTransport) setWatchReset(f func()) {
	d.resetMu.Lock()
	d.watchReset = f
	d.resetMu.Unlock()
}
