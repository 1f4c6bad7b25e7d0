package kinactor

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kinactor/kinactor/actors"
)

func validConfig() Config {
	return Config{StreamName: "orders", ApplicationName: "billing"}
}

func TestConfigErrorsNameFieldAndValue(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*Config)
		want   []string // substrings of the error
	}{
		{"missing stream", func(c *Config) { c.StreamName = "" }, []string{"StreamName", `""`}},
		{"missing application", func(c *Config) { c.ApplicationName = "" }, []string{"ApplicationName"}},
		{"negative interval", func(c *Config) { c.IdleTimeBetweenReads = -time.Second }, []string{"IdleTimeBetweenReads", "-1s"}},
		{"negative renew", func(c *Config) { c.LeaseRenewInterval = -5 * time.Millisecond }, []string{"LeaseRenewInterval", "-5ms"}},
		{"unknown initial position", func(c *Config) { c.InitialPosition = "BEGINNING" }, []string{"InitialPosition", `"BEGINNING"`}},
		{"AT_TIMESTAMP without time", func(c *Config) { c.InitialPosition = AtTimestamp }, []string{"InitialTimestamp"}},
		{"max records too high", func(c *Config) { c.MaxRecords = 20000 }, []string{"MaxRecords", "20000"}},
		{"fetch too often", func(c *Config) { c.MinFetchInterval = 50 * time.Millisecond }, []string{"MinFetchInterval", "50ms"}},
		{"expiry not above renew", func(c *Config) { c.LeaseRenewInterval = time.Minute; c.LeaseExpiry = time.Minute }, []string{"LeaseExpiry", "1m0s"}},
		{"expiry below twice renew", func(c *Config) { c.LeaseRenewInterval = 3 * time.Second; c.LeaseExpiry = 5 * time.Second }, []string{"LeaseExpiry", "5s", "twice"}},
		{"stall timeout too short", func(c *Config) { c.StallTimeout = 10 * time.Millisecond }, []string{"StallTimeout", "10ms"}},
		{"negative stall timeout", func(c *Config) { c.StallTimeout = -time.Second }, []string{"StallTimeout", "-1s"}},
		{"process timeout too short", func(c *Config) { c.ProcessTimeout = 500 * time.Millisecond }, []string{"ProcessTimeout", "500ms"}},
		{"bad table name", func(c *Config) { c.TableName = "a b" }, []string{"TableName", `"a b"`}},
		{"unknown policy", func(c *Config) { c.FailurePolicy = "ignore" }, []string{"FailurePolicy", `"ignore"`}},
		{"dead letter without handler", func(c *Config) { c.FailurePolicy = PolicyDeadLetter }, []string{"DeadLetter"}},
		{"stream and streams", func(c *Config) { c.Streams = []StreamConfig{{Name: "b"}} }, []string{"StreamName", "not both"}},
		{"bad stream name", func(c *Config) { c.StreamName = ""; c.Streams = []StreamConfig{{Name: "a/b"}} }, []string{"Streams[0].Name", `"a/b"`}},
		{"stream twice", func(c *Config) { c.StreamName = ""; c.Streams = []StreamConfig{{Name: "a"}, {Name: "a"}} }, []string{"Streams[1].Name", "twice"}},
		{"stream position", func(c *Config) {
			c.StreamName = ""
			c.Streams = []StreamConfig{{Name: "a", InitialPosition: "SOON"}}
		}, []string{"Streams[0].InitialPosition", `"SOON"`}},
		{"streams with fan-out", func(c *Config) { c.StreamName = ""; c.Streams = []StreamConfig{{Name: "a"}}; c.FanOutConsumer = "x" }, []string{"FanOutConsumer", "many streams"}},
		{"stream sync too often", func(c *Config) {
			c.StreamName = ""
			c.Streams = []StreamConfig{{Name: "a"}}
			c.StreamSyncInterval = time.Millisecond
		}, []string{"StreamSyncInterval", "1ms"}},
		{"backoff cap below base", func(c *Config) { c.ErrorBackoffBase = time.Second; c.ErrorBackoffCap = time.Millisecond }, []string{"ErrorBackoffCap", "1ms"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := validConfig()
			c.mutate(&cfg)
			err := cfg.Validate()
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("error %v does not wrap ErrInvalidConfig", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %s", err, w)
				}
			}
			if _, err := NewNode(cfg, actors.FuncProcessor(nil)); err == nil {
				t.Error("NewNode accepted the bad config")
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	if err := validConfig().Validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	c := validConfig().withDefaults()
	if c.TableName != "billing" || c.InitialPosition != TrimHorizon || c.MaxRecords != 10000 ||
		c.LeaseExpiry != 3*c.LeaseRenewInterval || c.WorkerID == "" || c.Registerer == nil ||
		c.StallTimeout != 30*time.Second || c.ProcessTimeout != 5*time.Minute {
		t.Fatalf("defaults not applied: %+v", c)
	}
	if a, b := validConfig().withDefaults().WorkerID, validConfig().withDefaults().WorkerID; a == b {
		t.Fatalf("two default worker ids are equal: %s", a)
	}
}
