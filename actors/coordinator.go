package actors

import (
	"context"
	"errors"
	"log/slog"
	"sort"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/scheduler"

	"github.com/kinactor/kinactor/actors/shardfsm"
	"github.com/kinactor/kinactor/lease"
	"github.com/kinactor/kinactor/stream"
)

// CoordinatorConfig configures the coordinator.
type CoordinatorConfig struct {
	Deps *Deps
	// InitialCheckpoint is written into new lease rows of shards without
	// parents: TRIM_HORIZON, LATEST or AT_TIMESTAMP. Children of a known
	// parent always start at TRIM_HORIZON, so nothing after a reshard is lost.
	InitialCheckpoint string
	// SyncInterval is how often shards and leases are listed.
	SyncInterval time.Duration
	// LeaseExpiry is how long a lease's counter must stand still before a
	// lease held by another owner is taken (the backstop for dead owners).
	LeaseExpiry time.Duration
}

// Messages the coordinator accepts from outside.
type (
	// StopAll asks for a graceful stop of every shard actor; Done is closed
	// when the last one has finished.
	StopAll struct{ Done chan struct{} }
	// StatusRequest asks for a snapshot; the reply is sent on Reply.
	StatusRequest struct{ Reply chan Status }
)

// Status is a snapshot of the coordinator.
type Status struct {
	Owner  string        `json:"node"`
	Shards []ShardStatus `json:"shards"`
}

// ShardStatus is one owned shard.
type ShardStatus struct {
	ShardID    string `json:"shard"`
	State      string `json:"state"`
	Checkpoint string `json:"checkpoint"`
}

type (
	syncTick   struct{}
	syncResult struct {
		shards []stream.Shard
		leases []lease.Lease
		err    error
	}
	takeResult struct {
		lease  lease.Lease
		reason string
		err    error
	}
)

type ownedShard struct {
	pid        *actor.PID
	state      shardfsm.State
	checkpoint lease.Checkpoint
}

type coordinator struct {
	cfg     CoordinatorConfig
	log     *slog.Logger
	self    *actor.PID
	sys     *actor.ActorSystem
	sched   *scheduler.TimerScheduler
	cancelT scheduler.CancelFunc
	ctx     context.Context
	cancel  context.CancelFunc

	owned    map[string]*ownedShard
	taking   map[string]bool
	finished map[string]bool // shards this node gave up on (FailurePolicy StopShard)
	expiry   *lease.ExpiryTracker
	syncing  bool
	resync   bool
	stopping bool
	waiters  []chan struct{}
}

// NewCoordinatorProps returns the props of the coordinator: it lists shards
// and leases, creates missing lease rows, takes the leases it should own
// (through the fenced store) and supervises one shard actor per lease. A
// shard actor that crashes is stopped, not restarted: its lease is still
// ours in the table and is taken again at the next sync.
func NewCoordinatorProps(cfg CoordinatorConfig) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &coordinator{cfg: cfg}
	}, actor.WithSupervisor(actor.NewOneForOneStrategy(0, 0, func(reason any) actor.Directive {
		return actor.StopDirective
	})))
}

func (c *coordinator) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		c.self, c.sys = ctx.Self(), ctx.ActorSystem()
		c.log = c.cfg.Deps.Logger
		c.sched = scheduler.NewTimerScheduler(c.sys.Root)
		c.ctx, c.cancel = context.WithCancel(context.Background())
		c.owned = map[string]*ownedShard{}
		c.taking = map[string]bool{}
		c.finished = map[string]bool{}
		c.expiry = lease.NewExpiryTracker(c.cfg.LeaseExpiry)
		c.cancelT = c.sched.SendRepeatedly(c.cfg.SyncInterval, c.cfg.SyncInterval, c.self, syncTick{})
		c.startSync()
	case *actor.Stopping:
		if c.cancelT != nil {
			c.cancelT()
		}
		c.cancel()
	case syncTick:
		c.startSync()
	case syncResult:
		c.onSync(ctx, msg)
	case takeResult:
		c.onTake(ctx, msg)
	case ShardStateChanged:
		if o := c.owned[msg.ShardID]; o != nil {
			o.state, o.checkpoint = msg.State, msg.Checkpoint
		}
	case ShardFinished:
		if o := c.owned[msg.ShardID]; o != nil {
			ctx.Stop(o.pid)
		}
		c.onFinished(msg)
	case *actor.Terminated:
		c.onTerminated(msg.Who)
	case StopAll:
		c.stopping = true
		c.waiters = append(c.waiters, msg.Done)
		for _, o := range c.owned {
			ctx.Send(o.pid, shardfsm.StopRequested{})
		}
		c.maybeDoneStopping()
	case StatusRequest:
		msg.Reply <- c.status()
	}
}

func (c *coordinator) status() Status {
	s := Status{Owner: c.cfg.Deps.Owner}
	for id, o := range c.owned {
		s.Shards = append(s.Shards, ShardStatus{ShardID: id, State: o.state.String(), Checkpoint: o.checkpoint.SequenceNumber})
	}
	sort.Slice(s.Shards, func(i, j int) bool { return s.Shards[i].ShardID < s.Shards[j].ShardID })
	return s
}

// startSync lists shards, creates missing lease rows and lists the leases,
// off the actor.
func (c *coordinator) startSync() {
	if c.stopping {
		return
	}
	if c.syncing {
		c.resync = true
		return
	}
	c.syncing = true
	deps, self, sys, cx, initial := c.cfg.Deps, c.self, c.sys, c.ctx, c.cfg.InitialCheckpoint
	go func() {
		res := syncShards(cx, deps, initial)
		if cx.Err() == nil {
			sys.Root.Send(self, res)
		}
	}()
}

func syncShards(ctx context.Context, deps *Deps, initial string) syncResult {
	shards, err := deps.Stream.ListShards(ctx)
	if err != nil {
		return syncResult{err: err}
	}
	leases, err := deps.Store.List(ctx)
	if err != nil {
		return syncResult{err: err}
	}
	have := make(map[string]bool, len(leases))
	for _, l := range leases {
		have[l.Key] = true
	}
	listed := make(map[string]bool, len(shards))
	for _, s := range shards {
		listed[s.ID] = true
	}
	created := false
	for _, s := range shards {
		if have[s.ID] {
			continue
		}
		cp := initial
		for _, p := range s.Parents() {
			if listed[p] || have[p] {
				cp = lease.CheckpointTrimHorizon // a child: read it all
			}
		}
		err := deps.Store.Create(ctx, lease.Lease{
			Key: s.ID, Checkpoint: lease.Checkpoint{SequenceNumber: cp},
			ParentShardIDs: s.Parents(), StartingHashKey: s.StartingHashKey, EndingHashKey: s.EndingHashKey,
		})
		if err != nil && !errors.Is(err, lease.ErrExists) {
			return syncResult{err: err}
		}
		created = true
	}
	if created {
		if leases, err = deps.Store.List(ctx); err != nil {
			return syncResult{err: err}
		}
	}
	return syncResult{shards: shards, leases: leases}
}

func (c *coordinator) onSync(ctx actor.Context, r syncResult) {
	c.syncing = false
	if r.err != nil {
		c.log.Warn("shard sync failed, will retry", "err", r.err)
	} else if !c.stopping {
		now := time.Now()
		for _, t := range PlanTakes(r.shards, r.leases, c.cfg.Deps.Owner, c.busy, func(l lease.Lease) bool { return c.expiry.Observe(l, now) }) {
			c.take(t)
		}
	}
	if c.resync {
		c.resync = false
		c.startSync()
	}
}

func (c *coordinator) busy(shardID string) bool {
	return c.owned[shardID] != nil || c.taking[shardID] || c.finished[shardID]
}

// Take is a lease the coordinator decided to take, and why.
type Take struct {
	Lease  lease.Lease // as read
	Reason string      // "free", "released", "expired" or "own"
}

// PlanTakes decides, from what was read, which leases to take: every lease
// of a listed shard that is not finished (SHARD_END), not busy locally, and
// either free, left over under our own name, or expired (its counter stood
// still for the expiry interval, as judged by expired). Shards are taken in
// id order. It is pure: the coordinator runs it on every sync.
func PlanTakes(shards []stream.Shard, leases []lease.Lease, me string, busy func(string) bool, expired func(lease.Lease) bool) []Take {
	listed := make(map[string]bool, len(shards))
	for _, s := range shards {
		listed[s.ID] = true
	}
	var out []Take
	for _, l := range leases {
		if !listed[l.Key] || l.Checkpoint.IsShardEnd() || busy(l.Key) {
			continue
		}
		ex := expired(l) // observe every candidate, so expiry clocks start
		switch {
		case l.Owner == "" && l.Counter == 0:
			out = append(out, Take{l, "free"})
		case l.Owner == "":
			out = append(out, Take{l, "released"})
		case l.Owner == me:
			out = append(out, Take{l, "own"})
		case ex:
			out = append(out, Take{l, "expired"})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Lease.Key < out[j].Lease.Key })
	return out
}

func (c *coordinator) take(t Take) {
	c.taking[t.Lease.Key] = true
	deps, self, sys, cx := c.cfg.Deps, c.self, c.sys, c.ctx
	go func() {
		l, err := deps.Store.Take(cx, t.Lease, deps.Owner)
		if cx.Err() == nil {
			sys.Root.Send(self, takeResult{lease: l, reason: t.Reason, err: err})
		}
	}()
}

func (c *coordinator) onTake(ctx actor.Context, r takeResult) {
	key := r.lease.Key
	delete(c.taking, key)
	res := "ok"
	if r.err != nil {
		res = "lost"
		if !errors.Is(r.err, lease.ErrLeaseLost) {
			res = "error"
			c.log.Warn("taking lease failed", "shard", key, "err", r.err)
		}
		c.cfg.Deps.Metrics.LeaseWrites.WithLabelValues("take", res).Inc()
		c.maybeDoneStopping()
		return
	}
	c.cfg.Deps.Metrics.LeaseWrites.WithLabelValues("take", res).Inc()
	c.cfg.Deps.Metrics.LeaseTakes.WithLabelValues(r.reason).Inc()
	c.log.Info("lease taken", "shard", key, "reason", r.reason, "counter", r.lease.Counter)
	pid, err := ctx.SpawnNamed(NewShardProps(c.cfg.Deps, r.lease), "shard-"+key)
	if err != nil {
		c.log.Error("cannot spawn shard actor", "shard", key, "err", err)
		return
	}
	ctx.Watch(pid)
	c.owned[key] = &ownedShard{pid: pid, checkpoint: r.lease.Checkpoint}
	c.cfg.Deps.Metrics.LeasesHeld.Set(float64(len(c.owned)))
	if c.stopping {
		ctx.Send(pid, shardfsm.StopRequested{}) // taken while stopping: give it back the normal way
	}
}

func (c *coordinator) onFinished(f ShardFinished) {
	if f.Outcome == shardfsm.Failed {
		c.finished[f.ShardID] = true // not taken again by this node
	}
	c.forget(f.ShardID)
	if f.Outcome == shardfsm.ShardEnd {
		c.startSync() // children become eligible now
	}
}

func (c *coordinator) onTerminated(who *actor.PID) {
	for id, o := range c.owned {
		if o.pid.Equal(who) {
			c.log.Warn("shard actor stopped without finishing; its lease will be taken again", "shard", id)
			c.forget(id)
		}
	}
}

func (c *coordinator) forget(id string) {
	if _, ok := c.owned[id]; !ok {
		return
	}
	delete(c.owned, id)
	c.cfg.Deps.Metrics.LeasesHeld.Set(float64(len(c.owned)))
	c.maybeDoneStopping()
}

func (c *coordinator) maybeDoneStopping() {
	if !c.stopping || len(c.owned) > 0 || len(c.taking) > 0 {
		return
	}
	for _, w := range c.waiters {
		close(w)
	}
	c.waiters = nil
}
