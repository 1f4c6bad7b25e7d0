// Package clusterrun runs a local kinactor cluster of real `kinactor node`
// processes for tests, the demo, benchmarks and chaos runs.
//
// Build compiles the binary; Start prepares a work directory (ledgers, ready
// files, logs) and starts the first nodes; AddNode, Kill and Term start and
// stop single nodes, Pause and Resume freeze and thaw one (SIGSTOP,
// SIGCONT), and each records what happened when, as Events for Analyze.
// Close stops every process the Cluster started.
package clusterrun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kinactor/kinactor"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
)

// Build runs `go build -o dir/kinactor ./cmd/kinactor` in the module root
// (found by walking up from the working directory) and returns the
// binary's path.
func Build(ctx context.Context, dir string) (string, error) {
	root, err := localaws.ModuleRoot()
	if err != nil {
		return "", fmt.Errorf("clusterrun: %w", err)
	}
	bin, err := filepath.Abs(filepath.Join(dir, "kinactor"))
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/kinactor")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("clusterrun: go build: %v\n%s", err, out)
	}
	return bin, nil
}

// Options configure a Cluster.
type Options struct {
	Bin    string // the kinactor binary
	Dir    string // work directory: ledger/, ready/, logs/
	App    string // --app
	Stream string // --stream
	// StreamFile, instead of Stream: --stream-file (the set of streams of
	// a multi-stream application, read again while running).
	StreamFile string
	// Env is added to the nodes' environment (os.Environ()):
	// AWS_ENDPOINT_URL_KINESIS, AWS_ENDPOINT_URL_DYNAMODB, AWS_REGION,
	// credentials.
	Env []string
	// NodeEnv, when set, is called with each node's name before it starts
	// and returns more environment for that node alone (after Env, so it
	// overrides it), e.g. its own endpoints behind per-node proxies. An
	// error fails AddNode.
	NodeEnv func(name string) ([]string, error)
	// ExtraArgs are appended to every node's arguments.
	ExtraArgs []string
	// Nodes is how many nodes Start starts (one after another, each
	// joining the ones before).
	Nodes int
	// ReadyTimeout bounds how long AddNode waits for a node's ready file
	// (default 60s).
	ReadyTimeout time.Duration
	// StopTimeout bounds how long Term waits for a node to exit (default
	// 60s).
	StopTimeout time.Duration
	// NamePrefix starts the nodes' names (default "n": n1, n2, ...); two
	// clusters on one gossip network need different prefixes.
	NamePrefix string
}

// EventKind says what happened to a node.
type EventKind string

// The event kinds.
const (
	EventStart  EventKind = "start"
	EventKill   EventKind = "kill"
	EventTerm   EventKind = "term"
	EventPause  EventKind = "pause"
	EventResume EventKind = "resume"
)

// Event is a node started (ready), killed (SIGKILL sent), terminated
// (SIGTERM sent), paused (SIGSTOP sent) or resumed (SIGCONT sent).
type Event struct {
	Kind EventKind
	Node string
	At   time.Time
}

// Proc is one `kinactor node` process.
type Proc struct {
	Name    string
	Gossip  string // gossip host:port
	HTTP    string // host:port of /status, /metrics
	PID     int
	Log     string // path of its stdout+stderr
	Started time.Time

	cmd     *exec.Cmd
	logFile *os.File
	exited  chan struct{}
	reap    chan struct{} // closed when the process may be waited for (Unreaped)
	reaped  sync.Once
	waitErr error       // set before exited is closed
	stopped bool        // Kill or Term was called
	paused  atomic.Bool // Pause was called and Resume not yet
}

// release lets the process be waited for (reaped) once it exits.
func (p *Proc) release() { p.reaped.Do(func() { close(p.reap) }) }

// Exited is closed once the process has exited.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// Running reports whether the process has not exited.
func (p *Proc) Running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Paused reports whether the process is stopped by Pause.
func (p *Proc) Paused() bool { return p.paused.Load() }

// LogTail returns the last n bytes of the node's log.
func (p *Proc) LogTail(n int) string {
	b, err := os.ReadFile(p.Log)
	if err != nil {
		return ""
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// Cluster is a set of node processes sharing a work directory.
type Cluster struct {
	opts   Options
	client *http.Client

	mu      sync.Mutex
	procs   []*Proc // every process started, in order
	events  []Event
	counter int
}

// Start creates the work directory and starts opts.Nodes nodes. On error
// the nodes started are stopped again.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Bin == "" || opts.Dir == "" || opts.App == "" || (opts.Stream == "") == (opts.StreamFile == "") {
		return nil, errors.New("clusterrun: Options need Bin, Dir, App and one of Stream and StreamFile")
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = 60 * time.Second
	}
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = 60 * time.Second
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	opts.Dir = dir
	for _, d := range []string{opts.LedgerDir(), filepath.Join(dir, "ready"), filepath.Join(dir, "logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("clusterrun: %w", err)
		}
	}
	c := &Cluster{opts: opts, client: &http.Client{Timeout: 10 * time.Second}}
	for i := 0; i < opts.Nodes; i++ {
		if _, err := c.AddNode(ctx); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// LedgerDir is where the nodes write their ledgers.
func (o Options) LedgerDir() string { return filepath.Join(o.Dir, "ledger") }

// LedgerDir is where the nodes write their ledgers.
func (c *Cluster) LedgerDir() string { return c.opts.LedgerDir() }

// Dir is the work directory.
func (c *Cluster) Dir() string { return c.opts.Dir }

// AddNode starts a node named n<k> (NamePrefix<k>; k counts every node
// ever started, so a replacement gets a new name), joining the gossip addresses of the
// running nodes, and waits until it has written its ready file.
func (c *Cluster) AddNode(ctx context.Context) (*Proc, error) {
	return c.AddNodeWith(ctx, NodeOptions{})
}

// NodeOptions vary one node of AddNodeWith.
type NodeOptions struct {
	// DefaultName leaves --name out: the node picks its own name
	// (hostname-pid-random), as a restarted deployment does. Proc.Name is
	// that name once the node is ready; its log and ready file are named
	// n<k>.
	DefaultName bool
	// Single runs the node without gossip (no --bind, no --join).
	Single bool
	// Alone starts a gossip cluster of its own (no --join).
	Alone bool
	// Args are appended after Options.ExtraArgs.
	Args []string
	// Unreaped: the process is not reaped (waited for) when it exits until
	// KillToZombie's reap is called: killed, it stays a zombie, as a
	// process whose parent has not reaped it yet does. Only KillToZombie
	// may kill such a node.
	Unreaped bool
	// Started, when set, is called with the process as soon as it has
	// been started, before it is ready (its Name, PID and Log are set;
	// Gossip and HTTP are not yet): e.g. to watch its log from the first
	// line. It must not block.
	Started func(*Proc)
}

// AddNodeWith starts a node as AddNode does, varied by o.
func (c *Cluster) AddNodeWith(ctx context.Context, o NodeOptions) (*Proc, error) {
	c.mu.Lock()
	c.counter++
	prefix := c.opts.NamePrefix
	if prefix == "" {
		prefix = "n"
	}
	name := fmt.Sprintf("%s%d", prefix, c.counter)
	var join []string
	for _, p := range c.procs {
		if p.Running() && !p.stopped && p.Gossip != "" {
			join = append(join, p.Gossip)
		}
	}
	c.mu.Unlock()

	ready := filepath.Join(c.opts.Dir, "ready", name+".json")
	logPath := filepath.Join(c.opts.Dir, "logs", name+".log")
	streamFlag, streamArg := "--stream", c.opts.Stream
	if c.opts.StreamFile != "" {
		streamFlag, streamArg = "--stream-file", c.opts.StreamFile
	}
	args := []string{"node", "--app", c.opts.App, streamFlag, streamArg,
		"--http", "127.0.0.1:0",
		"--processor", "ledger", "--ledger-dir", c.opts.LedgerDir(),
		"--ready-file", ready}
	if !o.DefaultName {
		args = append(args, "--name", name)
	}
	if !o.Single {
		args = append(args, "--bind", "127.0.0.1:0")
		if len(join) > 0 && !o.Alone {
			args = append(args, "--join", strings.Join(join, ","))
		}
	}
	args = append(args, c.opts.ExtraArgs...)
	args = append(args, o.Args...)
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("clusterrun: %w", err)
	}
	env := append(os.Environ(), c.opts.Env...)
	if c.opts.NodeEnv != nil {
		more, err := c.opts.NodeEnv(name)
		if err != nil {
			lf.Close()
			return nil, fmt.Errorf("clusterrun: environment of %s: %w", name, err)
		}
		env = append(env, more...)
	}
	cmd := exec.Command(c.opts.Bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("clusterrun: starting %s: %w", name, err)
	}
	p := &Proc{Name: name, PID: cmd.Process.Pid, Log: logPath, cmd: cmd, logFile: lf, exited: make(chan struct{}), reap: make(chan struct{})}
	if !o.Unreaped {
		p.release()
	}
	go func() {
		<-p.reap
		p.waitErr = cmd.Wait()
		lf.Close()
		close(p.exited)
	}()
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	if o.Started != nil {
		o.Started(p)
	}

	deadline := time.NewTimer(c.opts.ReadyTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if b, err := os.ReadFile(ready); err == nil {
			var r struct {
				Node   string `json:"node"`
				Gossip string `json:"gossip"`
				HTTP   string `json:"http"`
				PID    int    `json:"pid"`
			}
			if err := json.Unmarshal(b, &r); err == nil && r.HTTP != "" {
				c.mu.Lock()
				p.Gossip, p.HTTP, p.Started = r.Gossip, r.HTTP, time.Now()
				if r.Node != "" && r.Node != p.Name {
					p.Name = r.Node // the node's own name (DefaultName)
				}
				c.events = append(c.events, Event{Kind: EventStart, Node: p.Name, At: p.Started})
				c.mu.Unlock()
				return p, nil
			}
		}
		select {
		case <-p.exited:
			return nil, fmt.Errorf("clusterrun: node %s exited before ready (%v); log tail:\n%s", name, p.waitErr, p.LogTail(4096))
		case <-deadline.C:
			c.kill(p)
			return nil, fmt.Errorf("clusterrun: node %s not ready within %s; log tail:\n%s", name, c.opts.ReadyTimeout, p.LogTail(4096))
		case <-ctx.Done():
			c.kill(p)
			return nil, fmt.Errorf("clusterrun: node %s: %w", name, ctx.Err())
		case <-tick.C:
		}
	}
}

func (c *Cluster) kill(p *Proc) {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// KillToZombie sends SIGKILL to p, a node started Unreaped, records the
// time as a kill event and waits until the process is a zombie (state Z
// in /proc/PID/stat: dead, not reaped); reap lets it be waited for.
func (c *Cluster) KillToZombie(p *Proc) (reap func(), err error) {
	c.mu.Lock()
	p.stopped = true
	at := time.Now()
	err = p.cmd.Process.Signal(syscall.SIGKILL)
	c.events = append(c.events, Event{Kind: EventKill, Node: p.Name, At: at})
	c.mu.Unlock()
	reap = func() { p.release(); <-p.exited }
	if err != nil {
		return reap, fmt.Errorf("clusterrun: kill %s: %w", p.Name, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.PID))
		if i := strings.LastIndexByte(string(b), ')'); err == nil && i > 0 && strings.HasPrefix(strings.TrimSpace(string(b[i+1:])), "Z") {
			return reap, nil
		}
		if time.Now().After(deadline) {
			return reap, fmt.Errorf("clusterrun: %s not a zombie 10s after SIGKILL", p.Name)
		}
		time.Sleep(5 * time.Millisecond) // polling /proc: there is nothing to wait on
	}
}

// Kill sends SIGKILL to p, records the time as a kill event and waits
// until the process is gone.
func (c *Cluster) Kill(p *Proc) error {
	c.mu.Lock()
	p.stopped = true
	at := time.Now()
	err := p.cmd.Process.Signal(syscall.SIGKILL)
	c.events = append(c.events, Event{Kind: EventKill, Node: p.Name, At: at})
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("clusterrun: kill %s: %w", p.Name, err)
	}
	<-p.exited
	return nil
}

// Term sends SIGTERM to p (a graceful leave), records the time as a term
// event and waits for it to exit; a non-zero exit status or no exit within
// the stop timeout is an error (then the process is killed).
func (c *Cluster) Term(p *Proc) error {
	c.mu.Lock()
	p.stopped = true
	at := time.Now()
	err := p.cmd.Process.Signal(syscall.SIGTERM)
	c.events = append(c.events, Event{Kind: EventTerm, Node: p.Name, At: at})
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("clusterrun: term %s: %w", p.Name, err)
	}
	t := time.NewTimer(c.opts.StopTimeout)
	defer t.Stop()
	select {
	case <-p.exited:
	case <-t.C:
		c.kill(p)
		return fmt.Errorf("clusterrun: node %s did not exit within %s of SIGTERM; log tail:\n%s", p.Name, c.opts.StopTimeout, p.LogTail(4096))
	}
	if p.waitErr != nil {
		return fmt.Errorf("clusterrun: node %s exited after SIGTERM: %v; log tail:\n%s", p.Name, p.waitErr, p.LogTail(4096))
	}
	return nil
}

// Pause sends SIGSTOP to p and records the time as a pause event: the
// process stays, frozen, until Resume (or Close, which kills it). Owners
// leaves a paused node out.
func (c *Cluster) Pause(p *Proc) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !p.Running() {
		return fmt.Errorf("clusterrun: pause %s: not running", p.Name)
	}
	at := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return fmt.Errorf("clusterrun: pause %s: %w", p.Name, err)
	}
	p.paused.Store(true)
	c.events = append(c.events, Event{Kind: EventPause, Node: p.Name, At: at})
	return nil
}

// Resume sends SIGCONT to a paused p and records the time as a resume
// event.
func (c *Cluster) Resume(p *Proc) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	at := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		return fmt.Errorf("clusterrun: resume %s: %w", p.Name, err)
	}
	p.paused.Store(false)
	c.events = append(c.events, Event{Kind: EventResume, Node: p.Name, At: at})
	return nil
}

// Nodes returns the running nodes that were not stopped, in start order
// (paused ones too).
func (c *Cluster) Nodes() []*Proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ps []*Proc
	for _, p := range c.procs {
		if p.Running() && !p.stopped && p.HTTP != "" {
			ps = append(ps, p)
		}
	}
	return ps
}

// All returns every process started, in start order.
func (c *Cluster) All() []*Proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Proc(nil), c.procs...)
}

// Events returns the start, kill, term, pause and resume events so far, in
// order.
func (c *Cluster) Events() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Event(nil), c.events...)
}

// Status gets and decodes p's /status.
func (c *Cluster) Status(ctx context.Context, p *Proc) (kinactor.NodeStatus, error) {
	var st kinactor.NodeStatus
	b, err := c.get(ctx, p, "/status")
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("clusterrun: %s /status: %w", p.Name, err)
	}
	return st, nil
}

func (c *Cluster) get(ctx context.Context, p *Proc, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.HTTP+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("clusterrun: %s %s: %w", p.Name, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("clusterrun: %s %s: %w", p.Name, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("clusterrun: %s %s: HTTP %d: %s", p.Name, path, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return b, nil
}

// Owners asks every running node for its /status and returns shard →
// owning node names (more than one while views disagree). Nodes that do
// not answer are left out and reported in the error; paused nodes are left
// out silently (they cannot answer).
func (c *Cluster) Owners(ctx context.Context) (map[string][]string, error) {
	owners := map[string][]string{}
	var errs []error
	for _, p := range c.Nodes() {
		if p.Paused() {
			continue
		}
		st, err := c.Status(ctx, p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, s := range st.Shards {
			owners[s.LeaseKey()] = append(owners[s.LeaseKey()], p.Name) // lease keys: shard ids repeat across streams
		}
	}
	return owners, errors.Join(errs...)
}

// Close kills every process still running and waits for it to exit.
func (c *Cluster) Close() {
	for _, p := range c.All() {
		if p.Running() {
			_ = p.cmd.Process.Signal(syscall.SIGKILL)
		}
		p.release()
		<-p.exited
	}
}

// Grow waits until the running node(s) own all shards, then adds nodes
// until there are total, and waits until the shards are spread over them.
// Starting with one node lets it create the lease rows alone.
func (c *Cluster) Grow(ctx context.Context, total, shards int, timeout time.Duration) error {
	if _, err := c.WaitBalanced(ctx, shards, timeout); err != nil {
		return err
	}
	for len(c.Nodes()) < total {
		if _, err := c.AddNode(ctx); err != nil {
			return err
		}
	}
	_, err := c.WaitBalanced(ctx, shards, timeout)
	return err
}

// WaitBalanced polls the running nodes' /status until each of the shards
// shards is owned by exactly one node and none owns more than ⌈S/N⌉ (the
// assignment's cap; it sets no minimum, so ⌊S/N⌋ is not guaranteed), or
// until timeout. It returns the last owners
// seen.
func (c *Cluster) WaitBalanced(ctx context.Context, shards int, timeout time.Duration) (map[string][]string, error) {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		owners, err := c.Owners(ctx)
		if err == nil {
			err = balanced(owners, shards, c.Nodes())
		}
		if err == nil {
			return owners, nil
		}
		if time.Now().After(deadline) {
			return owners, fmt.Errorf("clusterrun: not balanced within %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return owners, ctx.Err()
		case <-tick.C:
		}
	}
}

func balanced(owners map[string][]string, shards int, nodes []*Proc) error {
	if len(nodes) == 0 {
		return errors.New("no nodes")
	}
	count := map[string]int{}
	for s, os := range owners {
		if len(os) != 1 {
			return fmt.Errorf("shard %s owned by %v", s, os)
		}
		count[os[0]]++
	}
	if len(owners) != shards {
		return fmt.Errorf("%d of %d shards owned: %v", len(owners), shards, owners)
	}
	hi := (shards + len(nodes) - 1) / len(nodes)
	for _, p := range nodes {
		if n := count[p.Name]; n > hi {
			return fmt.Errorf("node %s owns %d shards (want at most %d): %v", p.Name, n, hi, owners)
		}
	}
	return nil
}
