package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"

	"github.com/kinactor/kinactor/internal/backoff"
	"github.com/kinactor/kinactor/internal/multistream"
)

// Attribute names of the lease table, exactly as the Java KCL 2.x writes them.
const (
	AttrLeaseKey                     = "leaseKey"
	AttrLeaseOwner                   = "leaseOwner"
	AttrLeaseCounter                 = "leaseCounter"
	AttrCheckpoint                   = "checkpoint"
	AttrCheckpointSubSequenceNumber  = "checkpointSubSequenceNumber"
	AttrOwnerSwitchesSinceCheckpoint = "ownerSwitchesSinceCheckpoint"
	AttrParentShardID                = "parentShardId"
	AttrChildShardIDs                = "childShardIds"
	attrChildShardIDLegacy           = "childShardId"
	AttrStartingHashKey              = "startingHashKey"
	AttrEndingHashKey                = "endingHashKey"
	// The Java KCL's multi-stream rows also carry their stream id
	// (account:stream:epoch) and shard id apart; their parent and child
	// sets hold shard ids, not lease keys.
	AttrStreamName = "streamName"
	AttrShardID    = "shardId"
	// kinactor's own: where the owner runs (Identity). The Java KCL keeps
	// attributes it does not know as they are.
	AttrOwnerAddress = "kinactorOwnerAddress"
	AttrOwnerHost    = "kinactorOwnerHost"
	AttrOwnerPID     = "kinactorOwnerPid"
)

// Write operation names passed to the OnWrite hook.
const (
	OpCreate     = "create"
	OpTake       = "take"
	OpRenew      = "renew"
	OpCheckpoint = "checkpoint"
	OpRelease    = "release"
	OpDelete     = "delete"
)

// Defaults of the store's retry policy.
const (
	DefaultRetryBase        = 50 * time.Millisecond
	DefaultRetryCap         = 2 * time.Second
	DefaultMaxAttempts      = 8
	DefaultTableWaitTimeout = 5 * time.Minute
)

// DynamoAPI is the subset of *dynamodb.Client the store uses. Tests inject
// faults through it.
type DynamoAPI interface {
	CreateTable(ctx context.Context, in *dynamodb.CreateTableInput, optFns ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error)
	DescribeTable(ctx context.Context, in *dynamodb.DescribeTableInput, optFns ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error)
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
	DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error)
	Scan(ctx context.Context, in *dynamodb.ScanInput, optFns ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error)
}

var (
	_ DynamoAPI = (*dynamodb.Client)(nil)
	_ Store     = (*DynamoStore)(nil)
)

// DynamoStore is the DynamoDB implementation of Store. It is safe for
// concurrent use.
//
// Retries: the store runs its own retry loop (backoff.Policy, equal jitter,
// default Base 50ms, Cap 2s, at most 8 attempts in all, so at most ~5 s of
// waiting) and turns the SDK's retryer off on every call it makes
// (RetryMaxAttempts = 1). One policy is then in force, it honours ctx between
// attempts, and the store knows when a conditional write was attempted more
// than once, which it must know to tell a lost lease from its own earlier
// attempt that succeeded (see Take). Throttling (ProvisionedThroughputExceeded,
// ThrottlingException, RequestLimitExceeded, ...), InternalServerError, any
// HTTP 5xx and transport errors (connection reset or refused, timeouts) are
// retried; they never surface as ErrLeaseLost. Other errors (validation,
// ResourceNotFound, access denied) return at once.
type DynamoStore struct {
	api         DynamoAPI
	table       string
	policy      backoff.Policy
	maxAttempts int
	log         *slog.Logger
	onWrite     func(op string, ok bool)
	onRead      func(op string, items int)
	waitTimeout time.Duration
	attempt     time.Duration // bound of one request; 0: none (the caller's ctx)
	scanLimit   int32         // page size of List; 0: the server's (tests force pagination)
}

// errAttemptTimeout marks an attempt that got no answer within the
// attempt timeout: retried like a transport error (it may have been
// applied; a later failed condition is checked against what it produces).
var errAttemptTimeout = errors.New("lease: no answer within the attempt timeout")

// attemptCtx bounds one request by the attempt timeout.
func (s *DynamoStore) attemptCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if s.attempt <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.attempt)
}

// attemptErr turns the deadline of an attempt (not of the caller) into a
// retryable error.
func attemptErr(ctx, actx context.Context, err error) error {
	if err != nil && ctx.Err() == nil && actx.Err() != nil {
		return fmt.Errorf("%w: %w", errAttemptTimeout, err)
	}
	return err
}

// Option configures a DynamoStore.
type Option func(*DynamoStore)

// WithRetryPolicy sets the backoff between attempts and the total number of
// attempts of one request (1 means no retries). Invalid values keep the
// defaults (Base 50ms, Cap 2s, 8 attempts).
func WithRetryPolicy(p backoff.Policy, maxAttempts int) Option {
	return func(s *DynamoStore) {
		if p.Base > 0 && p.Cap >= p.Base {
			s.policy = p
		}
		if maxAttempts >= 1 {
			s.maxAttempts = maxAttempts
		}
	}
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(s *DynamoStore) {
		if l != nil {
			s.log = l
		}
	}
}

// WithOnRead sets a hook called once per read request sent (each GetItem,
// each page of a Scan: "get", "scan"; retries count again), with the
// number of items it returned: what DynamoDB bills reads by.
func WithOnRead(fn func(op string, items int)) Option {
	return func(s *DynamoStore) { s.onRead = fn }
}

// WithOnWrite sets a hook called once per write method call (Create, Take,
// Renew, Checkpoint, Release, Delete) with the op name (OpCreate, ...) and
// whether the method returned nil. Retried attempts inside one call are not
// reported separately. The hook must be fast and safe for concurrent use.
func WithOnWrite(fn func(op string, ok bool)) Option {
	return func(s *DynamoStore) { s.onWrite = fn }
}

// WithAttemptTimeout bounds every single request (attempt) of the store: a
// request with no answer by then (a blackholed route, a half-open
// connection) is abandoned and retried like a transport error, instead of
// holding the call until the caller's context ends. 0 (the default): no
// bound of its own.
func WithAttemptTimeout(d time.Duration) Option {
	return func(s *DynamoStore) {
		if d > 0 {
			s.attempt = d
		}
	}
}

// WithTableWaitTimeout bounds how long EnsureTable waits for the table to
// become ACTIVE (default 5 minutes; ctx may end it sooner).
func WithTableWaitTimeout(d time.Duration) Option {
	return func(s *DynamoStore) {
		if d > 0 {
			s.waitTimeout = d
		}
	}
}

// NewDynamoStore returns a store on the given table. api is usually a
// *dynamodb.Client.
func NewDynamoStore(api DynamoAPI, table string, opts ...Option) *DynamoStore {
	s := &DynamoStore{
		api:         api,
		table:       table,
		policy:      backoff.Policy{Base: DefaultRetryBase, Cap: DefaultRetryCap},
		maxAttempts: DefaultMaxAttempts,
		log:         slog.New(slog.DiscardHandler),
		waitTimeout: DefaultTableWaitTimeout,
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Table returns the table name.
func (s *DynamoStore) Table() string { return s.table }

// noSDKRetries turns the SDK's retryer off for one call: the store's own
// policy is the one in force.
func noSDKRetries(o *dynamodb.Options) { o.RetryMaxAttempts = 1 }

// ---------------------------------------------------------------- table

// EnsureTable creates the table (hash key leaseKey S, PAY_PER_REQUEST) if it
// is missing and waits until it is ACTIVE. A concurrent creator is fine.
func (s *DynamoStore) EnsureTable(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.waitTimeout)
	defer cancel()

	switch desc, err := s.describe(ctx); {
	case errors.Is(err, ErrNotFound):
		err = s.retry(ctx, "create table", s.table, func(ctx context.Context) error {
			_, err := s.api.CreateTable(ctx, &dynamodb.CreateTableInput{
				TableName:            aws.String(s.table),
				AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String(AttrLeaseKey), AttributeType: types.ScalarAttributeTypeS}},
				KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String(AttrLeaseKey), KeyType: types.KeyTypeHash}},
				BillingMode:          types.BillingModePayPerRequest,
			}, noSDKRetries)
			var inUse *types.ResourceInUseException
			if errors.As(err, &inUse) {
				return nil // someone else created it
			}
			return err
		})
		if err != nil {
			return err
		}
		s.log.Info("lease table created", "table", s.table)
	case err != nil:
		return err
	default:
		if err := checkKeySchema(s.table, desc); err != nil || desc.TableStatus == types.TableStatusActive {
			return err
		}
	}
	return s.waitActive(ctx)
}

// waitActive waits until the table is ACTIVE, with the SDK's waiter: from
// 100 ms to 1 s between describes, until ctx (which has a deadline) ends.
// Its describes go through
// the store's retries (tableDescriber). Right after the create a describe
// may still say ResourceNotFound (eventual consistency), which the waiter
// waits out; a table whose key is not ours is an error at once.
func (s *DynamoStore) waitActive(ctx context.Context) error {
	w := dynamodb.NewTableExistsWaiter(tableDescriber{s}, func(o *dynamodb.TableExistsWaiterOptions) {
		o.MinDelay, o.MaxDelay = 100*time.Millisecond, time.Second
		exists := o.Retryable
		o.Retryable = func(ctx context.Context, in *dynamodb.DescribeTableInput, out *dynamodb.DescribeTableOutput, err error) (bool, error) {
			if err == nil && out.Table == nil {
				return false, errors.New("DescribeTable returned no table")
			}
			if err == nil {
				if err := checkKeySchema(s.table, out.Table); err != nil {
					return false, err
				}
			}
			return exists(ctx, in, out, err)
		}
	})
	// ctx ends the wait, not the waiter's clock: its error then says so.
	deadline, _ := ctx.Deadline()
	wait := max(time.Until(deadline), 0) + time.Second
	if err := w.Wait(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(s.table)}, wait); err != nil {
		if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
			err = fmt.Errorf("%w: %w", cerr, err)
		}
		return fmt.Errorf("lease: table %s not ACTIVE: %w", s.table, err)
	}
	return nil
}

// tableDescriber is DescribeTable for the waiter, through the store's
// retries and attempt bound (the SDK's retryer off); ResourceNotFound comes
// back as the SDK's error, for the waiter to wait out.
type tableDescriber struct{ s *DynamoStore }

func (d tableDescriber) DescribeTable(ctx context.Context, in *dynamodb.DescribeTableInput, optFns ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error) {
	var out *dynamodb.DescribeTableOutput
	err := d.s.retry(ctx, "describe table", d.s.table, func(ctx context.Context) error {
		var err error
		out, err = d.s.api.DescribeTable(ctx, in, append(optFns, noSDKRetries)...)
		return err
	})
	return out, err
}

func (s *DynamoStore) describe(ctx context.Context) (*types.TableDescription, error) {
	var desc *types.TableDescription
	err := s.retry(ctx, "describe table", s.table, func(ctx context.Context) error {
		out, err := s.api.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(s.table)}, noSDKRetries)
		var nf *types.ResourceNotFoundException
		if errors.As(err, &nf) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if out.Table == nil {
			return errors.New("DescribeTable returned no table")
		}
		desc = out.Table
		return nil
	})
	return desc, err
}

func checkKeySchema(table string, d *types.TableDescription) error {
	for _, k := range d.KeySchema {
		if k.KeyType == types.KeyTypeHash && aws.ToString(k.AttributeName) == AttrLeaseKey && len(d.KeySchema) == 1 {
			return nil
		}
	}
	return fmt.Errorf("lease: table %s exists but its key is not the single hash key %q", table, AttrLeaseKey)
}

// ---------------------------------------------------------------- reads

// Get reads one row with a strongly consistent read.
func (s *DynamoStore) Get(ctx context.Context, key string) (Lease, error) {
	item, err := s.getItem(ctx, key)
	if err != nil {
		return Lease{}, err
	}
	if len(item) == 0 {
		return Lease{}, fmt.Errorf("get %s: %w", key, ErrNotFound)
	}
	l, err := leaseFromItem(item)
	if err != nil {
		return Lease{}, fmt.Errorf("get %s: %w", key, err)
	}
	return l, nil
}

func (s *DynamoStore) getItem(ctx context.Context, key string) (map[string]types.AttributeValue, error) {
	var item map[string]types.AttributeValue
	err := s.retry(ctx, "get", key, func(ctx context.Context) error {
		out, err := s.api.GetItem(ctx, &dynamodb.GetItemInput{
			TableName:      aws.String(s.table),
			Key:            keyOf(key),
			ConsistentRead: aws.Bool(true),
		}, noSDKRetries)
		s.read("get", func() int {
			if out != nil && len(out.Item) > 0 {
				return 1
			}
			return 0
		})
		if err != nil {
			return err
		}
		item = out.Item
		return nil
	})
	return item, err
}

// List reads every row with a consistent, paginated scan. Rows that cannot
// be parsed are logged and skipped.
func (s *DynamoStore) List(ctx context.Context) ([]Lease, error) {
	var (
		leases []Lease
		start  map[string]types.AttributeValue
		limit  *int32
	)
	if s.scanLimit > 0 {
		limit = aws.Int32(s.scanLimit)
	}
	for {
		var out *dynamodb.ScanOutput
		err := s.retry(ctx, "list", s.table, func(ctx context.Context) error {
			var err error
			out, err = s.api.Scan(ctx, &dynamodb.ScanInput{
				TableName:         aws.String(s.table),
				ConsistentRead:    aws.Bool(true),
				ExclusiveStartKey: start,
				Limit:             limit,
			}, noSDKRetries)
			s.read("scan", func() int {
				if out != nil {
					return len(out.Items)
				}
				return 0
			})
			return err
		})
		if err != nil {
			return nil, err
		}
		for _, item := range out.Items {
			l, err := leaseFromItem(item)
			if err != nil {
				s.log.Warn("lease: skipping malformed row", "table", s.table, "err", err)
				continue
			}
			leases = append(leases, l)
		}
		if len(out.LastEvaluatedKey) == 0 {
			return leases, nil
		}
		start = out.LastEvaluatedKey
	}
}

// ---------------------------------------------------------------- writes

// Create writes a new free row (counter 0, no owner, ownerSwitches 0) with
// l's checkpoint (TRIM_HORIZON when l has none), parents and hash range, if
// none exists. ErrExists if a row
// is there — unless this call's own earlier attempt wrote it (a retry after a
// server error), in which case Create succeeds.
func (s *DynamoStore) Create(ctx context.Context, l Lease) (err error) {
	defer s.reportWrite(OpCreate, &err)
	if err := checkKey(l.Key); err != nil {
		return err
	}
	cp := l.Checkpoint
	if cp.SequenceNumber == "" {
		cp.SequenceNumber = CheckpointTrimHorizon
	}
	item := map[string]types.AttributeValue{
		AttrLeaseKey:                     str(l.Key),
		AttrLeaseCounter:                 num(0),
		AttrCheckpoint:                   str(cp.SequenceNumber),
		AttrCheckpointSubSequenceNumber:  num(cp.SubSequenceNumber),
		AttrOwnerSwitchesSinceCheckpoint: num(0),
	}
	if sid, shard, ok := multistream.ParseKey(l.Key); ok {
		item[AttrStreamName] = str(sid.String())
		item[AttrShardID] = str(shard)
	}
	if ss := stringSet(rawIDs(l.Key, l.ParentShardIDs)); ss != nil {
		item[AttrParentShardID] = ss
	}
	if ss := stringSet(rawIDs(l.Key, l.ChildShardIDs)); ss != nil {
		item[AttrChildShardIDs] = ss
	}
	if l.StartingHashKey != "" {
		item[AttrStartingHashKey] = str(l.StartingHashKey)
	}
	if l.EndingHashKey != "" {
		item[AttrEndingHashKey] = str(l.EndingHashKey)
	}
	_, err = s.write(ctx, writeSpec{
		op: OpCreate, key: l.Key, onConditionFailed: ErrExists,
		call: func(ctx context.Context) (map[string]types.AttributeValue, error) {
			_, err := s.api.PutItem(ctx, &dynamodb.PutItemInput{
				TableName:                           aws.String(s.table),
				Item:                                item,
				ConditionExpression:                 aws.String("attribute_not_exists(#k)"),
				ExpressionAttributeNames:            map[string]string{"#k": AttrLeaseKey},
				ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
			}, noSDKRetries)
			return nil, err
		},
		producedBy: func(r Lease, present bool) bool {
			return present && r.Owner == "" && r.Counter == 0 && r.Checkpoint == cp
		},
	})
	return err
}

// Take makes owner the holder of the lease on condition that the row's
// counter and owner are still those of seen. See Store.Take.
//
// If an attempt fails with a server error or a transport error and the retry
// then fails its condition, the first attempt may have been applied: the
// store reads the row and, if it is exactly what this Take would have written
// (owner, counter seen.Counter+1), returns it as a success. The same holds for
// every conditional write of the store.
func (s *DynamoStore) Take(ctx context.Context, seen Lease, owner string, opts TakeOptions) (l Lease, err error) {
	defer s.reportWrite(OpTake, &err)
	if err := checkKey(seen.Key); err != nil {
		return Lease{}, err
	}
	if owner == "" {
		return Lease{}, fmt.Errorf("take %s: empty owner", seen.Key)
	}
	names := map[string]string{"#o": AttrLeaseOwner, "#c": AttrLeaseCounter}
	values := map[string]types.AttributeValue{
		":owner": str(owner), ":seen": num(seen.Counter), ":one": num(1),
	}
	cond := "#c = :seen AND attribute_not_exists(#o)"
	if seen.Owner != "" {
		cond = "#c = :seen AND #o = :seenOwner"
		values[":seenOwner"] = str(seen.Owner)
	}
	update := "SET #o = :owner, #c = #c + :one"
	if owner != seen.Owner {
		update += ", #sw = if_not_exists(#sw, :zero) + :one"
		names["#sw"] = AttrOwnerSwitchesSinceCheckpoint
		values[":zero"] = num(0)
	}
	if cp := opts.Resume; cp != nil {
		if cp.SequenceNumber == "" {
			return Lease{}, fmt.Errorf("take %s: empty resume sequence number", seen.Key)
		}
		update += ", #cp = :cp, #sub = :sub"
		names["#cp"], names["#sub"] = AttrCheckpoint, AttrCheckpointSubSequenceNumber
		values[":cp"], values[":sub"] = str(cp.SequenceNumber), num(cp.SubSequenceNumber)
	}
	update += identityUpdate(opts.Identity, names, values)
	return s.update(ctx, writeSpec{
		op: OpTake, key: seen.Key, onConditionFailed: ErrLeaseLost,
		producedBy: func(r Lease, present bool) bool {
			return present && r.Owner == owner && r.Counter == seen.Counter+1 &&
				(opts.Resume == nil || r.Checkpoint == *opts.Resume)
		},
	}, update, cond, names, values)
}

// identityUpdate is the tail of a take's "SET ..." update expression that
// writes the owner's identity: its fields that are set, and the others
// removed (a row keeps no identity of an earlier owner).
func identityUpdate(id Identity, names map[string]string, values map[string]types.AttributeValue) string {
	var set, remove []string
	field := func(ph, attr string, v types.AttributeValue, empty bool) {
		names[ph] = attr
		if empty {
			remove = append(remove, ph)
			return
		}
		values[":"+ph[1:]] = v
		set = append(set, ph+" = :"+ph[1:])
	}
	field("#oa", AttrOwnerAddress, str(id.Address), id.Address == "")
	field("#oh", AttrOwnerHost, str(id.Host), id.Host == "")
	field("#op", AttrOwnerPID, num(id.PID), id.PID == 0)
	out := ""
	if len(set) > 0 {
		out = ", " + strings.Join(set, ", ")
	}
	if len(remove) > 0 {
		out += " REMOVE " + strings.Join(remove, ", ")
	}
	return out
}

// Renew increments the counter of a lease held by held.Owner at held.Counter.
func (s *DynamoStore) Renew(ctx context.Context, held Lease) (l Lease, err error) {
	defer s.reportWrite(OpRenew, &err)
	if err := checkHeld(OpRenew, held); err != nil {
		return Lease{}, err
	}
	return s.update(ctx, writeSpec{
		op: OpRenew, key: held.Key, onConditionFailed: ErrLeaseLost,
		producedBy: func(r Lease, present bool) bool {
			return present && r.Owner == held.Owner && r.Counter == held.Counter+1
		},
	}, "SET #c = #c + :one", heldCondition, heldNames(), heldValues(held))
}

// Checkpoint records cp (and children, when given) on a held lease, resets
// ownerSwitchesSinceCheckpoint and increments the counter.
func (s *DynamoStore) Checkpoint(ctx context.Context, held Lease, cp Checkpoint, children []string) (l Lease, err error) {
	defer s.reportWrite(OpCheckpoint, &err)
	if err := checkHeld(OpCheckpoint, held); err != nil {
		return Lease{}, err
	}
	if cp.SequenceNumber == "" {
		return Lease{}, fmt.Errorf("checkpoint %s: empty sequence number", held.Key)
	}
	names := heldNames()
	names["#cp"] = AttrCheckpoint
	names["#sub"] = AttrCheckpointSubSequenceNumber
	names["#sw"] = AttrOwnerSwitchesSinceCheckpoint
	values := heldValues(held)
	values[":cp"] = str(cp.SequenceNumber)
	values[":sub"] = num(cp.SubSequenceNumber)
	values[":zero"] = num(0)
	update := "SET #c = #c + :one, #cp = :cp, #sub = :sub, #sw = :zero"
	kids := stringSet(rawIDs(held.Key, children))
	if kids != nil {
		update += ", #ch = :children"
		names["#ch"] = AttrChildShardIDs
		values[":children"] = kids
	}
	return s.update(ctx, writeSpec{
		op: OpCheckpoint, key: held.Key, onConditionFailed: ErrLeaseLost,
		producedBy: func(r Lease, present bool) bool {
			return present && r.Owner == held.Owner && r.Counter == held.Counter+1 &&
				r.Checkpoint == cp && r.OwnerSwitchesSinceCheckpoint == 0 &&
				(kids == nil || sameSet(r.ChildShardIDs, children))
		},
	}, update, heldCondition, names, values)
}

// Release removes leaseOwner from a held lease and increments the counter.
func (s *DynamoStore) Release(ctx context.Context, held Lease) (err error) {
	defer s.reportWrite(OpRelease, &err)
	if err := checkHeld(OpRelease, held); err != nil {
		return err
	}
	_, err = s.update(ctx, writeSpec{
		op: OpRelease, key: held.Key, onConditionFailed: ErrLeaseLost,
		producedBy: func(r Lease, present bool) bool {
			return present && r.Owner == "" && r.Counter == held.Counter+1
		},
	}, "REMOVE #o, #oa, #oh, #op SET #c = #c + :one", heldCondition, releaseNames(), heldValues(held))
	return err
}

// Delete removes a row on condition that its counter is still seen.Counter.
func (s *DynamoStore) Delete(ctx context.Context, seen Lease) (err error) {
	defer s.reportWrite(OpDelete, &err)
	if err := checkKey(seen.Key); err != nil {
		return err
	}
	_, err = s.write(ctx, writeSpec{
		op: OpDelete, key: seen.Key, onConditionFailed: ErrLeaseLost,
		call: func(ctx context.Context) (map[string]types.AttributeValue, error) {
			_, err := s.api.DeleteItem(ctx, &dynamodb.DeleteItemInput{
				TableName:                           aws.String(s.table),
				Key:                                 keyOf(seen.Key),
				ConditionExpression:                 aws.String("#c = :seen"),
				ExpressionAttributeNames:            map[string]string{"#c": AttrLeaseCounter},
				ExpressionAttributeValues:           map[string]types.AttributeValue{":seen": num(seen.Counter)},
				ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
			}, noSDKRetries)
			return nil, err
		},
		producedBy: func(_ Lease, present bool) bool { return !present },
	})
	return err
}

const heldCondition = "#o = :me AND #c = :held"

func heldNames() map[string]string {
	return map[string]string{"#o": AttrLeaseOwner, "#c": AttrLeaseCounter}
}

func releaseNames() map[string]string {
	n := heldNames()
	n["#oa"], n["#oh"], n["#op"] = AttrOwnerAddress, AttrOwnerHost, AttrOwnerPID
	return n
}

func heldValues(held Lease) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{":me": str(held.Owner), ":held": num(held.Counter), ":one": num(1)}
}

func checkKey(key string) error {
	if key == "" {
		return errors.New("lease: empty lease key")
	}
	return nil
}

func checkHeld(op string, held Lease) error {
	if err := checkKey(held.Key); err != nil {
		return err
	}
	if held.Owner == "" {
		return fmt.Errorf("%s %s: lease has no owner", op, held.Key)
	}
	return nil
}

func (s *DynamoStore) read(op string, items func() int) {
	if s.onRead != nil {
		s.onRead(op, items())
	}
}

func (s *DynamoStore) reportWrite(op string, err *error) {
	if s.onWrite != nil {
		s.onWrite(op, *err == nil)
	}
}

// update runs one conditional UpdateItem returning ALL_NEW.
func (s *DynamoStore) update(ctx context.Context, w writeSpec, update, cond string, names map[string]string, values map[string]types.AttributeValue) (Lease, error) {
	w.call = func(ctx context.Context) (map[string]types.AttributeValue, error) {
		out, err := s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
			TableName:                           aws.String(s.table),
			Key:                                 keyOf(w.key),
			UpdateExpression:                    aws.String(update),
			ConditionExpression:                 aws.String(cond),
			ExpressionAttributeNames:            names,
			ExpressionAttributeValues:           values,
			ReturnValues:                        types.ReturnValueAllNew,
			ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
		}, noSDKRetries)
		if err != nil {
			return nil, err
		}
		return out.Attributes, nil
	}
	item, err := s.write(ctx, w)
	if err != nil {
		return Lease{}, err
	}
	if len(item) == 0 { // a server that ignores ReturnValues: read it back
		if item, err = s.getItem(ctx, w.key); err != nil {
			return Lease{}, fmt.Errorf("%s %s: written, but reading it back: %w", w.op, w.key, err)
		}
	}
	l, err := leaseFromItem(item)
	if err != nil {
		return Lease{}, fmt.Errorf("%s %s: %w", w.op, w.key, err)
	}
	return l, nil
}

// writeSpec is one conditional write.
type writeSpec struct {
	op, key string
	// call makes one attempt and returns the row as written (if known).
	call func(ctx context.Context) (map[string]types.AttributeValue, error)
	// onConditionFailed is the sentinel for a failed condition.
	onConditionFailed error
	// producedBy reports whether the row r (present or not) is exactly what
	// this write produces: then an earlier attempt of it was applied.
	producedBy func(r Lease, present bool) bool
}

// write runs w with the retry policy. A failed condition after an attempt
// that ended in a retryable error is checked against w.producedBy before it
// is reported as w.onConditionFailed.
func (s *DynamoStore) write(ctx context.Context, w writeSpec) (map[string]types.AttributeValue, error) {
	var lastErr error
	for attempt := 1; ; attempt++ {
		actx, cancel := s.attemptCtx(ctx)
		item, err := w.call(actx)
		err = attemptErr(ctx, actx, err)
		cancel()
		if err == nil {
			return item, nil
		}
		var ccf *types.ConditionalCheckFailedException
		if errors.As(err, &ccf) {
			if attempt > 1 {
				if row, ok := s.appliedEarlier(ctx, w, ccf.Item); ok {
					s.log.Info("lease: conditional write was applied by an earlier attempt",
						"table", s.table, "op", w.op, "key", w.key, "attempt", attempt, "earlierErr", lastErr)
					return row, nil
				}
			}
			return nil, fmt.Errorf("%s %s: %w", w.op, w.key, w.onConditionFailed)
		}
		if err := s.afterFailure(ctx, w.op, w.key, attempt, err); err != nil {
			return nil, err
		}
		lastErr = err
	}
}

// appliedEarlier reads the row (from ALL_OLD if the server returned it, else
// a consistent GetItem) and reports whether it is what w produces.
func (s *DynamoStore) appliedEarlier(ctx context.Context, w writeSpec, old map[string]types.AttributeValue) (map[string]types.AttributeValue, bool) {
	row := old
	if len(row) == 0 {
		var err error
		if row, err = s.getItem(ctx, w.key); err != nil {
			s.log.Warn("lease: cannot read row after a failed condition", "op", w.op, "key", w.key, "err", err)
			return nil, false
		}
	}
	if len(row) == 0 {
		return nil, w.producedBy(Lease{}, false)
	}
	l, err := leaseFromItem(row)
	if err != nil {
		return nil, false
	}
	return row, w.producedBy(l, true)
}

// retry runs call with the retry policy (for reads and table calls).
func (s *DynamoStore) retry(ctx context.Context, op, key string, call func(ctx context.Context) error) error {
	for attempt := 1; ; attempt++ {
		actx, cancel := s.attemptCtx(ctx)
		err := attemptErr(ctx, actx, call(actx))
		cancel()
		if err == nil {
			return nil
		}
		if errors.Is(err, ErrNotFound) {
			return fmt.Errorf("%s %s: %w", op, key, err)
		}
		if err := s.afterFailure(ctx, op, key, attempt, err); err != nil {
			return err
		}
	}
}

// afterFailure decides what follows a failed attempt: nil after waiting out
// the backoff (try again), or the error to return.
func (s *DynamoStore) afterFailure(ctx context.Context, op, key string, attempt int, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%s %s: %w (last error: %w)", op, key, ctx.Err(), err)
	}
	if !IsRetryable(err) {
		return fmt.Errorf("%s %s: %w", op, key, err)
	}
	if attempt >= s.maxAttempts {
		return fmt.Errorf("%s %s: gave up after %d attempts: %w", op, key, attempt, err)
	}
	d := s.policy.Delay(attempt, nil)
	s.log.Debug("lease: retrying", "table", s.table, "op", op, "key", key, "attempt", attempt, "delay", d, "err", err)
	if serr := backoff.Sleep(ctx, d); serr != nil {
		return fmt.Errorf("%s %s: %w (last error: %w)", op, key, serr, err)
	}
	return nil
}

// retryableCodes are the API error codes the store retries: the SDK's
// throttling codes plus DynamoDB's server-side failures.
var retryableCodes = map[string]bool{
	"InternalServerError":     true,
	"InternalFailure":         true,
	"ServiceUnavailable":      true,
	"RequestTimeout":          true,
	"RequestTimeoutException": true,
}

// IsRetryable reports whether err (from a DynamoDB call) is worth retrying:
// throttling, server errors (any HTTP 5xx), and transport errors. A failed
// condition, a validation error or a missing table is not.
func IsRetryable(err error) bool {
	if errors.Is(err, errAttemptTimeout) {
		return true
	}
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return false
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		code := apiErr.ErrorCode()
		if _, ok := retry.DefaultThrottleErrorCodes[code]; ok || retryableCodes[code] {
			return true
		}
	}
	var status interface{ HTTPStatusCode() int }
	if errors.As(err, &status) {
		if c := status.HTTPStatusCode(); c >= 500 || c == 429 {
			return true
		}
	}
	if apiErr != nil && apiErr.ErrorFault() == smithy.FaultServer {
		return true
	}
	return retry.RetryableConnectionError{}.IsErrorRetryable(err) == aws.TrueTernary
}

// ---------------------------------------------------------------- marshalling

func keyOf(key string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{AttrLeaseKey: str(key)}
}

func str(s string) types.AttributeValue { return &types.AttributeValueMemberS{Value: s} }

func num(n int64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatInt(n, 10)}
}

// stringSet returns an SS of the distinct non-empty ids, or nil when there
// are none (DynamoDB rejects empty sets and duplicates in a set).
func stringSet(ids []string) types.AttributeValue {
	var out []string
	for _, id := range ids {
		if id != "" && !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return &types.AttributeValueMemberSS{Value: out}
}

func sameSet(a, b []string) bool {
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	for _, x := range b {
		if x != "" && !slices.Contains(a, x) {
			return false
		}
	}
	return true
}

// leaseFromItem parses a row. It tolerates rows written by the Java KCL:
// any attribute but leaseKey may be missing; numbers may come as N or S;
// shard id sets as SS, a single S, or a list of S.
func leaseFromItem(item map[string]types.AttributeValue) (Lease, error) {
	var l Lease
	var err error
	var ok bool
	if l.Key, ok = getString(item, AttrLeaseKey); !ok || l.Key == "" {
		return Lease{}, errors.New("lease: row without leaseKey")
	}
	l.Owner, _ = getString(item, AttrLeaseOwner)
	if l.Counter, err = getInt(item, AttrLeaseCounter); err != nil {
		return Lease{}, fmt.Errorf("lease: row %s: %w", l.Key, err)
	}
	l.Checkpoint.SequenceNumber, _ = getString(item, AttrCheckpoint)
	if l.Checkpoint.SubSequenceNumber, err = getInt(item, AttrCheckpointSubSequenceNumber); err != nil {
		return Lease{}, fmt.Errorf("lease: row %s: %w", l.Key, err)
	}
	if l.OwnerSwitchesSinceCheckpoint, err = getInt(item, AttrOwnerSwitchesSinceCheckpoint); err != nil {
		return Lease{}, fmt.Errorf("lease: row %s: %w", l.Key, err)
	}
	l.ParentShardIDs = getStrings(item, AttrParentShardID)
	l.ChildShardIDs = getStrings(item, AttrChildShardIDs)
	if len(l.ChildShardIDs) == 0 {
		// Some Java KCL 2.x versions wrote the children as "childShardId".
		l.ChildShardIDs = getStrings(item, attrChildShardIDLegacy)
	}
	l.ParentShardIDs = keyedIDs(l.Key, l.ParentShardIDs)
	l.ChildShardIDs = keyedIDs(l.Key, l.ChildShardIDs)
	l.StartingHashKey, _ = getString(item, AttrStartingHashKey)
	l.EndingHashKey, _ = getString(item, AttrEndingHashKey)
	l.Holder.Address, _ = getString(item, AttrOwnerAddress)
	l.Holder.Host, _ = getString(item, AttrOwnerHost)
	if l.Holder.PID, err = getInt(item, AttrOwnerPID); err != nil {
		return Lease{}, fmt.Errorf("lease: row %s: %w", l.Key, err)
	}
	return l, nil
}

func getString(item map[string]types.AttributeValue, name string) (string, bool) {
	switch v := item[name].(type) {
	case *types.AttributeValueMemberS:
		return v.Value, true
	case *types.AttributeValueMemberN:
		return v.Value, true
	}
	return "", false
}

func getInt(item map[string]types.AttributeValue, name string) (int64, error) {
	var raw string
	switch v := item[name].(type) {
	case nil:
		return 0, nil
	case *types.AttributeValueMemberN:
		raw = v.Value
	case *types.AttributeValueMemberS:
		raw = v.Value
	case *types.AttributeValueMemberNULL:
		return 0, nil
	default:
		return 0, fmt.Errorf("attribute %s has type %T, want N", name, v)
	}
	n, err := strconv.ParseInt(raw, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("attribute %s: %w", name, err)
	}
	return n, nil
}

func getStrings(item map[string]types.AttributeValue, name string) []string {
	switch v := item[name].(type) {
	case *types.AttributeValueMemberSS:
		out := slices.Clone(v.Value)
		slices.Sort(out)
		return out
	case *types.AttributeValueMemberS:
		if v.Value != "" {
			return []string{v.Value}
		}
	case *types.AttributeValueMemberL:
		var out []string
		for _, e := range v.Value {
			if s, ok := e.(*types.AttributeValueMemberS); ok && s.Value != "" {
				out = append(out, s.Value)
			}
		}
		slices.Sort(out)
		return out
	}
	return nil
}

// rawIDs: the shard ids of a multi-stream row's parents or children as
// the KCL stores them (without their stream); ids unchanged otherwise.
func rawIDs(key string, ids []string) []string {
	if !multistream.IsKey(key) || len(ids) == 0 {
		return ids
	}
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = multistream.ShardOf(id)
	}
	return out
}

// keyedIDs: the lease keys of a multi-stream row's parents or children
// (their stream is the row's); ids unchanged otherwise.
func keyedIDs(key string, ids []string) []string {
	sid, _, ok := multistream.ParseKey(key)
	if !ok || len(ids) == 0 {
		return ids
	}
	out := make([]string, len(ids))
	for i, id := range ids {
		if multistream.IsKey(id) {
			out[i] = id
		} else {
			out[i] = sid.Key(id)
		}
	}
	return out
}
