package gossip

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"time"
)

// The watch port's handshake. The watch port speaks only to members that
// prove the cluster's key and label:
//
//	acceptor → dialer:  "KAW1" | nonceA (32 random bytes)
//	dialer → acceptor:  len(name) (uint16) | name | nonceD (32) |
//	                    HMAC(k, "kinactor watch dialer" | label | nonceA | name | acceptor's name)
//	acceptor → dialer:  HMAC(k, "kinactor watch acceptor" | label | nonceD | acceptor's name | name)
//
// (each string length-prefixed), with HMAC-SHA256 keyed by k = the
// cluster's SecretKey. The acceptor closes the connection unless the MAC
// checks out and name is a member of its table (or one declared dead early
// and not yet reported gone by memberlist); the dialer closes it unless
// the acceptor's MAC checks out, so a stranger listening on a reused port
// cannot hold our connection either (mutual authentication: it costs one
// more HMAC and 32 bytes). Fresh nonces on both sides make a recorded
// handshake useless, the role strings keep one side's MAC from being
// replayed as the other's.
//
// Without a SecretKey, k is the label: the handshake then proves only that
// the peer knows the label, which is no secret; the watch port carries no
// trust beyond the label (as memberlist's own gossip without a key).
//
// Bounds: the handshake has watchHandshakeTimeout to complete; at most
// maxWatchPending accepted connections are unauthenticated at once (more
// are closed at once); authenticated accepted connections are one per
// member name (a second from the same name replaces the first, whose end
// then suspects nobody). Only the end of an authenticated connection is a
// suspicion, so a stranger cannot make us dial anyone's gossip port. A
// flood of silent strangers can still keep the 64 handshake slots full and
// delay members' watch connections (they redial): early detection is then
// slower, gossip's own detection is untouched.

const (
	watchMagic            = "KAW1"
	watchNonceSize        = 32
	watchHandshakeTimeout = 2 * time.Second
	maxWatchPending       = 64
	maxWatchName          = 1024

	watchRoleDialer   = "kinactor watch dialer"
	watchRoleAcceptor = "kinactor watch acceptor"
)

var errWatchAuth = errors.New("watch handshake: authentication failed")

// watchKey is the HMAC key: the SecretKey, or without one the label.
func watchKey(secret []byte, label string) []byte {
	if len(secret) > 0 {
		return secret
	}
	return []byte(label)
}

func watchMAC(key []byte, role, label string, nonce []byte, from, to string) []byte {
	h := hmac.New(sha256.New, key)
	writeLP(h, role)
	writeLP(h, label)
	h.Write(nonce)
	writeLP(h, from)
	writeLP(h, to)
	return h.Sum(nil)
}

func writeLP(h hash.Hash, s string) {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(s)))
	h.Write(n[:])
	h.Write([]byte(s))
}

// acceptHandshake runs the acceptor's side on c (named self) and returns
// the authenticated dialer's name. known says whether a name may watch us.
// It leaves c's deadline cleared on success.
func acceptHandshake(c net.Conn, key []byte, label, self string, known func(string) bool) (string, error) {
	_ = c.SetDeadline(time.Now().Add(watchHandshakeTimeout))
	nonceA := make([]byte, watchNonceSize)
	if _, err := rand.Read(nonceA); err != nil {
		return "", err
	}
	if _, err := c.Write(append([]byte(watchMagic), nonceA...)); err != nil {
		return "", err
	}
	var n [2]byte
	if _, err := io.ReadFull(c, n[:]); err != nil {
		return "", err
	}
	nameLen := int(binary.BigEndian.Uint16(n[:]))
	if nameLen == 0 || nameLen > maxWatchName {
		return "", fmt.Errorf("watch handshake: bad name length %d", nameLen)
	}
	buf := make([]byte, nameLen+watchNonceSize+sha256.Size)
	if _, err := io.ReadFull(c, buf); err != nil {
		return "", err
	}
	name := string(buf[:nameLen])
	nonceD := buf[nameLen : nameLen+watchNonceSize]
	mac := buf[nameLen+watchNonceSize:]
	if !hmac.Equal(mac, watchMAC(key, watchRoleDialer, label, nonceA, name, self)) {
		return "", errWatchAuth
	}
	if name == self || !known(name) {
		return "", fmt.Errorf("watch handshake: %q is not a member", name)
	}
	if _, err := c.Write(watchMAC(key, watchRoleAcceptor, label, nonceD, self, name)); err != nil {
		return "", err
	}
	_ = c.SetDeadline(time.Time{})
	return name, nil
}

// dialHandshake runs the dialer's side on c: self proves itself to peer
// and checks that peer (the member it meant to dial) proves itself back.
// It leaves c's deadline cleared on success.
func dialHandshake(c net.Conn, key []byte, label, self, peer string) error {
	if len(self) == 0 || len(self) > maxWatchName {
		return fmt.Errorf("watch handshake: our name is %d bytes (1-%d)", len(self), maxWatchName)
	}
	_ = c.SetDeadline(time.Now().Add(watchHandshakeTimeout))
	hello := make([]byte, len(watchMagic)+watchNonceSize)
	if _, err := io.ReadFull(c, hello); err != nil {
		return err
	}
	if string(hello[:len(watchMagic)]) != watchMagic {
		return errors.New("watch handshake: not a watch port")
	}
	nonceA := hello[len(watchMagic):]
	nonceD := make([]byte, watchNonceSize)
	if _, err := rand.Read(nonceD); err != nil {
		return err
	}
	msg := binary.BigEndian.AppendUint16(nil, uint16(len(self)))
	msg = append(msg, self...)
	msg = append(msg, nonceD...)
	msg = append(msg, watchMAC(key, watchRoleDialer, label, nonceA, self, peer)...)
	if _, err := c.Write(msg); err != nil {
		return err
	}
	mac := make([]byte, sha256.Size)
	if _, err := io.ReadFull(c, mac); err != nil {
		return err
	}
	if !hmac.Equal(mac, watchMAC(key, watchRoleAcceptor, label, nonceD, peer, self)) {
		return errWatchAuth
	}
	_ = c.SetDeadline(time.Time{})
	return nil
}
