package capture

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// FileID identifies one version of a file: a file rewritten under the same
// name (another size or modification time) is a new file.
type FileID struct {
	Path    string `json:"path"` // absolute
	Size    int64  `json:"size"`
	ModTime int64  `json:"mtime_ns"`
}

// StateEntry is one line of the state file.
type StateEntry struct {
	FileID
	Finished time.Time `json:"finished"`
	Packets  int64     `json:"packets"`
	Error    string    `json:"error,omitempty"`
}

// State remembers which files were finished, in an append-only JSON-lines
// file that is fsynced after every entry, so a restart neither repeats a
// finished file nor skips an unfinished one. A torn last line (a crash while
// writing it) is ignored: that file is processed again.
type State struct {
	path string
	f    *os.File
	done map[FileID]bool
}

// OpenState loads (or creates) the state file at path.
func OpenState(path string) (*State, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("state file: %w", err)
	}
	s := &State{path: path, done: map[FileID]bool{}}
	if data, err := os.ReadFile(path); err == nil {
		sc := bufio.NewScanner(strings.NewReader(string(data)))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var e StateEntry
			if json.Unmarshal(sc.Bytes(), &e) == nil && e.Path != "" {
				s.done[e.FileID] = true
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("state file: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("state file: %w", err)
	}
	s.f = f
	return s, nil
}

// Done reports whether the file was finished before.
func (s *State) Done(id FileID) bool { return s.done[id] }

// Finish records a file as finished (successfully or not: a damaged file is
// not retried forever).
func (s *State) Finish(e StateEntry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if _, err := s.f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("state file %s: %w", s.path, err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("state file %s: %w", s.path, err)
	}
	s.done[e.FileID] = true
	return nil
}

// Close closes the state file.
func (s *State) Close() error { return s.f.Close() }

// Identify returns the FileID of path as it is now.
func Identify(path string) (FileID, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return FileID{}, err
	}
	st, err := os.Stat(abs)
	if err != nil {
		return FileID{}, err
	}
	return FileID{Path: abs, Size: st.Size(), ModTime: st.ModTime().UnixNano()}, nil
}

// Hidden reports whether a name marks a file still being written: as in the
// seed system, writers use a name starting with "." and rename when done.
func Hidden(name string) bool { return strings.HasPrefix(filepath.Base(name), ".") }

// ListDir returns the complete (not hidden) regular files under dir,
// recursively, oldest modification first, then by name.
func ListDir(dir string) ([]FileID, error) {
	var out []FileID
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == dir {
				return err
			}
			return nil // a file that vanished mid-walk, or an unreadable subfolder
		}
		if Hidden(d.Name()) && path != dir {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		id, err := Identify(path)
		if err != nil {
			return nil
		}
		out = append(out, id)
		return nil
	})
	sort.Slice(out, func(i, j int) bool {
		if out[i].ModTime != out[j].ModTime {
			return out[i].ModTime < out[j].ModTime
		}
		return out[i].Path < out[j].Path
	})
	return out, err
}
