// Package migrate copies checkpoints from another Kinesis consumer library's
// DynamoDB table into a kinactor lease table.
//
// Only vmware-go-kcl (and its v2 fork) needs this: its table has the hash
// key ShardID and the attributes AssignedTo, LeaseTimeout (RFC 3339),
// Checkpoint and ParentShardId (plus ClaimRequest in the v2 fork), names
// taken from vmware-go-kcl's clientlibrary/checkpoint/checkpointer.go. A
// table written by the Java KCL 2.x already has kinactor's layout (hash key
// leaseKey) and is read as it is, with no migration.
package migrate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/kinactor/kinactor/lease"
)

// Attribute names of a vmware-go-kcl checkpoint table.
const (
	VMwareShardID       = "ShardID"
	VMwareAssignedTo    = "AssignedTo"
	VMwareLeaseTimeout  = "LeaseTimeout"
	VMwareCheckpoint    = "Checkpoint"
	VMwareParentShardID = "ParentShardId"
	VMwareClaimRequest  = "ClaimRequest" // vmware-go-kcl-v2 only
)

// ErrLiveLeases is returned (wrapped, with the shards and owners listed)
// when the old table has leases that have not timed out yet and Force is
// not set: a vmware-go-kcl worker may still be running and checkpointing.
var ErrLiveLeases = errors.New("migrate: the old table has live leases (stop its workers, wait for the leases to time out, or force)")

// Options tune FromVMware.
type Options struct {
	// Force copies even when some leases are live.
	Force bool
	// Now is the clock live leases are judged by (default time.Now).
	Now func() time.Time
	// Out receives one line per shard (default: discarded).
	Out io.Writer
}

// Result counts what FromVMware did.
type Result struct {
	Copied   int // rows written to the new table
	Existing int // rows already in the new table, left alone
	Invalid  int // rows of the old table that could not be read (no ShardID)
	Live     int // live leases found (copied only with Force)
}

// Shard is one row of a vmware-go-kcl table, as read.
type Shard struct {
	ID           string
	AssignedTo   string
	LeaseTimeout string // as stored (RFC 3339)
	Checkpoint   string
	Parent       string
	ClaimRequest string
}

// live reports whether the row is a lease held until after now, and why.
func (s Shard) live(now time.Time) (bool, string) {
	if s.AssignedTo == "" || s.LeaseTimeout == "" {
		return false, ""
	}
	until, err := time.Parse(time.RFC3339, s.LeaseTimeout)
	if err != nil {
		return true, fmt.Sprintf("owner %s, unreadable LeaseTimeout %q", s.AssignedTo, s.LeaseTimeout)
	}
	if until.After(now) {
		return true, fmt.Sprintf("owner %s until %s", s.AssignedTo, until.UTC().Format(time.RFC3339))
	}
	return false, ""
}

// FromVMware copies the vmware-go-kcl table from into the kinactor lease
// table to (created with lease.DynamoStore.EnsureTable if missing): one free
// row per shard, with the old Checkpoint (TRIM_HORIZON when the shard has
// none) and ParentShardId as its parent. A row already in the new table is
// reported and left alone, so running it again is safe. It refuses, before
// writing anything, when a lease of the old table is live (AssignedTo set and
// LeaseTimeout in the future), unless opts.Force.
func FromVMware(ctx context.Context, api lease.DynamoAPI, from, to string, opts Options) (Result, error) {
	var res Result
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	if from == "" || to == "" {
		return res, errors.New("migrate: both the old and the new table name are required")
	}
	if from == to {
		return res, fmt.Errorf("migrate: old and new table are both %q; the new table must be another one", from)
	}
	if err := checkSource(ctx, api, from); err != nil {
		return res, err
	}
	shards, invalid, err := scanVMware(ctx, api, from)
	if err != nil {
		return res, err
	}
	res.Invalid = invalid

	now := opts.Now()
	var live []string
	liveWhy := map[string]string{}
	for _, s := range shards {
		if ok, why := s.live(now); ok {
			live = append(live, fmt.Sprintf("%s (%s)", s.ID, why))
			liveWhy[s.ID] = why
		}
	}
	res.Live = len(live)
	if len(live) > 0 && !opts.Force {
		return res, fmt.Errorf("%w: %d of %d shards: %s", ErrLiveLeases, len(live), len(shards), strings.Join(live, ", "))
	}

	store := lease.NewDynamoStore(api, to)
	if err := store.EnsureTable(ctx); err != nil {
		return res, fmt.Errorf("migrate: new table %s: %w", to, err)
	}
	if invalid > 0 {
		fmt.Fprintf(opts.Out, "skipped %d rows of %s without a string %s\n", invalid, from, VMwareShardID)
	}
	for _, s := range shards {
		cp := s.Checkpoint
		if cp == "" {
			cp = lease.CheckpointTrimHorizon
		}
		l := lease.Lease{Key: s.ID, Checkpoint: lease.Checkpoint{SequenceNumber: cp}}
		if s.Parent != "" {
			l.ParentShardIDs = []string{s.Parent}
		}
		err := store.Create(ctx, l)
		switch {
		case errors.Is(err, lease.ErrExists):
			res.Existing++
			fmt.Fprintf(opts.Out, "%s: skipped: a row already exists in %s (left alone)\n", s.ID, to)
			continue
		case err != nil:
			return res, fmt.Errorf("migrate: writing %s to %s (%d copied so far; running again skips them): %w", s.ID, to, res.Copied, err)
		}
		res.Copied++
		line := fmt.Sprintf("%s: copied: checkpoint %s", s.ID, cp)
		if s.Checkpoint == "" {
			line += " (the old row had none)"
		}
		if s.Parent != "" {
			line += ", parent " + s.Parent
		}
		if why, ok := liveWhy[s.ID]; ok {
			line += "; forced over a live lease (" + why + ")"
		}
		if s.ClaimRequest != "" {
			line += "; pending ClaimRequest by " + s.ClaimRequest + " dropped"
		}
		fmt.Fprintln(opts.Out, line)
	}
	fmt.Fprintf(opts.Out, "%s -> %s: %d copied, %d already there, %d unreadable\n", from, to, res.Copied, res.Existing, res.Invalid)
	return res, nil
}

// checkSource makes sure from exists and is keyed like a vmware-go-kcl
// table, with a helpful error when it is a Java KCL / kinactor table.
func checkSource(ctx context.Context, api lease.DynamoAPI, from string) error {
	out, err := api.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(from)})
	var nf *types.ResourceNotFoundException
	if errors.As(err, &nf) {
		return fmt.Errorf("migrate: old table %s does not exist", from)
	}
	if err != nil {
		return fmt.Errorf("migrate: describing old table %s: %w", from, err)
	}
	var hash []string
	if out.Table != nil {
		for _, k := range out.Table.KeySchema {
			if k.KeyType == types.KeyTypeHash {
				hash = append(hash, aws.ToString(k.AttributeName))
			}
		}
	}
	switch {
	case slices.Equal(hash, []string{VMwareShardID}):
		return nil
	case slices.Equal(hash, []string{lease.AttrLeaseKey}):
		return fmt.Errorf("migrate: old table %s has the hash key %s: it is a Java KCL 2.x (or kinactor) lease table, which kinactor reads as it is; set TableName to it instead of migrating", from, lease.AttrLeaseKey)
	}
	return fmt.Errorf("migrate: old table %s has hash key %v, not %s: not a vmware-go-kcl table", from, hash, VMwareShardID)
}

// scanVMware reads every row of a vmware-go-kcl table (consistent,
// paginated), sorted by shard id.
func scanVMware(ctx context.Context, api lease.DynamoAPI, table string) ([]Shard, int, error) {
	var (
		shards  []Shard
		invalid int
		start   map[string]types.AttributeValue
	)
	for {
		out, err := api.Scan(ctx, &dynamodb.ScanInput{
			TableName:         aws.String(table),
			ConsistentRead:    aws.Bool(true),
			ExclusiveStartKey: start,
		})
		if err != nil {
			return nil, 0, fmt.Errorf("migrate: scanning %s: %w", table, err)
		}
		for _, item := range out.Items {
			s := Shard{
				ID:           str(item, VMwareShardID),
				AssignedTo:   str(item, VMwareAssignedTo),
				LeaseTimeout: str(item, VMwareLeaseTimeout),
				Checkpoint:   str(item, VMwareCheckpoint),
				Parent:       str(item, VMwareParentShardID),
				ClaimRequest: str(item, VMwareClaimRequest),
			}
			if s.ID == "" {
				invalid++
				continue
			}
			shards = append(shards, s)
		}
		if len(out.LastEvaluatedKey) == 0 {
			break
		}
		start = out.LastEvaluatedKey
	}
	slices.SortFunc(shards, func(a, b Shard) int { return strings.Compare(a.ID, b.ID) })
	return shards, invalid, nil
}

func str(item map[string]types.AttributeValue, name string) string {
	if v, ok := item[name].(*types.AttributeValueMemberS); ok {
		return v.Value
	}
	return ""
}
