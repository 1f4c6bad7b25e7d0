package engine

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/scheduler"

	"github.com/kinactor/kinactor/cluster"
	"github.com/kinactor/kinactor/internal/gossip"
	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/multistream"
	"github.com/kinactor/kinactor/internal/ownership"
	"github.com/kinactor/kinactor/internal/shardfsm"
)

// Gossip is what the coordinator needs from cluster membership;
// *cluster.Membership has it. UpdateMeta may block for a while (it waits
// for the update to be gossiped); the coordinator calls it off its mailbox.
type Gossip interface {
	Members() []cluster.Member
	Send(to string, payload []byte) error
	Broadcast(payload []byte) error
	UpdateMeta(cluster.Meta) error
}

// CoordinatorConfig configures the coordinator.
type CoordinatorConfig struct {
	Deps *Deps
	// Gossip, when set, makes this node one of a cluster: shards are
	// assigned over the live members and handed off gracefully. Nil: this
	// node takes every shard.
	Gossip Gossip
	// App identifies the application (table and stream) in gossip meta;
	// Meta is this node's own (weight, version, HTTP address).
	App  string
	Meta cluster.Meta
	// InitialCheckpoint is written into new lease rows of shards without
	// parents: TRIM_HORIZON, LATEST or AT_TIMESTAMP. Children of a known
	// parent always start at TRIM_HORIZON, so nothing after a reshard is lost.
	InitialCheckpoint string
	// SyncInterval: how often the discovering node lists shards and leases.
	SyncInterval time.Duration
	// FollowerSyncInterval: how often the other members read the lease
	// table when nothing happens (gossip events trigger reads at once).
	FollowerSyncInterval time.Duration
	// LeaseExpiry is how long a lease's counter must stand still before
	// another node takes it.
	LeaseExpiry time.Duration
	// StallTimeout: the node's own calls to a service failing this long
	// make it unhealthy on that service.
	StallTimeout time.Duration
	// TickInterval drives the ownership machine's deadlines (default 250ms).
	TickInterval time.Duration
	// LoadAware and the rest: assignment by measured load (see
	// ownership.Config).
	LoadAware         bool
	LoadThreshold     float64
	MaxLoadMoves      int
	RebalanceInterval time.Duration
	LoadCoolDown      time.Duration
	// Streams, for a multi-stream application: the set that Deps.Stream
	// reads through (lease keys are multi-stream keys), and the streams
	// consumed at start; StreamsChanged replaces them. Nil: one stream.
	Streams *multistream.Set
	Initial []multistream.Resolved
}

// Messages the coordinator accepts from outside.
type (
	// StopAll asks for a graceful stop of every shard actor. Done receives
	// the shards whose leases were left to expire (none after a clean stop)
	// and is then closed; after Timeout the stop gives up on the shards
	// still running.
	StopAll struct {
		Done    chan []string
		Timeout time.Duration
	}
	// StatusRequest asks for a snapshot; the reply is sent on Reply.
	StatusRequest struct{ Reply chan Status }
	// StreamsChanged makes Streams the streams a multi-stream application
	// consumes: a stream that left the set is released gracefully (its
	// rows are kept), one that joined it is listed at once.
	StreamsChanged struct{ Streams []multistream.Resolved }
	// MembershipChanged carries a gossip event and the view after it.
	MembershipChanged struct {
		Event   gossip.Event
		Members []cluster.Member
	}
)

// Status is a snapshot of the coordinator.
type Status struct {
	Owner     string        `json:"node"`
	Shards    []ShardStatus `json:"shards"`
	Unhealthy []string      `json:"unhealthy,omitempty"`
	Refused   []string      `json:"refused,omitempty"`
	// Maps: the ownership machine's map sizes (ownership.Machine.Sizes).
	Maps map[string]int `json:"maps,omitempty"`
	// Moves: this node's last ownership changes (at most MovesKept, none
	// older than MovesFor), oldest first.
	Moves []Move `json:"moves"`
	// Rows: the ownership machine's copy of the lease table, by key.
	Rows []lease.Lease `json:"-"`
}

// Move is one ownership change on this node.
type Move struct {
	At    time.Time `json:"at"`
	Shard string    `json:"shard"`
	// Kind: "take" (this node took the lease), "handoff" (it began to hand
	// the shard to another member), "release" (it released it, at a stop
	// or handoff), "lost" (a fenced write or a read showed another owner).
	Kind string `json:"kind"`
	// Reason: for a take, why (free, released, dead_owner, expired, own);
	// for a handoff, "assignment" or "stopping"; for a loss, the outcome.
	Reason string `json:"reason"`
	// Peer: the previous holder of a take, the assignee of a handoff.
	Peer string `json:"peer,omitempty"`
}

// How many moves a node keeps for status, and for how long.
const (
	MovesKept = 200
	MovesFor  = 15 * time.Minute
)

// LoadSampleInterval is how often the coordinator samples shard loads.
const LoadSampleInterval = 5 * time.Second

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
	// Load: what the shard's reads carry and its processor's busy
	// fraction, smoothed.
	Load Load `json:"load"`
}

// Results of the coordinator's asynchronous calls, and its timers.
type (
	coordTick    struct{}
	stopDeadline struct{}
	syncResult   struct{ done ownership.SyncDone }
	rowsResult   struct{ done ownership.RowsDone }
	takeResult   struct {
		prev string // the holder the take was conditional on
		done ownership.TakeDone
		sent TakeSent // when the take was sent, and the pause epoch then
	}
	probeResult struct{ done ownership.ProbeDone }
	proofResult struct{ done ownership.ProofDone }
	spawnFailed struct{ key string }
	ownedShard  struct {
		pid        *actor.PID
		state      shardfsm.State
		checkpoint lease.Checkpoint
		handoffAt  time.Time
	}
)

// stopBox is what a stop needs to survive a restart of the coordinator
// (a panic): who waits, and until when.
type stopBox struct {
	mu       sync.Mutex
	stopping bool
	deadline time.Time
	waiters  []chan []string
}

type coordinator struct {
	cfg CoordinatorConfig
	// initial: the initial position of each stream's new shards, by stream
	// id (multi-stream; read by the listing goroutines, replaced whole).
	initial atomic.Pointer[map[string]string]
	deps    *Deps
	box     *stopBox
	log     *slog.Logger
	self    *actor.PID
	sys     *actor.ActorSystem
	sched   *scheduler.TimerScheduler

	cancelTick func()
	cancelStop scheduler.CancelFunc
	ctx        context.Context
	cancel     context.CancelFunc
	metaCh     chan cluster.Meta
	sends      *sendQueue // direct gossip sends, in order per destination

	m       *ownership.Machine
	owned   map[string]*ownedShard
	takenAt map[string]TakeSent // when the take of a shard being spawned was sent, in which pause epoch
	gen     uint64
	ticks   int
	moves   []Move // ownership changes on this node, for status
	view    []cluster.Member
}

// NewCoordinatorProps returns the props of the coordinator: the thin shell
// of the ownership machine (package internal/ownership), which
// decides what to read, write, take and hand off; the shell carries it out
// and supervises one shard actor per owned shard. A shard actor that
// crashes is stopped and its lease (still ours in the table) taken again at
// once, with backoff if it keeps crashing. The coordinator itself may be
// restarted by its supervisor: its timers and calls end with the old
// instance, and a stop in progress carries on in the new one.
func NewCoordinatorProps(cfg CoordinatorConfig) *actor.Props {
	box := &stopBox{}
	return actor.PropsFromProducer(func() actor.Actor {
		return &coordinator{cfg: cfg, box: box}
	}, actor.WithSupervisor(actor.NewOneForOneStrategy(0, 0, func(reason any) actor.Directive {
		return actor.StopDirective
	})))
}

func (c *coordinator) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		c.start(ctx)
	case *actor.Stopping, *actor.Restarting:
		if c.cancelTick != nil {
			c.cancelTick()
		}
		if c.cancelStop != nil {
			c.cancelStop()
		}
		if c.cancel != nil {
			c.cancel()
		}
	case coordTick:
		c.ticks++
		if c.cfg.Gossip != nil && c.ticks%4 == 0 {
			// Events can be missed (those before this actor existed); the
			// view is cheap to read, so look at it every second.
			if ms := c.cfg.Gossip.Members(); !sameMembers(ms, c.view) {
				c.setView(ms)
				c.step(ctx, ownership.ViewChanged{Members: ms})
			}
		}
		if c.ticks%int(max(1, LoadSampleInterval/c.tickInterval())) == 0 {
			c.deps.Board.Sample(time.Now())
			c.shareLoads(ctx)
		}
		c.step(ctx, ownership.Tick{})
	case MembershipChanged:
		c.onMembership(ctx, msg)
	case StreamsChanged:
		c.onStreams(ctx, msg.Streams)
	case syncResult:
		c.step(ctx, msg.done)
	case rowsResult:
		c.step(ctx, msg.done)
	case takeResult:
		c.onTake(ctx, msg)
	case probeResult:
		c.step(ctx, msg.done)
	case proofResult:
		c.step(ctx, msg.done)
	case spawnFailed:
		c.step(ctx, ownership.ShardCrashed{Key: msg.key})
	case ShardStateChanged:
		if o := c.owned[msg.ShardID]; o != nil {
			o.state, o.checkpoint = msg.State, msg.Checkpoint
		}
	case shardWrote:
		c.step(ctx, ownership.ShardWrote{Lease: msg.lease})
	case shardAcked:
		c.step(ctx, ownership.ShardAcked{Key: msg.shardID, Checkpoint: msg.cp})
	case shardStalled:
		c.step(ctx, ownership.ShardHealth{Key: msg.shardID, Stalled: msg.cause != "", Cause: msg.cause})
	case ShardFinished:
		c.onFinished(ctx, msg)
	case *actor.Terminated:
		for id, o := range c.owned {
			if o.pid.Equal(msg.Who) {
				c.log.Warn("shard actor stopped without finishing; taking its lease again", "shard", id)
				delete(c.owned, id)
				c.deps.Metrics.LeasesHeld.Set(float64(len(c.owned)))
				c.step(ctx, ownership.ShardCrashed{Key: id})
			}
		}
	case StopAll:
		c.onStopAll(ctx, msg)
	case stopDeadline:
		c.step(ctx, ownership.StopDeadline{})
	case StatusRequest:
		msg.Reply <- c.status()
	}
}

func (c *coordinator) start(ctx actor.Context) {
	c.self, c.sys = ctx.Self(), ctx.ActorSystem()
	d := *c.cfg.Deps
	if d.Board == nil {
		d.Board = NewBoard()
	}
	c.deps = &d
	c.log = d.Logger
	c.sched = scheduler.NewTimerScheduler(c.sys.Root)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.owned = map[string]*ownedShard{}
	c.takenAt = map[string]TakeSent{}
	c.m = ownership.New(ownership.Config{
		Me:                   d.Owner,
		Clustered:            c.cfg.Gossip != nil,
		App:                  c.cfg.App,
		Meta:                 c.cfg.Meta,
		LeaseExpiry:          c.cfg.LeaseExpiry,
		StallTimeout:         c.cfg.StallTimeout,
		SyncInterval:         c.cfg.SyncInterval,
		FollowerSyncInterval: c.cfg.FollowerSyncInterval,
		InitialCheckpoint:    c.cfg.InitialCheckpoint,
		LoadAware:            c.cfg.LoadAware,
		LoadThreshold:        c.cfg.LoadThreshold,
		LoadMaxMoves:         c.cfg.MaxLoadMoves,
		RebalanceInterval:    c.cfg.RebalanceInterval,
		LoadCoolDown:         c.cfg.LoadCoolDown,
		MultiStream:          c.cfg.Streams != nil,
		Streams:              c.setStreams(c.cfg.Initial),
	})
	if c.cfg.Gossip != nil {
		c.metaCh = make(chan cluster.Meta, 1)
		go c.publishLoop(c.ctx, c.cfg.Gossip, c.metaCh)
		gs := c.cfg.Gossip
		c.sends = newSendQueue(gs.Send, func(b []byte) {
			if err := gs.Broadcast(b); err != nil {
				c.log.Warn("gossip broadcast refused", "err", err)
			}
		}, c.sentBytes, func(typ string) {
			if m := c.deps.Metrics; m != nil {
				m.GossipSendFailures.WithLabelValues(typ).Inc()
			}
		})
	}
	tick := c.tickInterval()
	c.cancelTick = sendEvery(tick, c.sys.Root, c.self, coordTick{})
	c.step(ctx, ownership.Started{})
	if c.cfg.Gossip != nil {
		ms := c.cfg.Gossip.Members()
		c.setView(ms)
		c.step(ctx, ownership.ViewChanged{Members: ms})
	}
	c.box.mu.Lock()
	stopping, deadline := c.box.stopping, c.box.deadline
	c.box.mu.Unlock()
	if stopping {
		// Restarted during a stop: carry on with it.
		c.step(ctx, ownership.StopAll{})
		c.cancelStop = c.sched.SendOnce(max(time.Until(deadline), 0), c.self, stopDeadline{})
	}
}

func (c *coordinator) setView(ms []cluster.Member) {
	c.view = ms
	c.deps.Metrics.ClusterMembers.Set(float64(len(ms)))
}

func (c *coordinator) onMembership(ctx actor.Context, msg MembershipChanged) {
	ev := msg.Event
	if ev.Kind == gossip.MessageReceived {
		var g ownership.Message
		if err := json.Unmarshal(ev.Payload, &g); err != nil {
			c.log.Warn("ignoring malformed gossip message", "from", ev.Member.Name, "err", err)
			c.refused(ownership.RefusedMalformed)
			return
		}
		if g.Type == ownership.MsgReleased && g.At > 0 && g.App == c.cfg.App { // not a stranger's
			c.deps.Metrics.ShardUnowned.Observe(max(0, time.Since(time.UnixMilli(g.At)).Seconds()))
		}
		c.step(ctx, ownership.MessageReceived{From: ev.Member.Name, Msg: g})
		return
	}
	if ev.Kind == gossip.SelfDeclaredDead {
		// Another member declared this node dead while it is alive: in
		// the others' eyes it is, and its shards are being taken. It
		// stops delivering at once rather than at its next lease write:
		// as after a pause, every shard delivers nothing more until a
		// lease write sent from now on succeeds (a lost lease then ends
		// the shard). One episode can bring several notices; each costs
		// every shard one write.
		c.log.Warn("declared dead by another member while alive: every shard verifies its lease before delivering more", "by", ev.Accuser)
		c.deps.Metrics.DeclaredDead.Inc()
		c.deps.Pauses.NewEpoch("declared dead by " + cmp.Or(ev.Accuser, "a member"))
		return
	}
	vc := ownership.ViewChanged{Members: msg.Members}
	switch ev.Kind {
	case gossip.MemberJoined:
		vc.Joined = []string{ev.Member.Name}
	case gossip.MemberLeft, gossip.MemberDied:
		vc.Gone = []string{ev.Member.Name}
		c.log.Info("member gone", "member", ev.Member.Name, "how", ev.Kind.String())
	}
	c.setView(msg.Members)
	c.step(ctx, vc)
}

func (c *coordinator) onTake(ctx actor.Context, r takeResult) {
	m := c.deps.Metrics
	d := r.done
	switch {
	case d.Err == nil:
		m.LeaseWrites.WithLabelValues("take", "ok").Inc()
		m.LeaseTakes.WithLabelValues(d.Reason).Inc()
		m.OwnershipChanges.Inc()
		c.takenAt[d.Key] = r.sent
		c.moved(Move{Shard: d.Key, Kind: "take", Reason: d.Reason, Peer: r.prev})
		c.log.Info("lease taken", "shard", d.Key, "reason", d.Reason, "counter", d.Lease.Counter)
	case d.LostRace:
		m.LeaseWrites.WithLabelValues("take", "lost").Inc()
	default:
		m.LeaseWrites.WithLabelValues("take", "error").Inc()
	}
	c.step(ctx, d)
}

func (c *coordinator) onFinished(ctx actor.Context, f ShardFinished) {
	o := c.owned[f.ShardID]
	if o == nil {
		return
	}
	// Stop it now that ShardFinished was read, so that Terminated (a
	// system message, delivered first) cannot overtake it.
	ctx.Stop(o.pid)
	delete(c.owned, f.ShardID)
	m := c.deps.Metrics
	m.LeasesHeld.Set(float64(len(c.owned)))
	if !o.handoffAt.IsZero() && f.Outcome == shardfsm.Released {
		m.HandoffDuration.Observe(time.Since(o.handoffAt).Seconds())
	}
	if f.Outcome == shardfsm.Released || f.Outcome == shardfsm.LeaseLost || f.Outcome == shardfsm.Fenced {
		m.OwnershipChanges.Inc()
		kind := "lost"
		if f.Outcome == shardfsm.Released {
			kind = "release"
		}
		c.moved(Move{Shard: f.ShardID, Kind: kind, Reason: f.Outcome.String()})
	}
	cause := f.Cause
	if f.Outcome == shardfsm.Fenced {
		cause = ownership.ServiceDynamoDB
	}
	if f.Outcome == shardfsm.Unreadable {
		cause = ownership.ServiceKinesis
	}
	c.step(ctx, ownership.ShardFinished{Key: f.ShardID, Outcome: f.Outcome, Counter: f.Counter, Cause: cause})
}

func (c *coordinator) onStopAll(ctx actor.Context, msg StopAll) {
	c.box.mu.Lock()
	first := !c.box.stopping
	if first {
		c.box.stopping = true
		c.box.deadline = time.Now().Add(msg.Timeout)
	}
	if msg.Done != nil {
		c.box.waiters = append(c.box.waiters, msg.Done)
	}
	c.box.mu.Unlock()
	if first {
		if msg.Timeout > 0 {
			c.cancelStop = c.sched.SendOnce(msg.Timeout, c.self, stopDeadline{})
		}
		c.step(ctx, ownership.StopAll{})
		return
	}
	if c.m.Stopping() && len(c.owned) == 0 {
		c.closeWaiters(nil) // already done
	}
}

func (c *coordinator) closeWaiters(left []string) {
	c.box.mu.Lock()
	ws := c.box.waiters
	c.box.waiters = nil
	c.box.mu.Unlock()
	for _, w := range ws {
		w <- left
		close(w)
	}
}

// step feeds one event to the machine and carries out the effects.
func (c *coordinator) step(ctx actor.Context, ev ownership.Event) {
	for _, eff := range c.m.Step(time.Now(), ev) {
		c.run(ctx, eff)
	}
}

func (c *coordinator) run(ctx actor.Context, eff ownership.Effect) {
	deps := c.deps
	switch e := eff.(type) {
	case ownership.Sync:
		c.async(2*OpTimeout, func(op context.Context) any {
			d := ownership.SyncDone{Seq: e.Seq}
			if e.List {
				d.Listed = true
				initial := *c.initial.Load()
				shards, err := deps.Stream.ListShards(op)
				d.ListErr = err
				for _, s := range shards {
					d.Shards = append(d.Shards, ownership.Shard{ID: s.ID, Parents: s.Parents(), Closed: s.Closed(), StartingHashKey: s.StartingHashKey, EndingHashKey: s.EndingHashKey, Initial: initial[multistream.StreamOf(s.ID)]})
				}
			}
			if e.ListOnly {
				d.Unread = true
				return syncResult{done: d}
			}
			d.Leases, d.ReadErr = deps.Store.List(op)
			return syncResult{done: d}
		})
	case ownership.WriteRows:
		c.async(2*OpTimeout, func(op context.Context) any {
			d := ownership.RowsDone{Seq: e.Seq}
			for _, l := range e.Create {
				if err := deps.Store.Create(op, l); err != nil && !errors.Is(err, lease.ErrExists) {
					d.Err = err
					return rowsResult{done: d}
				}
				d.Changed = true
			}
			for _, l := range e.Delete {
				// Every child has checkpointed past its start, or the stream
				// no longer lists the shard: the row is no longer needed (a
				// child's parent check treats a missing row as done).
				if err := deps.Store.Delete(op, l); err != nil && !errors.Is(err, lease.ErrLeaseLost) && !errors.Is(err, lease.ErrNotFound) {
					d.Err = err
					return rowsResult{done: d}
				}
				d.Changed = true
			}
			return rowsResult{done: d}
		})
	case ownership.Take:
		if e.Reason == ownership.TakeDeadOwner && e.UnownedFor > 0 {
			deps.Metrics.ShardUnowned.Observe(e.UnownedFor.Seconds())
		}
		c.async(OpTimeout, func(op context.Context) any {
			// The epoch before the time: a pause from here on to the
			// shard actor's start makes it verify before delivering.
			sent := TakeSent{Epoch: deps.Pauses.Mark()}
			sent.At = time.Now()
			l, err := deps.Store.Take(op, e.Lease, deps.Owner, lease.TakeOptions{Resume: e.Resume, Identity: deps.Identity})
			return takeResult{prev: e.Lease.Owner, sent: sent, done: ownership.TakeDone{Key: e.Lease.Key, Reason: e.Reason, Lease: l, Err: err, LostRace: errors.Is(err, lease.ErrLeaseLost)}}
		})
	case ownership.Spawn:
		c.spawn(ctx, e.Lease)
	case ownership.Handoff:
		if o := c.owned[e.Key]; o != nil {
			o.handoffAt = time.Now()
			reason := "stopping"
			if e.To == "" && e.Reason != "" {
				reason = e.Reason
				c.log.Info("releasing shard", "shard", e.Key, "reason", reason)
			}
			if e.To != "" {
				reason = "assignment"
				if e.Reason != "" {
					reason = e.Reason
				}
				c.log.Info("handing off shard", "shard", e.Key, "to", e.To, "reason", reason)
			}
			c.moved(Move{Shard: e.Key, Kind: "handoff", Reason: reason, Peer: e.To})
			ctx.Send(o.pid, shardfsm.StopRequested{})
		}
	case ownership.Send:
		if e.Msg.Type == ownership.MsgReleased {
			e.Msg.At = time.Now().UnixMilli()
		}
		c.sends.send(e.To, e.Msg) // a failed heartbeat is dropped, a failed release broadcast
	case ownership.Refused:
		c.refused(e.Reason)
	case ownership.Broadcast:
		b, _ := json.Marshal(e.Msg)
		c.sentBytes(e.Msg.Type, len(b))
		if err := c.cfg.Gossip.Broadcast(b); err != nil {
			c.log.Warn("gossip broadcast refused", "type", e.Msg.Type, "err", err)
		}
	case ownership.PublishMeta:
		select { // the newest meta wins
		case <-c.metaCh:
		default:
		}
		c.metaCh <- e.Meta
	case ownership.Probe:
		c.async(OpTimeout, func(op context.Context) any {
			var err error
			switch e.Service {
			case ownership.ServiceDynamoDB:
				if _, err = deps.Store.Get(op, "kinactor-probe"); errors.Is(err, lease.ErrNotFound) {
					err = nil
				}
			case ownership.ServiceKinesis:
				_, err = deps.Stream.ListShards(op)
			}
			return probeResult{done: ownership.ProbeDone{Service: e.Service, Err: err}}
		})
	case ownership.ProveDead:
		self := deps.Identity
		c.async(2*ProofTimeout, func(op context.Context) any {
			dead, how := ProveDead(op, e.Identity, self)
			return proofResult{done: ownership.ProofDone{Owner: e.Owner, Dead: dead, How: how}}
		})
	case ownership.StopDone:
		if len(e.Left) > 0 {
			c.log.Warn("stop ran out of time; leases left to expire", "shards", strings.Join(e.Left, ","))
			for _, k := range e.Left {
				if o := c.owned[k]; o != nil {
					ctx.Stop(o.pid)
				}
			}
		}
		c.closeWaiters(e.Left)
	case ownership.Note:
		c.log.Log(context.Background(), slog.Level(e.Level), e.Msg, e.Args...)
	}
}

// spawn starts the shard actor of a lease just taken, under a fresh name
// (an earlier actor of the same shard may still be stopping: a processor
// that never returns keeps its parent from terminating).
func (c *coordinator) spawn(ctx actor.Context, l lease.Lease) {
	c.gen++
	takenAt := c.takenAt[l.Key]
	delete(c.takenAt, l.Key)
	pid, err := ctx.SpawnNamed(NewShardProps(c.deps, l, takenAt), fmt.Sprintf("shard-%s-%d", l.Key, c.gen))
	if err != nil {
		c.log.Error("cannot spawn shard actor", "shard", l.Key, "err", err)
		ctx.Send(c.self, spawnFailed{key: l.Key})
		return
	}
	ctx.Watch(pid)
	c.owned[l.Key] = &ownedShard{pid: pid, checkpoint: l.Checkpoint}
	c.deps.Metrics.LeasesHeld.Set(float64(len(c.owned)))
}

// async runs f off the actor, bounded by timeout, and sends its result
// back; nothing is sent once the coordinator stopped.
func (c *coordinator) async(timeout time.Duration, f func(context.Context) any) {
	self, sys, cx := c.self, c.sys, c.ctx
	go func() {
		op, cancel := context.WithTimeout(cx, timeout) // a hung call must not stall the coordinator's plans
		defer cancel()
		res := f(op)
		if cx.Err() == nil {
			sys.Root.Send(self, res)
		}
	}()
}

// publishLoop gossips this node's meta, newest first, off the mailbox.
func (c *coordinator) publishLoop(ctx context.Context, gs Gossip, ch chan cluster.Meta) {
	for {
		select {
		case <-ctx.Done():
			return
		case meta := <-ch:
			if err := gs.UpdateMeta(meta); err != nil {
				c.log.Warn("could not gossip node meta", "err", err)
			}
		}
	}
}

func (c *coordinator) status() Status {
	s := Status{Owner: c.deps.Owner, Unhealthy: c.m.Unhealthy(), Refused: c.m.Refused(), Maps: c.m.Sizes(), Rows: c.m.Rows()}
	views := map[string]ShardView{}
	for _, v := range c.deps.Board.Shards() {
		views[v.ShardID] = v
	}
	now := time.Now()
	for id, o := range c.owned {
		st := o.state.String()
		if o.state == 0 {
			st = "Starting"
		}
		ss := ShardStatus{ShardID: id, State: st, Checkpoint: o.checkpoint.SequenceNumber}
		if v, ok := views[id]; ok {
			ss.Load = v.Load
			ss.MillisBehindLatest = v.MillisBehindLatest
			ss.SinceProgress = now.Sub(v.LastProgress).Seconds()
			ss.Stalled, ss.StallCause = v.StalledOn != "", v.StalledOn
		}
		s.Shards = append(s.Shards, ss)
	}
	slices.SortFunc(s.Shards, func(a, b ShardStatus) int { return strings.Compare(a.ShardID, b.ShardID) })
	c.trimMoves(now)
	s.Moves = append([]Move{}, c.moves...)
	return s
}

func (c *coordinator) tickInterval() time.Duration {
	if c.cfg.TickInterval <= 0 {
		return 250 * time.Millisecond
	}
	return c.cfg.TickInterval
}

// shareLoads gives the ownership machine the measured loads of the shards
// running here (it shares them by gossip when assigning by load).
func (c *coordinator) shareLoads(ctx actor.Context) {
	loads := map[string]float64{}
	for _, v := range c.deps.Board.Shards() {
		if _, ok := c.owned[v.ShardID]; ok && v.Load.Measured {
			loads[v.ShardID] = v.Load.Weight()
			c.deps.Metrics.ShardLoad.WithLabelValues(c.deps.shardLabels(v.ShardID)).Set(v.Load.Weight())
		}
	}
	c.step(ctx, ownership.LoadSampled{Loads: loads})
	for _, mv := range c.m.TakeLoadMoves() {
		c.log.Info("moving shard for load", "shard", mv.Shard, "to", mv.To, "why", mv.Reason)
	}
}

// moved records one ownership change for status.
func (c *coordinator) moved(mv Move) {
	mv.At = time.Now()
	c.moves = append(c.moves, mv)
	c.trimMoves(mv.At)
}

// trimMoves keeps the last MovesKept moves of the last MovesFor.
func (c *coordinator) trimMoves(now time.Time) {
	drop := 0
	for drop < len(c.moves) && (len(c.moves)-drop > MovesKept || now.Sub(c.moves[drop].At) > MovesFor) {
		drop++
	}
	if drop > 0 {
		c.moves = append(c.moves[:0], c.moves[drop:]...)
	}
}

// sameMembers reports whether two views have the same members with the same
// state and meta (the inputs of the assignment).
func sameMembers(a, b []cluster.Member) bool {
	if len(a) != len(b) {
		return false
	}
	idx := make(map[string]cluster.Member, len(a))
	for _, m := range a {
		idx[m.Name] = m
	}
	for _, m := range b {
		x, ok := idx[m.Name]
		if !ok || x.State != m.State || !x.Meta.Equal(m.Meta) {
			return false
		}
	}
	return true
}

// refused counts a gossip message refused (kinactor_gossip_refused_total).
func (c *coordinator) refused(reason string) {
	if m := c.deps.Metrics; m != nil {
		m.GossipRefused.WithLabelValues(reason).Inc()
	}
}

// sentBytes counts the payload bytes of an ownership message sent.
func (c *coordinator) sentBytes(typ string, n int) {
	if m := c.deps.Metrics; m != nil {
		m.GossipSentBytes.WithLabelValues(typ).Add(float64(n))
	}
}

// sendEvery sends msg to pid every interval until the returned function is
// called (which may be called more than once). protoactor's
// scheduler.SendRepeatedly reads its cancel flag without synchronisation,
// a data race with its CancelFunc (seen under -race when a tick fires as
// the coordinator stops); this is a plain ticker on a goroutine of its own.
func sendEvery(interval time.Duration, sender actor.SenderContext, pid *actor.PID, msg any) func() {
	stop := make(chan struct{})
	var once sync.Once
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				sender.Send(pid, msg)
			}
		}
	}()
	return func() { once.Do(func() { close(stop) }) }
}

// setStreams records the initial positions of streams and returns their
// ids, for the machine.
func (c *coordinator) setStreams(streams []multistream.Resolved) []string {
	ids := make([]string, 0, len(streams))
	initial := make(map[string]string, len(streams))
	for _, r := range streams {
		ids = append(ids, r.ID.String())
		if r.InitialPosition != "" {
			initial[r.ID.String()] = r.InitialPosition
		}
	}
	c.initial.Store(&initial)
	return ids
}

// onStreams applies a new set of streams. The Set reads the union of the
// old and the new set while the machine learns of the change, and only
// the new one after: no listing misses a stream the machine still counts
// as consumed (its rows would be judged gone), and a stream that joined
// is listed by the read the machine asks for at once.
func (c *coordinator) onStreams(ctx actor.Context, streams []multistream.Resolved) {
	if c.cfg.Streams == nil {
		c.log.Warn("a change of streams sent to a single-stream node was ignored")
		return
	}
	union := slices.Clone(streams)
	for _, id := range c.cfg.Streams.Resolved() {
		if !slices.ContainsFunc(union, func(r multistream.Resolved) bool { return r.ID == id.ID }) {
			union = append(union, id)
		}
	}
	c.cfg.Streams.Update(union)
	ids := c.setStreams(streams)
	c.step(ctx, ownership.StreamsChanged{Streams: ids})
	c.cfg.Streams.Update(streams)
}
