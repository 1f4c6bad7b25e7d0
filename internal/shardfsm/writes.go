package shardfsm

import (
	"errors"
	"fmt"
	"time"

	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/multistream"
	"github.com/kinactor/kinactor/messages"
)

// leaseWrites is the machine's queue of lease-table writes, kept as its own
// state the way etcd's raft keeps a follower's Progress. At most one write is
// in flight: every write is fenced on the counter the previous one made, so
// two at once would fence each other out. An accepted checkpoint supersedes
// an older one not yet sent, and checkpoints are coalesced to one per
// CheckpointInterval; a due renewal, a stop or a shard end sends the pending
// one at once (a checkpoint renews the lease too). The times say when the
// lease was last known good, for renewals and self-fencing.
//
// A verification (verify, after a pause of the process or at a start the
// take of which a pause overlapped) is never lost: only the success of a
// write sent at or after verifyFrom ends it. Until then it outlives the
// answer of any write sent before (a success, a failure) and makes the next
// write go out at once: the pending checkpoint, even within
// CheckpointInterval (it counts as the verification), else a renewal; while
// shutting down, the last checkpoint or the release.
type leaseWrites struct {
	busy           bool
	op             StoreOp          // the write in flight, when busy
	failures       int              // failed writes in a row
	pendingCP      *WriteCheckpoint // accepted, not yet sent
	writingCP      *WriteCheckpoint // sent, not yet answered
	pendingRenew   bool
	pendingRelease bool
	forceCP        bool      // write the pending checkpoint now (it doubles as the renewal)
	cpTimer        bool      // a TimerCheckpoint is outstanding
	verify         bool      // deliveries wait for a write sent at or after verifyFrom to succeed
	verifyFrom     time.Time // when the verification began

	lastWrite    time.Time // the last successful write was answered
	lastCPWrite  time.Time // the last successful checkpoint was answered
	sentAt       time.Time // the write in flight was sent
	heldFrom     time.Time // the last successful write was sent: the lease holds from there
	failingSince time.Time // the first of the failures in a row was sent
}

// checkpointDue reports whether the pending checkpoint is to be sent now:
// stops, shard ends, renewals and verifications do not wait; otherwise at
// most one per interval.
func (w *leaseWrites) checkpointDue(now time.Time, interval time.Duration, shuttingDown bool) bool {
	cp := w.pendingCP
	return cp != nil && (shuttingDown || cp.Checkpoint.IsShardEnd() || w.forceCP || w.verify || interval <= 0 ||
		w.lastCPWrite.IsZero() || now.Sub(w.lastCPWrite) >= interval)
}

// send marks op as sent at now.
func (w *leaseWrites) send(now time.Time, op StoreOp) {
	w.busy, w.op, w.sentAt = true, op, now
	if op == OpCheckpoint {
		w.forceCP = false
		w.pendingRenew = false // the checkpoint renews (if it fails, it is sent again)
		w.writingCP, w.pendingCP = w.pendingCP, nil
	}
}

// verifyNow begins a verification at now: deliveries wait until a write
// sent from now on succeeds.
func (w *leaseWrites) verifyNow(now time.Time) { w.verify, w.verifyFrom = true, now }

// succeeded records the answer to the write in flight as a success at now.
func (w *leaseWrites) succeeded(now time.Time) {
	w.busy, w.failures, w.failingSince = false, 0, time.Time{}
	w.lastWrite = now
	if w.sentAt.After(w.heldFrom) {
		w.heldFrom = w.sentAt
	}
}

// failed records the answer to the write in flight as a failure (not a lost
// lease): the write is asked for again after the backoff.
func (w *leaseWrites) failed() {
	w.busy = false
	w.failures++
	if w.failingSince.IsZero() {
		w.failingSince = w.sentAt
	}
	switch w.op {
	case OpRenew:
		w.pendingRenew = true
	case OpCheckpoint:
		if w.pendingCP == nil { // else a newer checkpoint supersedes it
			w.pendingCP = w.writingCP
		}
		w.writingCP, w.forceCP = nil, true
	}
}

// ---- Lease-table writes -----------------------------------------------------------

func (m *Machine) queueWrite(now time.Time, w *WriteCheckpoint, out *effects) {
	m.w.pendingCP = w // a newer checkpoint supersedes a queued older one
	m.w.pendingRenew = false
	m.pump(now, out)
}

// pump issues the next lease-table write when none is in flight. Accepted
// checkpoints are coalesced: written at most once per CheckpointInterval,
// except at shard end, when shutting down, or when a renewal or a
// verification is due. A verification with no checkpoint pending sends a
// renewal (while shutting down, the release is the write that verifies).
func (m *Machine) pump(now time.Time, out *effects) {
	if m.w.busy || m.state == ShutdownComplete {
		return
	}
	if cp := m.w.pendingCP; cp != nil {
		iv := m.cfg.CheckpointInterval
		if m.w.checkpointDue(now, iv, m.state == ShuttingDown) {
			m.w.send(now, OpCheckpoint)
			out.add(*cp)
			return
		}
		if !m.w.cpTimer {
			m.w.cpTimer = true
			m.timer(out, TimerCheckpoint, m.w.lastCPWrite.Add(iv).Sub(now))
		}
	}
	switch {
	case m.w.pendingRenew, m.w.verify && m.state != ShuttingDown:
		m.w.send(now, OpRenew)
		out.add(Renew{})
	case m.w.pendingRelease && m.state == ShuttingDown && m.w.pendingCP == nil:
		m.w.send(now, OpRelease)
		out.add(Release{})
	}
}

func (m *Machine) onStoreDone(now time.Time, e StoreDone, out *effects) {
	lost := errors.Is(e.Err, lease.ErrLeaseLost)
	if !m.w.busy || (e.Op != m.w.op && !lost) {
		return // a stray answer: not the write in flight
	}
	e.Op = m.w.op
	if lost {
		m.w.busy = false
		// Fenced out: never write again, tell the processor, stop.
		if m.state == Processing || m.state == AwaitingShutdownAck {
			out.add(Notify{Msg: messages.LeaseLost{ShardID: m.pShard}})
		}
		m.finish(LeaseLost, fmt.Errorf("shard %s: %s: %w", m.shardID, e.Op, e.Err), out)
		return
	}
	if e.Err != nil {
		// Retries inside the store are exhausted (DynamoDB unreachable or
		// throttling for long). Keep the request and try again later; if
		// the lease moved meanwhile the next write is fenced out.
		m.w.failed()
		m.timer(out, TimerStoreRetry, m.cfg.ErrorBackoff.Delay(m.w.failures, m.cfg.Rand))
		return
	}
	sentAt := m.w.sentAt
	m.w.succeeded(now)
	if e.Op != OpRelease {
		m.armLeaseTimers(now, out)
	}
	if m.w.verify && !sentAt.Before(m.w.verifyFrom) {
		// Sent after the pause: the lease is still ours. (A write sent
		// before proves nothing; the verification stays and pump sends the
		// next write at once.)
		m.w.verify = false
		defer m.verified(now, out) // after the write's own bookkeeping
	}
	if m.stalled == "dynamodb" {
		m.stalled = ""
		out.add(Stalled{})
	}
	switch e.Op {
	case OpCheckpoint:
		cp := m.w.writingCP
		m.w.writingCP = nil
		m.w.lastCPWrite = now
		if cp != nil {
			m.written = cp.Checkpoint
			if cp.Checkpoint.IsShardEnd() {
				out.add(Notify{Msg: messages.ShardEnded{ShardID: m.pShard, Children: shardIDs(cp.Children)}})
			}
		}
	case OpRenew:
		m.w.pendingRenew = false
	case OpRelease:
		m.w.pendingRelease = false
		m.finish(m.outcome, m.err, out)
		return
	}
	m.pump(now, out)
}

// shardIDs: the Kinesis shard ids of lease keys (for the processor).
func shardIDs(keys []string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = multistream.ShardOf(k)
	}
	return out
}
