package main

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// refusingTransport is memberlist's network transport cut down to one
// address (one UDP socket and one TCP listener on the same port), for
// --test-faults: its TCP listener can be closed for a while (refuseFor),
// so that dials of the gossip port are refused (the kernel answers a SYN
// to a port nobody listens on with a reset: ECONNREFUSED) while UDP gossip
// goes on, which is what a firewall that REJECTs TCP looks like from the
// other members. memberlist adds its label and encryption above the
// transport, so they are the same as with its own.
type refusingTransport struct {
	ip   net.IP
	port int
	udp  *net.UDPConn

	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	done     chan struct{}
	shutOnce sync.Once

	mu      sync.Mutex
	tcp     *net.TCPListener // nil while refusing
	refuses int              // refusals begun, so that a late end of an earlier one does not reopen early
}

var _ memberlist.NodeAwareTransport = (*refusingTransport)(nil)

// newRefusingTransport binds host:port for TCP and UDP (port 0: a free
// port, the same for both).
func newRefusingTransport(host string, port int) (*refusingTransport, error) {
	ip := net.ParseIP(host)
	if ip == nil {
		return nil, fmt.Errorf("bind host %q is not an IP address", host)
	}
	var (
		tcp *net.TCPListener
		udp *net.UDPConn
		err error
	)
	for try := 0; try < 20; try++ {
		tcp, err = net.ListenTCP("tcp", &net.TCPAddr{IP: ip, Port: port})
		if err != nil {
			return nil, err
		}
		p := tcp.Addr().(*net.TCPAddr).Port
		udp, err = net.ListenUDP("udp", &net.UDPAddr{IP: ip, Port: p})
		if err == nil {
			port = p
			break
		}
		tcp.Close()
		if port != 0 {
			return nil, err
		}
	}
	if err != nil {
		return nil, err
	}
	_ = udp.SetReadBuffer(2 << 20)
	t := &refusingTransport{ip: ip, port: port, udp: udp, tcp: tcp,
		packetCh: make(chan *memberlist.Packet), streamCh: make(chan net.Conn), done: make(chan struct{})}
	go t.readPackets()
	go t.accept(tcp)
	return t, nil
}

func (t *refusingTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if ip != "" {
		parsed := net.ParseIP(ip)
		if parsed == nil {
			return nil, 0, fmt.Errorf("advertise address %q is not an IP address", ip)
		}
		return parsed, port, nil
	}
	if t.ip.IsUnspecified() {
		return nil, 0, errors.New("test-faults transport: bind a concrete IP (or set --advertise)")
	}
	return t.ip, t.port, nil
}

func (t *refusingTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return time.Time{}, err
	}
	_, err = t.udp.WriteTo(b, ua)
	return time.Now(), err
}

func (t *refusingTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

func (t *refusingTransport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

func (t *refusingTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.Dial("tcp", addr)
}

func (t *refusingTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

func (t *refusingTransport) StreamCh() <-chan net.Conn { return t.streamCh }

func (t *refusingTransport) Shutdown() error {
	t.shutOnce.Do(func() {
		close(t.done)
		t.udp.Close()
		t.mu.Lock()
		if t.tcp != nil {
			t.tcp.Close()
		}
		t.mu.Unlock()
	})
	return nil
}

func (t *refusingTransport) readPackets() {
	buf := make([]byte, 65536)
	for {
		n, from, err := t.udp.ReadFrom(buf)
		if err != nil {
			select {
			case <-t.done:
				return
			default:
			}
			continue
		}
		if n < 1 {
			continue
		}
		pkt := &memberlist.Packet{Buf: append([]byte(nil), buf[:n]...), From: from, Timestamp: time.Now()}
		select {
		case t.packetCh <- pkt:
		case <-t.done:
			return
		}
	}
}

func (t *refusingTransport) accept(ln *net.TCPListener) {
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			return // closed: shut down, or refusing
		}
		select {
		case t.streamCh <- c:
		case <-t.done:
			c.Close()
			return
		}
	}
}

// refuseFor closes the TCP listener now and opens it again on the same
// port after d (a later refusal replaces the end of an earlier one).
func (t *refusingTransport) refuseFor(d time.Duration) {
	t.mu.Lock()
	t.refuses++
	gen := t.refuses
	if t.tcp != nil {
		t.tcp.Close()
		t.tcp = nil
	}
	t.mu.Unlock()
	go func() {
		select {
		case <-t.done:
			return
		case <-time.After(d):
		}
		for {
			t.mu.Lock()
			if gen != t.refuses || t.tcp != nil {
				t.mu.Unlock()
				return
			}
			ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: t.ip, Port: t.port})
			if err == nil {
				t.tcp = ln
				t.mu.Unlock()
				go t.accept(ln)
				return
			}
			t.mu.Unlock()
			select {
			case <-t.done:
				return
			case <-time.After(50 * time.Millisecond): // the port is briefly unbindable: try again
			}
		}
	}()
}
