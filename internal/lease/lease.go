// Package lease owns the lease and checkpoint table: one DynamoDB row per
// shard, with the Java KCL 2.x attribute names, and every write to it a
// conditional write fenced on leaseCounter and leaseOwner.
//
// The fencing rule is simple: a node may act on a shard only while the row
// says leaseOwner = me and leaseCounter = the value it last wrote. Every
// successful write increments leaseCounter, so a checkpoint is also a renewal.
// A write whose condition fails returns ErrLeaseLost and the caller must stop
// the shard at once. Throttling and server errors are retried inside the store
// and never surface as ErrLeaseLost.
//
// This package must not import actors, cluster or the root kinactor package.
package lease

import (
	"cmp"
	"context"
	"errors"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kinactor/kinactor/internal/seqnum"
)

// Sentinel errors callers branch on.
var (
	// ErrLeaseLost means a conditional write failed: another node owns the
	// lease now, or the counter moved. Stop the shard; do not retry.
	ErrLeaseLost = errors.New("lease: lease lost (condition failed: owner or counter changed)")
	// ErrNotFound means the row for the shard does not exist.
	ErrNotFound = errors.New("lease: no lease row for shard")
	// ErrExists is returned by Create when the row already exists.
	ErrExists = errors.New("lease: lease row already exists")
)

// Special checkpoint values, as the Java KCL writes them: the initial
// positions are the names of Kinesis's iterator types (the SDK's enum is the
// one home of these strings), SHARD_END is the Java KCL's own.
const (
	CheckpointTrimHorizon = string(types.ShardIteratorTypeTrimHorizon)
	CheckpointLatest      = string(types.ShardIteratorTypeLatest)
	CheckpointAtTimestamp = string(types.ShardIteratorTypeAtTimestamp)
	CheckpointShardEnd    = "SHARD_END"
)

// Checkpoint is a position in a shard: a sequence number (or one of the
// special values above) and a KPL sub-sequence number (0 for plain records).
type Checkpoint struct {
	SequenceNumber    string
	SubSequenceNumber int64
}

// IsSentinel reports whether the checkpoint is one of the special values
// rather than a real sequence number. The zero Checkpoint is a sentinel too.
func (c Checkpoint) IsSentinel() bool {
	switch c.SequenceNumber {
	case "", CheckpointTrimHorizon, CheckpointLatest, CheckpointAtTimestamp, CheckpointShardEnd:
		return true
	}
	return false
}

// IsShardEnd reports whether the shard was read to its end and checkpointed.
func (c Checkpoint) IsShardEnd() bool { return c.SequenceNumber == CheckpointShardEnd }

// Compare orders checkpoints as positions in a shard: the starting
// sentinels (TRIM_HORIZON, LATEST, AT_TIMESTAMP, none) first, then real
// positions by sequence number (numerically) and sub-sequence number, and
// SHARD_END last. -1, 0 or +1.
func (c Checkpoint) Compare(o Checkpoint) int {
	rank := func(x Checkpoint) int {
		switch {
		case x.IsShardEnd():
			return 2
		case x.IsSentinel():
			return 0
		}
		return 1
	}
	if rc, ro := rank(c), rank(o); rc != ro || rc != 1 {
		return cmp.Compare(rc, ro)
	}
	if d := seqnum.Compare(c.SequenceNumber, o.SequenceNumber); d != 0 {
		return d
	}
	return cmp.Compare(c.SubSequenceNumber, o.SubSequenceNumber)
}

// Lease is one row of the lease table.
type Lease struct {
	Key                          string // leaseKey: the shard id
	Owner                        string // leaseOwner: "" when free or released
	Counter                      int64  // leaseCounter: incremented by every write
	Checkpoint                   Checkpoint
	OwnerSwitchesSinceCheckpoint int64
	ParentShardIDs               []string // parentShardId (SS): parent and adjacent parent
	ChildShardIDs                []string // childShardIds (SS): set at shard end
	StartingHashKey              string
	EndingHashKey                string
	// Holder says where the owner ran (kinactor only; empty in rows the
	// Java KCL wrote), so that others can prove it dead: see Identity.
	Holder Identity
}

// Identity is where a lease owner runs, written with every take: its
// gossip address, its host (hostname and boot id) and its process id. A
// node that finds a lease of an owner outside its gossip view proves the
// owner dead when another member now has that gossip address, when the
// address refuses connections, or when the owner ran on this host and its
// process is gone; short of a proof it waits for the lease to expire.
type Identity struct {
	Address string // gossip host:port ("" without gossip)
	Host    string // hostname/boot-id
	PID     int64
}

// TakeOptions are the extras of a take.
type TakeOptions struct {
	// Resume, when set, is written as the checkpoint with the take (the
	// position the previous owner's processor acknowledged under the
	// counter taken at; see ownership.Resume).
	Resume *Checkpoint
	// Identity of the new owner, written with the take.
	Identity Identity
}

// Store is the lease table. Implementations are safe for concurrent use.
// Every method that writes is conditional; see the package comment.
type Store interface {
	// EnsureTable creates the table if it is missing (on-demand billing) and
	// waits until it is ACTIVE.
	EnsureTable(ctx context.Context) error
	// Create writes a new row if none exists for l.Key (attribute_not_exists).
	// Owner and Counter of l are ignored: the row starts free with counter 0.
	// Returns ErrExists when a row is already there.
	Create(ctx context.Context, l Lease) error
	// Get reads one row with a strongly consistent read. ErrNotFound if absent.
	Get(ctx context.Context, key string) (Lease, error)
	// List reads every row (consistent scan, paginated).
	List(ctx context.Context) ([]Lease, error)
	// Take makes owner the holder of the lease, on condition that the row's
	// counter (and owner) are still what the caller read in seen. It sets
	// leaseOwner and the owner's identity, increments leaseCounter, and
	// increments ownerSwitchesSinceCheckpoint when the owner changes; with
	// opts.Resume it writes that checkpoint too. Returns the row as written,
	// or ErrLeaseLost if someone else moved it first.
	Take(ctx context.Context, seen Lease, owner string, opts TakeOptions) (Lease, error)
	// Renew increments the counter of a lease held by held.Owner at
	// held.Counter. Returns the new row or ErrLeaseLost.
	Renew(ctx context.Context, held Lease) (Lease, error)
	// Checkpoint records cp (and, at SHARD_END, the children) on a held lease;
	// it increments the counter (a checkpoint is a renewal) and resets
	// ownerSwitchesSinceCheckpoint. Returns the new row or ErrLeaseLost.
	Checkpoint(ctx context.Context, held Lease, cp Checkpoint, children []string) (Lease, error)
	// Release removes leaseOwner from a held lease and increments the counter,
	// so that any node may take it at once. ErrLeaseLost if not held any more.
	Release(ctx context.Context, held Lease) error
	// Delete removes a row on condition that its counter is still seen.Counter.
	Delete(ctx context.Context, seen Lease) error
}

// ExpiryTracker judges leases expired by their counter not changing over a
// local monotonic interval. It never compares wall clocks across hosts. It is
// not safe for concurrent use; the owner of the tracker serialises calls.
type ExpiryTracker struct {
	timeout time.Duration
	seen    map[string]observation
}

type observation struct {
	owner   string
	counter int64
	since   time.Time // local, monotonic reading
}

// NewExpiryTracker returns a tracker that reports a lease expired when its
// counter and owner have not changed for at least timeout.
func NewExpiryTracker(timeout time.Duration) *ExpiryTracker {
	return &ExpiryTracker{timeout: timeout, seen: make(map[string]observation)}
}

// Observe records the lease as read at now (a time.Now() reading, which
// carries the monotonic clock) and reports whether it has expired: it has an
// owner and neither owner nor counter changed for at least the timeout.
// A free lease (no owner) is never "expired": it is simply free.
func (t *ExpiryTracker) Observe(l Lease, now time.Time) bool {
	o, ok := t.seen[l.Key]
	if !ok || o.counter != l.Counter || o.owner != l.Owner {
		t.seen[l.Key] = observation{owner: l.Owner, counter: l.Counter, since: now}
		return false
	}
	return l.Owner != "" && now.Sub(o.since) >= t.timeout
}

// Forget drops what the tracker knows of a key.
func (t *ExpiryTracker) Forget(key string) { delete(t.seen, key) }
