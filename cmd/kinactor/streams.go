package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/kinactor/kinactor"
)

// streamFlags are --stream, --stream-file, --multi-stream and
// --stream-sync-interval.
type streamFlags struct {
	stream       string        // one name, or comma-separated names (many)
	file         string        // a file listing the streams, read again every sync interval
	multi        bool          // multi-stream keys even for one --stream
	syncInterval time.Duration // 0: the default
}

// apply checks the flags and sets them in cfg; an error names the flag and
// its value.
func (s streamFlags) apply(cfg *kinactor.Config) error {
	if s.syncInterval < 0 {
		return fmt.Errorf("node: invalid --stream-sync-interval %s (must not be negative)", s.syncInterval)
	}
	switch {
	case s.stream != "" && s.file != "":
		return fmt.Errorf("node: --stream %q and --stream-file %q: give one of them", s.stream, s.file)
	case s.stream == "" && s.file == "":
		return fmt.Errorf("node: --stream (or --stream-file) is required")
	case s.file != "":
		path := s.file
		if _, err := readStreamFile(path); err != nil {
			return err
		}
		cfg.StreamsFunc = func(context.Context) ([]kinactor.StreamConfig, error) { return readStreamFile(path) }
	default:
		names := strings.Split(s.stream, ",")
		if len(names) == 1 && !s.multi {
			cfg.StreamName = strings.TrimSpace(names[0])
			break
		}
		for _, n := range names {
			n = strings.TrimSpace(n)
			if n == "" {
				return fmt.Errorf("node: invalid --stream %q: an empty name", s.stream)
			}
			cfg.Streams = append(cfg.Streams, kinactor.StreamConfig{Name: n})
		}
	}
	cfg.StreamSyncInterval = s.syncInterval
	return nil
}

// readStreamFile reads a --stream-file: one stream per line, optionally
// followed by its initial position (TRIM_HORIZON, LATEST or AT_TIMESTAMP);
// blank lines and lines starting with # are skipped.
func readStreamFile(path string) ([]kinactor.StreamConfig, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("node: --stream-file: %w", err)
	}
	defer f.Close()
	var out []kinactor.StreamConfig
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Fields(text)
		if len(fields) > 2 {
			return nil, fmt.Errorf("node: --stream-file %s line %d: %q: want NAME [INITIAL_POSITION]", path, line, text)
		}
		c := kinactor.StreamConfig{Name: fields[0]}
		if len(fields) == 2 {
			switch p := kinactor.InitialPosition(fields[1]); p {
			case kinactor.TrimHorizon, kinactor.Latest, kinactor.AtTimestamp:
				c.InitialPosition = p
			default:
				return nil, fmt.Errorf("node: --stream-file %s line %d: invalid initial position %q (want TRIM_HORIZON, LATEST or AT_TIMESTAMP)", path, line, fields[1])
			}
		}
		out = append(out, c)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("node: --stream-file %s: %w", path, err)
	}
	return out, nil
}
