package actors

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sort"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/scheduler"

	"github.com/kinactor/kinactor/actors/shardfsm"
	"github.com/kinactor/kinactor/cluster"
	"github.com/kinactor/kinactor/lease"
	"github.com/kinactor/kinactor/stream"
)

// Gossip is what the coordinator needs from cluster membership;
// *cluster.Membership has it.
type Gossip interface {
	Members() []cluster.Member
	Send(to string, payload []byte) error
	Broadcast(payload []byte)
}

// CoordinatorConfig configures the coordinator.
type CoordinatorConfig struct {
	Deps *Deps
	// Gossip, when set, makes this node one of a cluster: shards are
	// assigned over the live members and handed off gracefully. Nil: this
	// node takes every shard.
	Gossip Gossip
	// InitialCheckpoint is written into new lease rows of shards without
	// parents: TRIM_HORIZON, LATEST or AT_TIMESTAMP. Children of a known
	// parent always start at TRIM_HORIZON, so nothing after a reshard is lost.
	InitialCheckpoint string
	// SyncInterval: how often the discovering node (the lowest-named live
	// member) lists shards and leases.
	SyncInterval time.Duration
	// FollowerSyncInterval: how often the other members read the lease
	// table when nothing happens (gossip events trigger reads at once).
	FollowerSyncInterval time.Duration
	// LeaseExpiry is how long a lease's counter must stand still before a
	// lease held by another owner is taken (the backstop for owners gossip
	// cannot judge).
	LeaseExpiry time.Duration
}

// Messages the coordinator accepts from outside.
type (
	// StopAll asks for a graceful stop of every shard actor; Done is closed
	// when the last one has finished.
	StopAll struct{ Done chan struct{} }
	// StatusRequest asks for a snapshot; the reply is sent on Reply.
	StatusRequest struct{ Reply chan Status }
	// MembershipChanged carries a gossip event and the view after it.
	MembershipChanged struct {
		Event   cluster.Event
		Members []cluster.Member
	}
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
	// MillisBehindLatest is the lag the last fetch reported.
	MillisBehindLatest int64 `json:"millis_behind_latest"`
	// SinceProgress is how long ago (seconds) the shard last made
	// progress: a successful fetch or an answer from its processor.
	SinceProgress float64 `json:"since_progress_seconds"`
	// Stalled: no progress for StallTimeout; StallCause says on what:
	// "kinesis", "dynamodb" or "processor".
	Stalled    bool   `json:"stalled,omitempty"`
	StallCause string `json:"stall_cause,omitempty"`
}

// gossipMsg is what coordinators tell each other.
type gossipMsg struct {
	Type    string `json:"t"`           // "released" or "shards"
	Shard   string `json:"s,omitempty"` // for released
	Counter int64  `json:"c,omitempty"` // the lease counter after the release
	At      int64  `json:"at,omitempty"`
	// From and Draining: the sender is leaving. Its own word is enough to
	// plan without it at once, before the meta update reaches us by gossip.
	From     string `json:"f,omitempty"`
	Draining bool   `json:"d,omitempty"`
}

type (
	syncTick   struct{}
	syncResult struct {
		listed  map[string]bool // nil unless shards were listed
		leases  []lease.Lease
		changed bool // rows were created or deleted
		err     error
	}
	takeResult struct {
		key    string
		lease  lease.Lease // as written, when err is nil
		reason string
		err    error
	}
)

type ownedShard struct {
	pid        *actor.PID
	state      shardfsm.State
	checkpoint lease.Checkpoint
	releasing  time.Time // when a handoff began
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
	failed   map[string]bool      // shards this node gave up on (FailurePolicy StopShard)
	lost     map[string]LostLease // leases lost to a fenced write
	joinedAt map[string]time.Time // members' latest join (gossip event)
	expiry   *lease.ExpiryTracker
	leases   map[string]lease.Lease // last read of the table, updated by our own writes and gossip
	listed   map[string]bool
	members  []cluster.Member
	gone     map[string]bool
	goneAt   map[string]time.Time
	draining map[string]bool // members that said they are leaving
	ticks    int
	syncing  bool
	resync   bool
	stopping bool
	waiters  []chan struct{}
}

// NewCoordinatorProps returns the props of the coordinator: it lists shards
// and leases, creates missing lease rows, takes the leases assigned to this
// node (through the fenced store), hands off those assigned elsewhere, and
// supervises one shard actor per lease. A shard actor that crashes is
// stopped, not restarted: its lease is still ours in the table and is taken
// again at the next sync.
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
		c.failed = map[string]bool{}
		c.lost = map[string]LostLease{}
		c.joinedAt = map[string]time.Time{}
		c.leases = map[string]lease.Lease{}
		c.gone = map[string]bool{}
		c.goneAt = map[string]time.Time{}
		c.draining = map[string]bool{}
		c.expiry = lease.NewExpiryTracker(c.cfg.LeaseExpiry)
		if c.cfg.Gossip != nil {
			c.members = c.cfg.Gossip.Members()
			c.cfg.Deps.Metrics.ClusterMembers.Set(float64(len(c.members)))
		}
		c.cancelT = c.sched.SendRepeatedly(c.cfg.SyncInterval, c.cfg.SyncInterval, c.self, syncTick{})
		c.startSync()
	case *actor.Stopping:
		if c.cancelT != nil {
			c.cancelT()
		}
		c.cancel()
	case syncTick:
		c.ticks++
		if c.cfg.Gossip != nil {
			// Events can be missed (those before this actor existed); the
			// view is cheap to read, so refresh it on every tick.
			if ms := c.cfg.Gossip.Members(); !sameMembers(ms, c.members) {
				c.members = ms
				c.cfg.Deps.Metrics.ClusterMembers.Set(float64(len(ms)))
				c.plan(ctx)
			}
		}
		every := 1
		if !c.leader() && len(c.leases) > 0 && c.cfg.FollowerSyncInterval > c.cfg.SyncInterval {
			every = int(c.cfg.FollowerSyncInterval / c.cfg.SyncInterval)
		}
		if c.ticks%every == 0 {
			c.startSync()
		}
	case syncResult:
		c.onSync(ctx, msg)
	case takeResult:
		c.onTake(ctx, msg)
	case MembershipChanged:
		c.onMembership(ctx, msg)
	case ShardStateChanged:
		if o := c.owned[msg.ShardID]; o != nil {
			o.state, o.checkpoint = msg.State, msg.Checkpoint
		}
	case ShardFinished:
		if o := c.owned[msg.ShardID]; o != nil {
			ctx.Stop(o.pid)
		}
		c.onFinished(ctx, msg)
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
		st := o.state.String()
		if o.state == 0 {
			st = "Starting"
		}
		s.Shards = append(s.Shards, ShardStatus{ShardID: id, State: st, Checkpoint: o.checkpoint.SequenceNumber})
	}
	sort.Slice(s.Shards, func(i, j int) bool { return s.Shards[i].ShardID < s.Shards[j].ShardID })
	return s
}

// leader reports whether this node discovers shards: the lowest-named live
// member (or the only node without a cluster).
func (c *coordinator) leader() bool {
	if c.cfg.Gossip == nil {
		return true
	}
	me := c.cfg.Deps.Owner
	for _, m := range cluster.Candidates(c.members) {
		if m.Name < me {
			return false
		}
	}
	return true
}

func (c *coordinator) onMembership(ctx actor.Context, m MembershipChanged) {
	ev := m.Event
	if ev.Kind == cluster.MessageReceived {
		c.onGossip(ctx, ev.Payload)
		return
	}
	c.members = m.Members
	c.cfg.Deps.Metrics.ClusterMembers.Set(float64(len(m.Members)))
	switch ev.Kind {
	case cluster.MemberLeft, cluster.MemberDied:
		delete(c.draining, ev.Member.Name)
		c.gone[ev.Member.Name] = true
		c.goneAt[ev.Member.Name] = time.Now()
		c.log.Info("member gone", "member", ev.Member.Name, "how", ev.Kind.String())
		// Plan at once with what we know (a take fails harmlessly if the
		// counter moved), and read the table for the rest.
		c.plan(ctx)
	case cluster.MemberJoined:
		delete(c.gone, ev.Member.Name)
		c.joinedAt[ev.Member.Name] = time.Now()
		c.log.Info("member joined", "member", ev.Member.Name)
		c.plan(ctx)
	case cluster.MemberUpdated:
		c.plan(ctx)
	}
	c.startSync()
}

func (c *coordinator) onGossip(ctx actor.Context, payload []byte) {
	var g gossipMsg
	if err := json.Unmarshal(payload, &g); err != nil {
		c.log.Warn("ignoring malformed gossip message", "err", err)
		return
	}
	if g.Draining && g.From != "" && g.From != c.cfg.Deps.Owner {
		c.draining[g.From] = true
	}
	switch g.Type {
	case "released":
		if l, ok := c.leases[g.Shard]; !ok || l.Counter <= g.Counter {
			l.Key, l.Owner, l.Counter = g.Shard, "", g.Counter
			c.leases[g.Shard] = l
		}
		if g.At > 0 {
			c.cfg.Deps.Metrics.ShardUnowned.Observe(max(0, time.Since(time.UnixMilli(g.At)).Seconds()))
		}
		c.plan(ctx)
	case "shards":
		c.startSync()
	}
}

// startSync reads the lease table (and, on the discovering node, lists the
// shards and creates missing rows), off the actor.
func (c *coordinator) startSync() {
	if c.stopping {
		return
	}
	if c.syncing {
		c.resync = true
		return
	}
	c.syncing = true
	deps, self, sys, cx, initial, leader := c.cfg.Deps, c.self, c.sys, c.ctx, c.cfg.InitialCheckpoint, c.leader()
	go func() {
		op, cancel := context.WithTimeout(cx, 2*OpTimeout) // a hung call must not stop syncing for good
		defer cancel()
		var res syncResult
		if leader {
			res = syncShards(op, deps, initial)
		} else {
			res.leases, res.err = deps.Store.List(op)
		}
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
	have := make(map[string]lease.Lease, len(leases))
	for _, l := range leases {
		have[l.Key] = l
	}
	listed := make(map[string]bool, len(shards))
	for _, s := range shards {
		listed[s.ID] = true
	}
	changed := false
	for _, l := range NewRows(shards, have, initial) {
		if err := deps.Store.Create(ctx, l); err != nil && !errors.Is(err, lease.ErrExists) {
			return syncResult{err: err}
		}
		changed = true
	}
	for _, l := range FinishedParents(leases) {
		// Every child has checkpointed past its start: the parent row is
		// no longer needed (a child's parent check treats a missing row as
		// done). Conditional on the counter read; a race just retries later.
		if err := deps.Store.Delete(ctx, l); err != nil && !errors.Is(err, lease.ErrLeaseLost) && !errors.Is(err, lease.ErrNotFound) {
			return syncResult{err: err}
		}
		changed = true
	}
	if changed {
		if leases, err = deps.Store.List(ctx); err != nil {
			return syncResult{err: err}
		}
	}
	return syncResult{listed: listed, leases: leases, changed: changed}
}

// NewRows returns the lease rows to create for the listed shards that have
// none in the table (have). A closed shard whose descendants (through the
// listing, at any depth) already have a row is skipped: it was read to its
// end and its row deleted once its children moved on, and a new row would
// read it again from the start. Rows of shards without a listed or known
// parent start at initial; children start at TRIM_HORIZON, so nothing after
// a reshard is lost. The rows come in listing order.
func NewRows(shards []stream.Shard, have map[string]lease.Lease, initial string) []lease.Lease {
	listed := make(map[string]bool, len(shards))
	children := map[string][]string{}
	for _, s := range shards {
		listed[s.ID] = true
		for _, p := range s.Parents() {
			children[p] = append(children[p], s.ID)
		}
	}
	// rowBelow: some descendant has a row. Shard lineage is a DAG (merges
	// join two branches), so memoize; a shard's own row does not count.
	memo := map[string]bool{}
	var rowBelow func(id string) bool
	rowBelow = func(id string) bool {
		if v, ok := memo[id]; ok {
			return v
		}
		memo[id] = false // cycle guard for a malformed listing
		found := false
		for _, c := range children[id] {
			if _, ok := have[c]; ok || rowBelow(c) {
				found = true
				break
			}
		}
		memo[id] = found
		return found
	}
	var out []lease.Lease
	for _, s := range shards {
		if _, ok := have[s.ID]; ok {
			continue
		}
		if s.Closed() && rowBelow(s.ID) {
			continue // finished and cleaned up: its descendants carry on
		}
		cp := initial
		for _, p := range s.Parents() {
			if _, ok := have[p]; listed[p] || ok {
				cp = lease.CheckpointTrimHorizon // a child: read it all
			}
		}
		out = append(out, lease.Lease{
			Key: s.ID, Checkpoint: lease.Checkpoint{SequenceNumber: cp},
			ParentShardIDs: s.Parents(), StartingHashKey: s.StartingHashKey, EndingHashKey: s.EndingHashKey,
		})
	}
	return out
}

// FinishedParents returns the rows that can be deleted: shards read to
// SHARD_END, with children recorded, every one of which has a row whose
// checkpoint is past its start (a sequence number or SHARD_END).
func FinishedParents(leases []lease.Lease) []lease.Lease {
	byKey := make(map[string]lease.Lease, len(leases))
	for _, l := range leases {
		byKey[l.Key] = l
	}
	var out []lease.Lease
	for _, l := range leases {
		if !l.Checkpoint.IsShardEnd() || len(l.ChildShardIDs) == 0 || l.Owner != "" {
			continue
		}
		done := true
		for _, c := range l.ChildShardIDs {
			cl, ok := byKey[c]
			if !ok || (cl.Checkpoint.IsSentinel() && !cl.Checkpoint.IsShardEnd()) {
				done = false
				break
			}
		}
		if done {
			out = append(out, l)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

func (c *coordinator) onSync(ctx actor.Context, r syncResult) {
	c.syncing = false
	if r.err != nil {
		c.log.Warn("shard sync failed, will retry", "err", r.err)
	} else {
		c.leases = make(map[string]lease.Lease, len(r.leases))
		for _, l := range r.leases {
			c.leases[l.Key] = l
		}
		SettleLost(c.lost, r.leases, c.cfg.Deps.Owner, c.joinedAt)
		// The listing filters only while it is fresh: a node that was the
		// discovering node once must not keep filtering by an old listing
		// (shards created since would never be eligible on it).
		c.listed = r.listed
		if c.cfg.Gossip != nil && r.changed {
			c.broadcast(gossipMsg{Type: "shards"}) // new or removed rows: tell the others
		}
		c.plan(ctx)
	}
	if c.resync {
		c.resync = false
		c.startSync()
	}
}

// LostLease is a lease this node lost to a fenced write: when, and the
// owner that took it ("" until a read of the table shows it).
type LostLease struct {
	To string
	At time.Time
}

// SettleLost updates the leases this node lost to a fenced write from a
// read of the table and the members' latest join times. A lost lease is
// not taken back by judging its owner dead: in a partition each side sees
// the other dead, and they would take it back and forth. The mark ends,
// and a later death of the owner is acted on at once instead of after
// expiry, when the lease is free or ours again; when it has moved on from
// the node that took it (released or taken since: the loss is history); or
// when that node joined our view again after the loss (the partition that
// made it take the lease has healed).
func SettleLost(lost map[string]LostLease, leases []lease.Lease, me string, joined map[string]time.Time) {
	for _, l := range leases {
		m, ok := lost[l.Key]
		if !ok {
			continue
		}
		if l.Owner == "" || l.Owner == me || (m.To != "" && m.To != l.Owner) {
			delete(lost, l.Key)
			continue
		}
		m.To = l.Owner
		if joined[m.To].After(m.At) {
			delete(lost, l.Key)
			continue
		}
		lost[l.Key] = m
	}
}

func (c *coordinator) view() View {
	leases := make([]lease.Lease, 0, len(c.leases))
	for _, l := range c.leases {
		leases = append(leases, l)
	}
	running := make(map[string]bool, len(c.owned))
	for k := range c.owned {
		running[k] = true
	}
	lost := make(map[string]bool, len(c.lost))
	for k := range c.lost {
		lost[k] = true
	}
	now := time.Now()
	v := View{
		Me: c.cfg.Deps.Owner, Leases: leases, Listed: c.listed, Gone: c.gone,
		Running: running, Lost: lost,
		Busy:    func(k string) bool { return c.taking[k] || c.failed[k] },
		Expired: func(l lease.Lease) bool { return c.expiry.Observe(l, now) },
	}
	if c.cfg.Gossip != nil {
		v.Members = []cluster.Member{}
		for _, m := range c.members {
			if (m.Name == v.Me && c.stopping) || c.draining[m.Name] {
				m.Meta.Draining = true // leaving: hand everything to the others
			}
			v.Members = append(v.Members, m)
		}
	}
	return v
}

// plan runs PlanOwnership on what the coordinator knows and acts on it.
func (c *coordinator) plan(ctx actor.Context) {
	if c.stopping || len(c.leases) == 0 {
		return
	}
	p := PlanOwnership(c.view())
	if c.log.Enabled(context.Background(), slog.LevelDebug) {
		mine := 0
		for _, o := range p.Assignment {
			if o == c.cfg.Deps.Owner {
				mine++
			}
		}
		c.log.Debug("plan", "members", len(c.members), "leases", len(c.leases), "assigned", mine, "running", len(c.owned), "takes", len(p.Takes), "releases", len(p.Releases))
	}
	for _, t := range p.Takes {
		c.take(t)
	}
	for _, key := range p.Releases {
		o := c.owned[key]
		if o == nil || !o.releasing.IsZero() {
			continue
		}
		o.releasing = time.Now()
		c.log.Info("handing off shard", "shard", key, "to", p.Assignment[key], "members", len(c.members))
		ctx.Send(o.pid, shardfsm.StopRequested{})
	}
}

func (c *coordinator) take(t Take) {
	c.taking[t.Lease.Key] = true
	deps, self, sys, cx := c.cfg.Deps, c.self, c.sys, c.ctx
	go func() {
		op, cancel := context.WithTimeout(cx, OpTimeout) // a hung take must not leave the shard "taking" for good
		defer cancel()
		l, err := deps.Store.Take(op, t.Lease, deps.Owner)
		if cx.Err() == nil {
			sys.Root.Send(self, takeResult{key: t.Lease.Key, lease: l, reason: t.Reason, err: err})
		}
	}()
}

func (c *coordinator) onTake(ctx actor.Context, r takeResult) {
	key := r.key
	delete(c.taking, key)
	m := c.cfg.Deps.Metrics
	if r.err != nil {
		res := "lost"
		if !errors.Is(r.err, lease.ErrLeaseLost) {
			res = "error"
			c.log.Warn("taking lease failed", "shard", key, "err", r.err)
		} else {
			c.log.Info("lease moved before we could take it", "shard", key)
		}
		m.LeaseWrites.WithLabelValues("take", res).Inc()
		c.maybeDoneStopping()
		c.startSync() // our copy of the row is stale: read it again
		return
	}
	m.LeaseWrites.WithLabelValues("take", "ok").Inc()
	m.LeaseTakes.WithLabelValues(r.reason).Inc()
	m.OwnershipChanges.Inc()
	if r.reason == TakeDeadOwner {
		if at, ok := c.goneAt[r.lease.Owner]; ok {
			m.ShardUnowned.Observe(time.Since(at).Seconds())
		}
	}
	c.leases[key] = r.lease
	delete(c.lost, key)
	c.log.Info("lease taken", "shard", key, "reason", r.reason, "counter", r.lease.Counter)
	pid, err := ctx.SpawnNamed(NewShardProps(c.cfg.Deps, r.lease), "shard-"+key)
	if err != nil {
		c.log.Error("cannot spawn shard actor", "shard", key, "err", err)
		return
	}
	ctx.Watch(pid)
	c.owned[key] = &ownedShard{pid: pid, checkpoint: r.lease.Checkpoint}
	m.LeasesHeld.Set(float64(len(c.owned)))
	if c.stopping {
		ctx.Send(pid, shardfsm.StopRequested{}) // taken while stopping: give it back the normal way
	}
}

func (c *coordinator) onFinished(ctx actor.Context, f ShardFinished) {
	m := c.cfg.Deps.Metrics
	o := c.owned[f.ShardID]
	switch f.Outcome {
	case shardfsm.Failed:
		c.failed[f.ShardID] = true // not taken again by this node
	case shardfsm.LostLease:
		c.lost[f.ShardID] = LostLease{At: time.Now()} // who took it shows at the next read
		delete(c.leases, f.ShardID)
		c.startSync()
	case shardfsm.Released, shardfsm.ShardEnd:
		l := c.leases[f.ShardID]
		l.Key, l.Owner, l.Counter = f.ShardID, "", f.Counter
		if f.Outcome == shardfsm.ShardEnd {
			l.Checkpoint = lease.Checkpoint{SequenceNumber: lease.CheckpointShardEnd}
		}
		c.leases[f.ShardID] = l
	}
	if o != nil && !o.releasing.IsZero() && f.Outcome == shardfsm.Released {
		m.HandoffDuration.Observe(time.Since(o.releasing).Seconds())
	}
	if f.Outcome == shardfsm.Released || f.Outcome == shardfsm.LostLease {
		m.OwnershipChanges.Inc()
	}
	c.forget(f.ShardID)
	if f.Outcome == shardfsm.Released && c.cfg.Gossip != nil {
		// Tell the new owner at once, so it need not wait for a read.
		p := PlanOwnership(c.view())
		if to := p.Assignment[f.ShardID]; to != "" && to != c.cfg.Deps.Owner {
			c.send(to, gossipMsg{Type: "released", Shard: f.ShardID, Counter: f.Counter, At: time.Now().UnixMilli(), From: c.cfg.Deps.Owner, Draining: c.stopping})
		}
	}
	if f.Outcome == shardfsm.ShardEnd {
		// Children become eligible now; the discovering node creates their
		// rows, and everyone reads the table.
		if c.cfg.Gossip != nil {
			c.broadcast(gossipMsg{Type: "shards"})
		}
		c.startSync()
		return
	}
	c.plan(ctx)
}

func (c *coordinator) send(to string, g gossipMsg) {
	b, _ := json.Marshal(g)
	gs := c.cfg.Gossip
	go func() {
		if err := gs.Send(to, b); err != nil {
			gs.Broadcast(b)
		}
	}()
}

func (c *coordinator) broadcast(g gossipMsg) {
	b, _ := json.Marshal(g)
	c.cfg.Gossip.Broadcast(b)
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

// sameMembers reports whether two views have the same members with the same
// meta (the inputs of the assignment).
func sameMembers(a, b []cluster.Member) bool {
	if len(a) != len(b) {
		return false
	}
	idx := make(map[string]cluster.Meta, len(a))
	for _, m := range a {
		idx[m.Name] = m.Meta
	}
	for _, m := range b {
		if meta, ok := idx[m.Name]; !ok || meta != m.Meta {
			return false
		}
	}
	return true
}
