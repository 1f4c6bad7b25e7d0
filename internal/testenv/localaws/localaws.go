// Package localaws owns starting and stopping the local AWS servers for tests,
// the demo and `kinactor local`; never used in production paths.
//
// The servers are installed by `make deps` (tools/localaws/install.sh) into
// tools/localaws: kinesis-mock, kinesalite and dynalite from npm, DynamoDB
// Local from the jar in the amplify-dynamodb-simulator npm package. Every
// server runs in memory on a loopback port, with create/delete/update delays of
// zero and raised shard limits (the servers and their quirks: README.md,
// "Local AWS").
package localaws

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
)

// Kind names a local server implementation.
type Kind string

// The local servers this package can start.
const (
	KinesisMock   Kind = "kinesis-mock"   // Kinesis; resharding, ChildShards, consumers
	Kinesalite    Kind = "kinesalite"     // Kinesis; fast, for volume
	DynamoDBLocal Kind = "dynamodb-local" // DynamoDB; AWS's own engine (needs Java 17)
	Dynalite      Kind = "dynalite"       // DynamoDB; fast, no transactions or TTL
)

// Kinds lists every Kind, Kinesis servers first.
var Kinds = []Kind{KinesisMock, Kinesalite, DynamoDBLocal, Dynalite}

// IsKinesis reports whether k serves the Kinesis API.
func (k Kind) IsKinesis() bool { return k == KinesisMock || k == Kinesalite }

// IsDynamoDB reports whether k serves the DynamoDB API.
func (k Kind) IsDynamoDB() bool { return k == DynamoDBLocal || k == Dynalite }

// EnvDir is the environment variable that, when set, names the tools/localaws
// directory (used when Options.Dir is empty).
const EnvDir = "KINACTOR_LOCALAWS_DIR"

const (
	modulePath    = "github.com/kinactor/kinactor"
	readyTimeout  = 60 * time.Second
	stopGrace     = 5 * time.Second
	logTailBytes  = 4096
	probeTimeout  = 2 * time.Second
	firstProbeGap = 50 * time.Millisecond
	maxProbeGap   = 250 * time.Millisecond
)

// Options configure Start.
type Options struct {
	// Port is the loopback port to serve on; 0 picks a free one.
	Port int
	// Dir is the tools/localaws directory. "" uses $KINACTOR_LOCALAWS_DIR or
	// else walks up from the working directory to the go.mod of module
	// github.com/kinactor/kinactor and uses its tools/localaws.
	Dir string
	// Log receives the server's stdout and stderr; nil discards them.
	// Writes are serialized, so one writer may be shared by several servers.
	Log io.Writer
}

// Server is a running local server. Stop it with Stop.
type Server struct {
	Kind     Kind
	Endpoint string // "http://127.0.0.1:PORT"
	Port     int
	Command  string // the command line, for messages

	cmd    *exec.Cmd
	tail   *tailBuffer
	exited chan struct{} // closed when the process has exited
	// stopCalled: Stop was called (an exit before that is a crash).
	stopCalled atomic.Bool
	waitErr    error // set before exited is closed
	stopOnce   sync.Once
	stopErr    error
}

// Crashed returns an error naming the server, how it exited and the tail
// of its log if its process exited before Stop was called; else nil.
func (s *Server) Crashed() error {
	if s == nil || s.cmd == nil || s.stopCalled.Load() {
		return nil
	}
	select {
	case <-s.exited:
		return fmt.Errorf("localaws: %s (pid %d, %s) exited by itself during the test (%v); the end of its log:\n%s",
			s.Kind, s.cmd.Process.Pid, s.Endpoint, s.waitErr, s.LogTail())
	default:
		return nil
	}
}

// Exited is closed when the server process has exited, whether by Stop or not.
func (s *Server) Exited() <-chan struct{} { return s.exited }

// ExitErr is the process's exit status; valid once Exited is closed.
func (s *Server) ExitErr() error {
	select {
	case <-s.exited:
		return s.waitErr
	default:
		return nil
	}
}

// LogTail returns the last few KB the server wrote to stdout and stderr.
func (s *Server) LogTail() string { return s.tail.String() }

// Start starts a server of the given kind and returns once it answers a real
// API call (ListStreams or ListTables). The ctx bounds only the start-up; the
// server runs until Stop. If the port was chosen automatically and the server
// exits before answering (for instance because the port was taken meanwhile),
// it is retried once on another port.
func Start(ctx context.Context, kind Kind, opts Options) (*Server, error) {
	if !kind.IsKinesis() && !kind.IsDynamoDB() {
		return nil, fmt.Errorf("localaws: unknown server kind %q (want one of %s, %s, %s, %s)",
			kind, KinesisMock, Kinesalite, DynamoDBLocal, Dynalite)
	}
	dir, err := resolveDir(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("localaws: start %s: %w", kind, err)
	}
	attempts := 1
	if opts.Port == 0 {
		attempts = 2
	}
	for attempt := 1; ; attempt++ {
		s, err := startOnce(ctx, kind, dir, opts)
		if err == nil {
			return s, nil
		}
		var ee *earlyExitError
		if attempt >= attempts || !errors.As(err, &ee) || ctx.Err() != nil {
			return nil, err
		}
	}
}

var errNotReady = errors.New("server not ready in time")

// earlyExitError marks a server that exited before answering.
type earlyExitError struct{ msg string }

func (e *earlyExitError) Error() string { return e.msg }

func startOnce(ctx context.Context, kind Kind, dir string, opts Options) (*Server, error) {
	port := opts.Port
	if port == 0 {
		p, err := freePort()
		if err != nil {
			return nil, fmt.Errorf("localaws: start %s: %w", kind, err)
		}
		port = p
	}
	name, args, env, err := command(kind, dir, port)
	if err != nil {
		return nil, fmt.Errorf("localaws: start %s: %w", kind, err)
	}
	path, err := exec.LookPath(name)
	if err != nil {
		need := "Node.js 20"
		if name == "java" {
			need = "Java 17"
		}
		return nil, fmt.Errorf("localaws: start %s: %q not found on PATH (%s needs %s): %w", kind, name, kind, need, err)
	}

	s := &Server{
		Kind:     kind,
		Endpoint: "http://127.0.0.1:" + strconv.Itoa(port),
		Port:     port,
		Command:  strings.Join(append([]string{name}, args...), " "),
		tail:     &tailBuffer{max: logTailBytes},
		exited:   make(chan struct{}),
	}
	var out io.Writer = s.tail
	if opts.Log != nil {
		out = io.MultiWriter(s.tail, &lockedWriter{w: opts.Log})
	}
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	if kind == DynamoDBLocal {
		// It writes dynamodb-local-metadata.json into its working directory
		// even with -inMemory: keep that in the gitignored .cache.
		cmd.Dir = filepath.Join(dir, ".cache", "dynamodb-local")
	}
	cmd.Env = append(inheritedEnv(kind), env...)
	cmd.Stdin = nil
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = sysProcAttr()
	cmd.WaitDelay = time.Second // do not hang on pipes a stray grandchild keeps open
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("localaws: start %s: run %s: %w", kind, s.Command, err)
	}
	s.cmd = cmd
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()

	if err := s.waitReady(ctx); err != nil {
		_ = s.Stop()
		return nil, err
	}
	return s, nil
}

// waitReady polls the server with a real API call until it answers, the
// process exits, ctx ends or readyTimeout passes.
func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeoutCause(ctx, readyTimeout, errNotReady)
	defer cancel()
	probe := s.prober()
	gap := firstProbeGap
	timer := time.NewTimer(0)
	defer timer.Stop()
	var lastErr error
	for {
		select {
		case <-s.exited:
			return &earlyExitError{msg: s.failure(fmt.Sprintf("exited before answering (%v)", s.waitErr))}
		case <-ctx.Done():
			why := "did not answer within " + readyTimeout.String()
			if context.Cause(ctx) != errNotReady {
				why = "start-up interrupted: " + context.Cause(ctx).Error()
			}
			if lastErr != nil {
				why += fmt.Sprintf("; last probe error: %v", lastErr)
			}
			return errors.New(s.failure(why))
		case <-timer.C:
		}
		pctx, pcancel := context.WithTimeout(ctx, probeTimeout)
		lastErr = probe(pctx)
		pcancel()
		if lastErr == nil {
			return nil
		}
		if fatal := s.fatalLogLine(); fatal != "" {
			// DynamoDB Local does not exit when its main thread dies (for
			// instance on "Failed to bind"): its other threads keep the JVM up.
			return &earlyExitError{msg: s.failure("failed before answering (" + fatal + ")")}
		}
		timer.Reset(gap)
		gap = min(gap*2, maxProbeGap)
	}
}

// fatalLogLine returns the log line showing that the server died at start-up
// without exiting, or "".
func (s *Server) fatalLogLine() string {
	if s.Kind != DynamoDBLocal {
		return ""
	}
	t := s.tail.String()
	i := strings.Index(t, `Exception in thread "main"`)
	if i < 0 {
		return ""
	}
	line, _, _ := strings.Cut(t[i:], "\n")
	return line
}

func (s *Server) failure(why string) string {
	msg := fmt.Sprintf("localaws: %s at %s %s\n  command: %s", s.Kind, s.Endpoint, why, s.Command)
	if t := strings.TrimSpace(s.tail.String()); t != "" {
		msg += "\n  log tail:\n" + indent(t, "    ")
	} else {
		msg += "\n  log tail: (empty)"
	}
	return msg
}

func indent(s, prefix string) string {
	var b strings.Builder
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		b.WriteString(prefix)
		b.WriteString(sc.Text())
		b.WriteByte('\n')
	}
	return strings.TrimRight(b.String(), "\n")
}

// prober returns a function making one cheap real API call without retries.
func (s *Server) prober() func(context.Context) error {
	cfg := localConfig()
	cfg.Retryer = func() aws.Retryer { return aws.NopRetryer{} }
	if s.Kind.IsKinesis() {
		c := kinesis.NewFromConfig(cfg, func(o *kinesis.Options) { o.BaseEndpoint = aws.String(s.Endpoint) })
		return func(ctx context.Context) error {
			_, err := c.ListStreams(ctx, &kinesis.ListStreamsInput{Limit: aws.Int32(1)})
			return err
		}
	}
	c := dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) {
		o.BaseEndpoint = aws.String(s.Endpoint)
		o.DisableValidateResponseChecksum = true
	})
	return func(ctx context.Context) error {
		_, err := c.ListTables(ctx, &dynamodb.ListTablesInput{Limit: aws.Int32(1)})
		return err
	}
}

// Stop stops the server: SIGTERM to its process group, up to 5 s to exit, then
// SIGKILL. It is idempotent and safe to call more than once or concurrently.
func (s *Server) Stop() error {
	if s == nil || s.cmd == nil {
		return nil
	}
	s.stopCalled.Store(true)
	s.stopOnce.Do(func() {
		s.stopErr = s.stop()
	})
	return s.stopErr
}

func (s *Server) stop() error {
	select {
	case <-s.exited:
		return nil // already gone (crashed, or never answered)
	default:
	}
	pid := s.cmd.Process.Pid
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	t := time.NewTimer(stopGrace)
	defer t.Stop()
	select {
	case <-s.exited:
		return nil
	case <-t.C:
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	t.Reset(stopGrace)
	select {
	case <-s.exited:
		return nil
	case <-t.C:
		return fmt.Errorf("localaws: %s (pid %d) did not exit after SIGKILL", s.Kind, pid)
	}
}

// command returns the program, arguments and extra environment for kind.
func command(kind Kind, dir string, port int) (string, []string, []string, error) {
	p := strconv.Itoa(port)
	nm := filepath.Join(dir, "node_modules")
	switch kind {
	case KinesisMock:
		pkg := filepath.Join(nm, "kinesis-local")
		main := filepath.Join(pkg, "main.js")
		if err := installed(main); err != nil {
			return "", nil, nil, err
		}
		tlsPort, err := freePort()
		if err != nil {
			return "", nil, nil, err
		}
		env := []string{
			"KINESIS_MOCK_PLAIN_PORT=" + p,
			"KINESIS_MOCK_TLS_PORT=" + strconv.Itoa(tlsPort),
			// The default "server.json" is relative to the working directory.
			"KINESIS_MOCK_CERT_PATH=" + filepath.Join(pkg, "server.json"),
			"CREATE_STREAM_DURATION=0ms",
			"DELETE_STREAM_DURATION=0ms",
			"REGISTER_STREAM_CONSUMER_DURATION=0ms",
			"DEREGISTER_STREAM_CONSUMER_DURATION=0ms",
			"START_STREAM_ENCRYPTION_DURATION=0ms",
			"STOP_STREAM_ENCRYPTION_DURATION=0ms",
			"MERGE_SHARDS_DURATION=0ms",
			"SPLIT_SHARD_DURATION=0ms",
			"UPDATE_SHARD_COUNT_DURATION=0ms",
			"UPDATE_STREAM_MODE_DURATION=0ms",
			"SHARD_LIMIT=1000",
			"ON_DEMAND_STREAM_COUNT_LIMIT=100",
			"AWS_REGION=us-east-1",
			"AWS_ACCOUNT_ID=000000000000",
			"SHOULD_PERSIST_DATA=false",
			"LOAD_DATA_IF_EXISTS=false",
			"LOG_LEVEL=WARN",
			// On SIGTERM it otherwise waits for idle keep-alive connections
			// to close, which clients never do: Stop would take 5 s.
			"CATS_EFFECT_SHUTDOWN_HOOK_TIMEOUT=500ms",
			"ROOT_LOG_LEVEL=ERROR",
		}
		return "node", []string{main}, env, nil
	case Kinesalite:
		cli := filepath.Join(nm, "kinesalite", "cli.js")
		if err := installed(cli); err != nil {
			return "", nil, nil, err
		}
		return "node", []string{cli, "--port", p,
			"--createStreamMs", "0", "--deleteStreamMs", "0", "--updateStreamMs", "0",
			"--shardLimit", "200"}, nil, nil
	case Dynalite:
		cli := filepath.Join(nm, "dynalite", "cli.js")
		if err := installed(cli); err != nil {
			return "", nil, nil, err
		}
		return "node", []string{cli, "--host", "127.0.0.1", "--port", p,
			"--createTableMs", "0", "--deleteTableMs", "0", "--updateTableMs", "0"}, nil, nil
	case DynamoDBLocal:
		ddb := filepath.Join(dir, ".cache", "dynamodb-local")
		jar := filepath.Join(ddb, "DynamoDBLocal.jar")
		if err := installed(jar); err != nil {
			return "", nil, nil, err
		}
		return "java", []string{
			"-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
			"-Djava.library.path=" + filepath.Join(ddb, "DynamoDBLocal_lib"),
			"-jar", jar,
			"-inMemory", "-sharedDb", "-disableTelemetry", "-port", p,
		}, nil, nil
	}
	return "", nil, nil, fmt.Errorf("unknown kind %q", kind)
}

// inheritedEnv is the environment a server inherits: ours, minus variables
// that would change kinesis-mock's behaviour (an empty INITIALIZE_STREAMS is
// an error to it, so unsetting is the only way to say "none").
func inheritedEnv(kind Kind) []string {
	env := os.Environ()
	if kind != KinesisMock {
		return env
	}
	out := env[:0:0]
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if k == "INITIALIZE_STREAMS" || strings.HasPrefix(k, "PERSIST_") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

func installed(path string) error {
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("not installed (%s is missing); run `make deps` (tools/localaws/install.sh)", path)
	}
	return nil
}

// resolveDir finds the tools/localaws directory.
func resolveDir(dir string) (string, error) {
	if dir == "" {
		dir = os.Getenv(EnvDir)
	}
	if dir == "" {
		root, err := ModuleRoot()
		if err != nil {
			return "", fmt.Errorf("cannot find tools/localaws: %w; set Options.Dir or $%s", err, EnvDir)
		}
		dir = filepath.Join(root, "tools", "localaws")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if fi, err := os.Stat(abs); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("local AWS directory %s not found; set Options.Dir or $%s", abs, EnvDir)
	}
	return abs, nil
}

// ModuleRoot walks up from the working directory to the go.mod of the
// kinactor module and returns its directory.
func ModuleRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && modulePathOf(b) == modulePath {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("no go.mod of module %s above %s", modulePath, wd)
		}
		d = parent
	}
}

func modulePathOf(gomod []byte) string {
	for line := range strings.SplitSeq(string(gomod), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`)
		}
	}
	return ""
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, err
	}
	return port, nil
}

// localConfig is the aws.Config for talking to local servers.
func localConfig() aws.Config {
	return aws.Config{
		Region:      "us-east-1",
		Credentials: aws.NewCredentialsCache(staticCreds{}),
	}
}

// staticCreds are the dummy credentials the local servers accept.
type staticCreds struct{}

func (staticCreds) Retrieve(context.Context) (aws.Credentials, error) {
	return aws.Credentials{AccessKeyID: "local", SecretAccessKey: "local", Source: "localaws"}, nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu        sync.Mutex
	max       int
	buf       []byte
	truncated bool
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
		t.truncated = true
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.buf
	if t.truncated { // start at a line start
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}

// logMu serializes writes to Options.Log writers shared between servers.
var logMu sync.Mutex

type lockedWriter struct{ w io.Writer }

func (l *lockedWriter) Write(p []byte) (int, error) {
	logMu.Lock()
	defer logMu.Unlock()
	return l.w.Write(p)
}
