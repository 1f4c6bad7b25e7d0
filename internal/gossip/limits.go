package gossip

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Message size limits. Every user message this package sends is either
// deliverable or refused at the call with an error wrapping ErrTooLarge.
//
// A broadcast travels in one gossip packet. memberlist v0.7.0 picks the
// broadcasts to send in gossip() (state.go) from the bytes left in a
// packet of UDPBufferSize (1400) after a compound header (2), the label
// header (2 + len(Label), none without a label) and, with a SecretKey, the
// encryption overhead (version 1 + nonce 12 + GCM tag 16 = 29 at protocol
// versions ≥ 2, which we use; 45 with padding at version 1); it then
// hands our delegate that space less the per-message compound overhead (2)
// and the user message type byte (1) (broadcast.go getBroadcasts), and a
// TransmitLimitedQueue only returns messages that fit (queue.go). A larger
// broadcast would never be picked: it would wait in the queue for ever.
// So the largest framed broadcast is
//
//	1400 − 2 − (2 + len(Label)) − 29 − 2 − 1   (with a label and a key)
//
// and the largest payload is that less our frame header (a uvarint of the
// length of our name, and the name): MaxBroadcast.
//
// A Send travels over a TCP stream; memberlist refuses a user message over
// maxUserMsgBytes (20 MiB) off the wire, and with a key an encrypted stream
// over maxPushStateBytes (20 MiB) including its type byte, the msgpack
// header and the encryption overhead (net.go readUserMsg,
// decryptRemoteState). Either way the receiver drops it while the sender
// sees no error, so Send refuses a framed message over 20 MiB − 64:
// MaxSend.

// ErrTooLarge is wrapped by the errors of Broadcast and Send for a payload
// over their limit (MaxBroadcast, MaxSend).
var ErrTooLarge = errors.New("gossip: message too large")

// memberlist v0.7.0's figures (net.go, security.go, label.go).
const (
	mlUDPBufferSize          = 1400 // DefaultLANConfig().UDPBufferSize
	mlCompoundHeaderOverhead = 2
	mlCompoundOverhead       = 2
	mlUserMsgOverhead        = 1
	mlMaxStreamBytes         = 20 << 20 // maxUserMsgBytes and maxPushStateBytes

	sendOverhead = 64 // a stream's type byte, msgpack header and encryption, with room
)

// mlEncryptOverhead is memberlist's encryptOverhead for the encryption
// version it uses at a protocol version.
func mlEncryptOverhead(protocolVersion uint8) int {
	if protocolVersion < 2 {
		return 45 // version 1, nonce 12, padding 16, tag 16
	}
	return 29 // version 1, nonce 12, tag 16
}

// mlLabelOverhead is memberlist's labelOverhead.
func mlLabelOverhead(label string) int {
	if label == "" {
		return 0
	}
	return 2 + len(label)
}

// gossipMsgLimit is the largest framed user broadcast memberlist ever puts
// in a gossip packet, for a packet of udpBuffer bytes.
func gossipMsgLimit(udpBuffer int, label string, encrypted bool, protocolVersion uint8) int {
	n := udpBuffer - mlCompoundHeaderOverhead - mlLabelOverhead(label)
	if encrypted {
		n -= mlEncryptOverhead(protocolVersion)
	}
	return n - mlCompoundOverhead - mlUserMsgOverhead
}

// frameOverhead is the size of our frame header for a sender name.
func frameOverhead(name string) int {
	return binary.PutUvarint(make([]byte, binary.MaxVarintLen64), uint64(len(name))) + len(name)
}

// MaxBroadcast is the largest payload Broadcast accepts with this node's
// name, key and label: about 1.3 KB (1395 framed bytes with neither key
// nor label, 1324 with a 32-byte key and a 40-character label, less the
// name's length and a byte).
func (m *Membership) MaxBroadcast() int { return m.maxBroadcast - frameOverhead(m.cfg.Name) }

// MaxSend is the largest payload Send accepts: 20 MiB less 64 bytes and
// the frame header.
func (m *Membership) MaxSend() int {
	return mlMaxStreamBytes - sendOverhead - frameOverhead(m.cfg.Name)
}

func (m *Membership) tooLarge(what string, n, limit int) error {
	return fmt.Errorf("%w: %s payload of %d bytes, over the limit of %d bytes (label %q, encrypted %v)",
		ErrTooLarge, what, n, limit, m.cfg.Label, len(m.cfg.SecretKey) > 0)
}
