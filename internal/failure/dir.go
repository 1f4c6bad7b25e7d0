package failure

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// Dir is a Destination writing one JSONL file per shard, PATH/SHARD.jsonl
// (a shard id's characters outside a-zA-Z0-9_.- become '_'), one Entry in
// its JSON form per line. Write appends and fsyncs each file it touched
// (and the directory, for a file it created) before it returns; it creates
// the directory if missing. A failed append is cut off again, so a file
// holds whole lines only (but a Write made again after an error may repeat
// lines another file of the same call already holds).
type Dir struct {
	path string
	mu   sync.Mutex // one Write at a time: appends of one file never interleave

	syncFile func(*os.File) error // tests: (*os.File).Sync
}

// NewDir returns the Dir destination of path.
func NewDir(path string) *Dir {
	return &Dir{path: path, syncFile: (*os.File).Sync}
}

// Path is the directory.
func (d *Dir) Path() string { return d.path }

// FileName is the name of the shard's file in the directory.
func FileName(shard string) string {
	b := []byte(shard)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			b[i] = '_'
		}
	}
	if len(b) == 0 || string(b) == "." || string(b) == ".." {
		b = append([]byte("_"), b...)
	}
	return string(b) + ".jsonl"
}

// Write appends entries to their shards' files and fsyncs them.
func (d *Dir) Write(ctx context.Context, entries []Entry) error {
	if len(entries) == 0 {
		return nil
	}
	// Lines per file, files in the order of their first entry.
	var order []string
	lines := map[string]*bytes.Buffer{}
	for _, e := range entries {
		name := FileName(e.Shard)
		buf, ok := lines[name]
		if !ok {
			buf = &bytes.Buffer{}
			lines[name] = buf
			order = append(order, name)
		}
		b, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("failure destination %s: %w", d.path, err)
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := os.MkdirAll(d.path, 0o755); err != nil {
		return fmt.Errorf("failure destination: %w", err)
	}
	created := false
	for _, name := range order {
		if err := ctx.Err(); err != nil {
			return err
		}
		c, err := d.append(filepath.Join(d.path, name), lines[name].Bytes())
		if err != nil {
			return fmt.Errorf("failure destination: %w", err)
		}
		created = created || c
	}
	if created {
		if err := d.syncDir(); err != nil {
			return fmt.Errorf("failure destination: %w", err)
		}
	}
	return nil
}

// append appends b to the file and fsyncs it; on an error it cuts the file
// back to its old size. created says the file is new.
func (d *Dir) append(path string, b []byte) (created bool, err error) {
	_, serr := os.Stat(path)
	created = errors.Is(serr, os.ErrNotExist)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return false, err
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err == nil {
		if _, err = f.Write(b); err == nil {
			err = d.syncFile(f)
		}
		if err != nil {
			_ = f.Truncate(size)
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return created, err
}

func (d *Dir) syncDir() error {
	f, err := os.Open(d.path)
	if err != nil {
		return err
	}
	defer f.Close()
	return d.syncFile(f)
}
