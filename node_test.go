package kinactor

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/kinactor/kinactor/actors"
	"github.com/kinactor/kinactor/messages"
)

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

func TestUnreachableEndpointIsAClearErrorNotAHang(t *testing.T) {
	t.Setenv("AWS_ENDPOINT_URL_DYNAMODB", closedPort(t))
	t.Setenv("AWS_ENDPOINT_URL_KINESIS", closedPort(t))
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_ACCESS_KEY_ID", "local")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "local")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	cfg := validConfig()
	cfg.StartTimeout = 20 * time.Second
	n, err := NewNode(cfg, actors.FuncProcessor(func(context.Context, messages.Batch) error { return nil }))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- n.Start(context.Background()) }()
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("Start hung on an unreachable endpoint")
	}
	if err == nil {
		t.Fatal("Start succeeded against a closed port")
	}
	t.Logf("Start: %v", err)
	if !strings.Contains(err.Error(), "lease table") || !strings.Contains(err.Error(), "billing") {
		t.Errorf("error does not say what was unreachable: %v", err)
	}
	if err := n.Stop(context.Background()); !errors.Is(err, ErrNotStarted) {
		t.Errorf("Stop of a node that never started = %v", err)
	}
}
