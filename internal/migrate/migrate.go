// Package migrate copies checkpoints from another Kinesis consumer library's
// DynamoDB table into a kinactor lease table.
//
// Only vmware-go-kcl (and its v2 fork) needs this: its table has the hash
// key ShardID and the attributes AssignedTo, LeaseTimeout (RFC 3339),
// Checkpoint and ParentShardId (plus ClaimRequest in the v2 fork), names
// taken from vmware-go-kcl's clientlibrary/checkpoint/checkpointer.go. A
// table written by the Java KCL 2.x already has kinactor's layout (hash key
// leaseKey) and is read as it is, with no migration.
//
// vmware-go-kcl records one parent per shard (ParentShardId), but a shard
// made by MergeShards has two: its adjacent parent is only known to the
// stream. So the parents are taken from the stream's lineage (ListShards)
// when a stream is given, and from the old table only for shards the stream
// no longer lists.
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

	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/stream"
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

// ErrLineageMismatch is returned (wrapped, with the shards listed) when the
// old table records a parent for a shard that the stream lists with other
// parents: the stream is most likely not the one the old application
// consumed. Nothing is written.
var ErrLineageMismatch = errors.New("migrate: the old table's parents do not match the stream's lineage")

// Lineage lists a stream's shards with their parents; *stream.Client
// implements it.
type Lineage interface {
	ListShards(ctx context.Context) ([]stream.Shard, error)
}

// Options tune FromVMware.
type Options struct {
	// Force copies even when some leases are live.
	Force bool
	// Stream is the stream the old application consumed. When set, each
	// shard it lists gets every parent it lists (the adjacent parent of a
	// merge included), and the old table's ParentShardId only for shards
	// it no longer lists. When nil, every shard gets only the old table's
	// ParentShardId, so a merged shard loses its adjacent parent and may be
	// read before that parent is finished (a warning says so).
	Stream Lineage
	// StreamName names Stream in messages.
	StreamName string
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
	// ParentsAdded counts the copied rows given a parent the old table
	// lacks (the adjacent parent of a merge), from the stream's lineage.
	ParentsAdded int
	// NotInStream counts the rows of the old table whose shard the stream
	// does not list any more (their parent is the old table's).
	NotInStream int
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
// none) and as parents those opts.Stream lists for the shard (both parents of
// a merge), or the old ParentShardId when the stream does not list the shard
// or no stream is given. A row already in the new table is reported and left
// alone, so running it again is safe. It refuses, before writing anything,
// when a lease of the old table is live (AssignedTo set and LeaseTimeout in
// the future), unless opts.Force, and when the old table's parents
// contradict the stream's lineage (ErrLineageMismatch).
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

	streamName := "the stream"
	if opts.StreamName != "" {
		streamName = "stream " + opts.StreamName
	}
	var listed map[string]stream.Shard // nil without a stream
	if opts.Stream != nil {
		if listed, err = lineage(ctx, opts.Stream, streamName, shards); err != nil {
			return res, err
		}
	}

	store := lease.NewDynamoStore(api, to)
	if err := store.EnsureTable(ctx); err != nil {
		return res, fmt.Errorf("migrate: new table %s: %w", to, err)
	}
	if invalid > 0 {
		fmt.Fprintf(opts.Out, "skipped %d rows of %s without a string %s\n", invalid, from, VMwareShardID)
	}
	if listed == nil {
		fmt.Fprintf(opts.Out, "warning: no stream given: each shard gets only the parent %s records (%s); a shard made by MergeShards loses its adjacent parent and may be read before that parent is finished\n", from, VMwareParentShardID)
	} else if len(shards) > 0 && len(listed) == 0 {
		fmt.Fprintf(opts.Out, "warning: %s lists none of the %d shards of %s: is it the stream the old application consumed? (parents are taken from the old table)\n", streamName, len(shards), from)
	}
	for _, s := range shards {
		cp := s.Checkpoint
		if cp == "" {
			cp = lease.CheckpointTrimHorizon
		}
		p := parentsOf(s, listed)
		l := lease.Lease{Key: s.ID, Checkpoint: lease.Checkpoint{SequenceNumber: cp}, ParentShardIDs: p.ids}
		err := store.Create(ctx, l)
		switch {
		case errors.Is(err, lease.ErrExists):
			res.Existing++
			line := fmt.Sprintf("%s: skipped: a row already exists in %s (left alone)", s.ID, to)
			if listed != nil && len(p.added) > 0 {
				line += existingLacks(ctx, store, s.ID, p.ids, to)
			}
			fmt.Fprintln(opts.Out, line)
			continue
		case err != nil:
			return res, fmt.Errorf("migrate: writing %s to %s (%d copied so far; running again skips them): %w", s.ID, to, res.Copied, err)
		}
		res.Copied++
		if len(p.added) > 0 {
			res.ParentsAdded++
		}
		if listed != nil && !p.listed {
			res.NotInStream++
		}
		line := fmt.Sprintf("%s: copied: checkpoint %s", s.ID, cp)
		if s.Checkpoint == "" {
			line += " (the old row had none)"
		}
		line += p.describe(s, listed != nil, streamName)
		if why, ok := liveWhy[s.ID]; ok {
			line += "; forced over a live lease (" + why + ")"
		}
		if s.ClaimRequest != "" {
			line += "; pending ClaimRequest by " + s.ClaimRequest + " dropped"
		}
		fmt.Fprintln(opts.Out, line)
	}
	summary := fmt.Sprintf("%s -> %s: %d copied, %d already there, %d unreadable", from, to, res.Copied, res.Existing, res.Invalid)
	if listed != nil {
		summary += fmt.Sprintf("; %d given a parent from %s that the old table lacks, %d not listed by it any more", res.ParentsAdded, streamName, res.NotInStream)
	}
	fmt.Fprintln(opts.Out, summary)
	return res, nil
}

// lineage lists the stream's shards and returns those that are rows of the
// old table, by id. It fails, before anything is written, when the stream
// cannot be listed or when the old table records a parent the stream does
// not list for that shard (ErrLineageMismatch).
func lineage(ctx context.Context, ls Lineage, name string, shards []Shard) (map[string]stream.Shard, error) {
	all, err := ls.ListShards(ctx)
	if errors.Is(err, stream.ErrShardNotFound) {
		return nil, fmt.Errorf("migrate: %s does not exist: %w", name, err)
	}
	if err != nil {
		return nil, fmt.Errorf("migrate: listing the shards of %s: %w", name, err)
	}
	byID := make(map[string]stream.Shard, len(all))
	for _, sh := range all {
		byID[sh.ID] = sh
	}
	listed := map[string]stream.Shard{}
	var bad []string
	for _, s := range shards {
		sh, ok := byID[s.ID]
		if !ok {
			continue
		}
		listed[s.ID] = sh
		if s.Parent != "" && !slices.Contains(sh.Parents(), s.Parent) {
			bad = append(bad, fmt.Sprintf("%s (old table: parent %s; stream: %s)", s.ID, s.Parent, orNone(sh.Parents())))
		}
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("%w (%s): %s; is it the stream the old application consumed?", ErrLineageMismatch, name, strings.Join(bad, ", "))
	}
	return listed, nil
}

// parents is what FromVMware writes as a shard's parents, and whence.
type parents struct {
	ids    []string // written to the new row; nil for none
	added  []string // in ids but not in the old table (from the stream)
	listed bool     // the stream lists the shard
}

// parentsOf takes the stream's parents of s when listed has it (lineage
// made sure they include the old table's), the old table's otherwise.
func parentsOf(s Shard, listed map[string]stream.Shard) parents {
	if sh, ok := listed[s.ID]; ok {
		p := parents{ids: sh.Parents(), listed: true}
		for _, id := range p.ids {
			if id != s.Parent {
				p.added = append(p.added, id)
			}
		}
		return p
	}
	if s.Parent != "" {
		return parents{ids: []string{s.Parent}}
	}
	return parents{}
}

// describe is the part of a copied shard's line about its parents.
func (p parents) describe(s Shard, haveStream bool, streamName string) string {
	var b strings.Builder
	switch len(p.ids) {
	case 0:
	case 1:
		b.WriteString(", parent " + p.ids[0])
	default:
		b.WriteString(", parents " + strings.Join(p.ids, ", "))
	}
	switch {
	case !haveStream:
	case !p.listed && s.Parent != "":
		fmt.Fprintf(&b, " (from the old table: %s no longer lists the shard)", streamName)
	case !p.listed:
		fmt.Fprintf(&b, " (%s no longer lists the shard)", streamName)
	case len(p.added) > 0 && s.Parent == "":
		fmt.Fprintf(&b, " (from %s; the old table records none)", streamName)
	case len(p.added) > 0:
		fmt.Fprintf(&b, " (%s from %s; the old table records only %s)", strings.Join(p.added, ", "), streamName, s.Parent)
	}
	return b.String()
}

// existingLacks notes, for a row left alone, the stream's parents it does
// not have (a row written by an earlier migration without the stream).
func existingLacks(ctx context.Context, store *lease.DynamoStore, key string, want []string, table string) string {
	l, err := store.Get(ctx, key)
	if err != nil {
		return fmt.Sprintf("; could not read it to compare its parents: %v", err)
	}
	var missing []string
	for _, id := range want {
		if !slices.Contains(l.ParentShardIDs, id) {
			missing = append(missing, id)
		}
	}
	if len(missing) == 0 {
		return ""
	}
	return fmt.Sprintf("; warning: it lacks the parent %s that the stream lists, so the shard may be read before that parent is finished (delete %s before any node uses it, and migrate again)", strings.Join(missing, ", "), table)
}

func orNone(ids []string) string {
	if len(ids) == 0 {
		return "no parents"
	}
	return "parents " + strings.Join(ids, ", ")
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
